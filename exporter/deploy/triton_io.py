"""Tensors between a Triton python-backend model and numpy 2 (copied next to each model.py).

The stub's own numpy bridge (`Tensor.as_numpy()`, `pb_utils.Tensor(name, array)`) is compiled
against numpy 1's array layout: under numpy 2 it reads inputs as zeros and sends empty outputs
(measured with the server of nvidia-pytriton 0.7.0). Both directions therefore go through
DLPack. Inputs: the Triton tensor's `to_dlpack()` capsule, read by `np.from_dlpack`. Outputs:
`Tensor.from_dlpack` takes ownership of numpy's DLPack tensor, but renames the capsule to
"used_dlpack" where the protocol says "used_dltensor"; numpy's capsule destructor then fails to
recognise it and prints a ValueError traceback for every tensor. So the ownership is handed over
by the protocol's own steps instead: take the pointer out of numpy's capsule, mark that capsule
used (its destructor then does nothing), and give the stub a new capsule of the same pointer
without a destructor. The stub calls the tensor's deleter when it is done, which releases the
array.
"""

from __future__ import annotations

import ctypes

import numpy as np
import triton_python_backend_utils as pb_utils

_api = ctypes.pythonapi
_api.PyCapsule_GetPointer.restype = ctypes.c_void_p
_api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
_api.PyCapsule_SetName.restype = ctypes.c_int
_api.PyCapsule_SetName.argtypes = [ctypes.py_object, ctypes.c_char_p]
_api.PyCapsule_New.restype = ctypes.py_object
_api.PyCapsule_New.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
_DLTENSOR = b"dltensor"
_USED = b"used_dltensor"  # static: the capsule keeps a pointer to its name


class _Input:
    def __init__(self, tensor):
        self.tensor = tensor

    def __dlpack__(self, **kwargs):
        return self.tensor.to_dlpack()

    def __dlpack_device__(self):
        return (1, 0)  # kDLCPU, device 0


def to_numpy(tensor) -> np.ndarray:
    """A request's input tensor as a numpy array of its own (a copy)."""
    return np.from_dlpack(_Input(tensor)).copy()


def to_tensor(name: str, array: np.ndarray):
    """An output tensor holding `array` (made contiguous)."""
    capsule = np.ascontiguousarray(array).__dlpack__()
    pointer = _api.PyCapsule_GetPointer(capsule, _DLTENSOR)
    _api.PyCapsule_SetName(capsule, _USED)  # numpy's destructor now leaves the tensor alone
    return pb_utils.Tensor.from_dlpack(name, _api.PyCapsule_New(pointer, _DLTENSOR, None))


def error_response(text: str):
    """A response that reports `text` to the client as the request's error."""
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(text))


def input_of(request, name: str) -> np.ndarray:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        raise ValueError(f"no input named {name!r}")
    return to_numpy(tensor)
