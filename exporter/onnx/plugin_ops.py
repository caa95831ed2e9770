"""CPU implementations of the TensorRT plugin ops, so that graphs holding plugin nodes run here.

A plugin node follows the TensorRT ONNX parser's conventions: op_type is the plugin name, the
attributes `plugin_version` and `plugin_namespace` are strings, numeric attributes are scalar
INT/FLOAT. The nodes live in the domain `trt.plugins` (the parser looks plugins up by op_type
alone; ONNX Runtime needs a custom domain to accept an unknown op).

Two ways to run such a graph:
- ONNX Runtime with onnxruntime-extensions' Python custom ops (fast; optional dependency);
- the ONNX reference evaluator with a custom OpRun (always available, slower).
`run_plugin_graph` picks the first available unless told which.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

from ..ops.clustering import WEIGHT_FLOOR
from ..ops.density_peaks import NOT_A_CANDIDATE

PLUGIN_DOMAIN = "trt.plugins"
TOPK_RECONSTRUCT = "TopKMaskedReconstruct"
DPC_SELECT = "DPCSelect"
PLUGIN_VERSION = "1"
NORMS = ("sum", "l2")  # attribute `norm` is the index into this tuple
BACKENDS = ("ort", "reference")
# Distance given to clusters outside the mask, so that top-k never prefers them (the kernel's too).
MASKED_DISTANCE = 3.0e38


def topk_masked_reconstruct(
    z: np.ndarray,
    centers: np.ndarray,
    values: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    k: int,
    tau: float,
    norm: int = 0,
) -> np.ndarray:
    """The TopKMaskedReconstruct op: z [B,N,C], centers [B,M,C], values [B,M,D], mask [N,M] -> [B,N,D].

    The equations of `TokenReconstruction.weights` (written with distances, as the kernel
    computes them) followed by its forward, in float32.
    """
    z, centers, values = (np.asarray(a, dtype=np.float32) for a in (z, centers, values))
    if norm not in (0, 1):
        raise ValueError(f"norm must be 0 (sum) or 1 (l2), not {norm!r}")
    M = centers.shape[1]
    if not 1 <= k <= M:
        raise ValueError(f"k = {k} is out of range: allowed 1..{M} (the number of clusters)")
    aa = (z * z).sum(-1, keepdims=True)
    bb = (centers * centers).sum(-1)[:, None, :]
    d = np.maximum(aa + bb - 2.0 * (z @ centers.transpose(0, 2, 1)), 0.0)
    if mask is not None:
        d = np.where(np.asarray(mask, dtype=bool), d, np.float32(MASKED_DISTANCE))
    # A stable sort keeps the lower cluster index first on ties, as the kernel does.
    index = np.argsort(d, axis=2, kind="stable")[..., :k]
    near = np.take_along_axis(d, index, axis=2)
    w = np.exp((near[..., :1] - near) / np.float32(tau))
    scale = w.sum(-1, keepdims=True) if norm == 0 else np.sqrt((w * w).sum(-1, keepdims=True))
    w = w / np.maximum(scale, np.float32(WEIGHT_FLOOR))
    picked = values[np.arange(values.shape[0])[:, None, None], index]  # [B, N, k, D]
    return np.einsum("bnk,bnkd->bnd", w, picked).astype(np.float32)


def dpc_select(
    z: np.ndarray, neighbours: np.ndarray, weights: np.ndarray, *, clusters: int, knn: int
) -> tuple[np.ndarray, np.ndarray]:
    """The DPCSelect op: z [B,N,C], neighbours [N,lambda], weights [lambda] (s / sqrt(C)) ->
    (centers [B,M] int32 ascending token indices, assignment [B,N] int32 cluster slots).

    Same steps and tie rules as `DensityPeaksSelection.forward`, in float32.
    """
    z = np.asarray(z, dtype=np.float32)
    nb = np.asarray(neighbours, dtype=np.int64)
    weights = np.asarray(weights, dtype=np.float32)
    B, N, C = z.shape
    lam = nb.shape[1]
    if nb.shape[0] != N or weights.shape != (lam,):
        raise ValueError(f"neighbours {nb.shape} and weights {weights.shape} do not fit N = {N}")
    if not 1 <= clusters <= N - 1:
        raise ValueError(f"clusters = {clusters} is out of range: allowed 1..{N - 1} (N - 1)")
    if not 1 <= knn <= lam:
        raise ValueError(f"knn = {knn} is out of range: allowed 1..{lam} (lambda)")
    w = np.sqrt(((z[:, nb] - z[:, :, None]) ** 2).sum(-1)) * weights  # [B, N, lambda]
    near = np.sort(w, axis=-1)[..., :knn]
    neg_log_rho = (near * near).mean(-1, dtype=np.float32)  # squared, as the released DPC-kNN
    theirs, own = neg_log_rho[:, nb], neg_log_rho[..., None]
    earlier = nb < np.arange(N)[:, None]  # equal densities: the lower token index is denser
    denser = (theirs < own) | ((theirs == own) & earlier)
    nearest_denser = np.where(denser, w, np.float32(NOT_A_CANDIDATE)).min(-1)
    # no denser neighbour: delta is the image's largest weighted distance
    delta = np.where(denser.any(-1), nearest_denser, w.max(axis=(1, 2))[:, None])
    with np.errstate(divide="ignore"):  # log(0) = -inf for duplicate tokens, as in the graph
        score = (np.log(delta) - neg_log_rho).astype(np.float32)
    # Rank by (score descending, index ascending): a stable sort of -score keeps lower indices first.
    order = np.argsort(-score, axis=1, kind="stable")
    centers = np.sort(order[:, :clusters], axis=1)
    is_center = np.zeros((B, N), dtype=bool)
    np.put_along_axis(is_center, centers, True, axis=1)
    slot = np.cumsum(is_center, axis=1) - 1
    neighbour_is_center = is_center[:, nb]
    # argmin returns the first minimum: the spatially nearer neighbour on equal values.
    best = np.where(neighbour_is_center, w, np.float32(NOT_A_CANDIDATE)).argmin(-1)
    via_neighbour = np.take_along_axis(slot, nb[np.arange(N), best], axis=1)
    feats = np.take_along_axis(z, centers[..., None], axis=1)  # [B, M, C]
    d = (
        (z * z).sum(-1, keepdims=True)
        + (feats * feats).sum(-1)[:, None]
        - 2.0 * (z @ feats.transpose(0, 2, 1))
    )
    via_any = np.maximum(d, 0.0).argmin(-1)
    assignment = np.where(
        is_center, slot, np.where(neighbour_is_center.any(-1), via_neighbour, via_any)
    )
    return centers.astype(np.int32), assignment.astype(np.int32)


def _attributes(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


# ---- ONNX reference evaluator ----------------------------------------------------------------------


def _reference_ops() -> list:
    from onnx.reference.op_run import (
        OpRun,
    )  # deferred: the reference evaluator is the slow fallback

    class TopKMaskedReconstruct(OpRun):  # the evaluator matches the class name to op_type
        op_domain = PLUGIN_DOMAIN

        def _run(
            self,
            z,
            centers,
            values,
            mask=None,
            k=None,
            tau=None,
            norm=None,
            has_mask=None,
            plugin_version=None,
            plugin_namespace=None,
        ):
            return (
                topk_masked_reconstruct(
                    z,
                    centers,
                    values,
                    mask if has_mask else None,
                    k=int(k),
                    tau=float(tau),
                    norm=int(norm),
                ),
            )

    class DPCSelect(OpRun):
        op_domain = PLUGIN_DOMAIN

        def _run(
            self,
            z,
            neighbours,
            weights,
            clusters=None,
            knn=None,
            plugin_version=None,
            plugin_namespace=None,
        ):
            return dpc_select(z, neighbours, weights, clusters=int(clusters), knn=int(knn))

    return [TopKMaskedReconstruct, DPCSelect]


# ---- ONNX Runtime with onnxruntime-extensions --------------------------------------------------------

_ORT_OPS_REGISTERED = False
_NO_MASK = "trt_plugins_no_mask"


def ort_extensions_available() -> bool:
    try:
        import onnxruntime_extensions  # noqa: F401 - deferred: slow to import; may be absent
    except ImportError:
        return False
    return True


def _register_ort_ops() -> None:
    """Register the Python custom op once per process (the registry is global)."""
    global _ORT_OPS_REGISTERED
    if _ORT_OPS_REGISTERED:
        return
    from onnxruntime_extensions import (
        PyCustomOpDef,
        onnx_op,
    )  # deferred: slow to import; only the ort backend

    dt = PyCustomOpDef

    # A PyOp has a fixed number of inputs: the mask is always passed (see `_with_mask_inputs`).
    @onnx_op(
        op_type=f"{PLUGIN_DOMAIN}::{TOPK_RECONSTRUCT}",
        inputs=[dt.dt_float, dt.dt_float, dt.dt_float, dt.dt_bool],
        outputs=[dt.dt_float],
        attrs={
            "k": dt.dt_int64,
            "tau": dt.dt_float,
            "norm": dt.dt_int64,
            "has_mask": dt.dt_int64,
            "plugin_version": dt.dt_string,
            "plugin_namespace": dt.dt_string,
        },
    )
    def _topk_masked_reconstruct(z, centers, values, mask, **attrs):
        return topk_masked_reconstruct(
            z,
            centers,
            values,
            mask if attrs["has_mask"] else None,
            k=int(attrs["k"]),
            tau=float(attrs["tau"]),
            norm=int(attrs["norm"]),
        )

    @onnx_op(
        op_type=f"{PLUGIN_DOMAIN}::{DPC_SELECT}",
        inputs=[dt.dt_float, dt.dt_int32, dt.dt_float],
        outputs=[dt.dt_int32, dt.dt_int32],
        attrs={
            "clusters": dt.dt_int64,
            "knn": dt.dt_int64,
            "plugin_version": dt.dt_string,
            "plugin_namespace": dt.dt_string,
        },
    )
    def _dpc_select(z, neighbours, weights, **attrs):
        return dpc_select(
            z, neighbours, weights, clusters=int(attrs["clusters"]), knn=int(attrs["knn"])
        )

    _ORT_OPS_REGISTERED = True


def _with_mask_inputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """Copy of `model` where unmasked TopKMaskedReconstruct nodes get a placeholder [1, 1] mask.

    Only for the ONNX Runtime path; the plugin graph itself keeps 3 inputs (has_mask = 0).
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    nodes = [
        n
        for n in model.graph.node
        if n.op_type == TOPK_RECONSTRUCT and n.domain == PLUGIN_DOMAIN and len(n.input) == 3
    ]
    if nodes:
        model.graph.initializer.append(
            onnx.numpy_helper.from_array(np.ones((1, 1), dtype=bool), _NO_MASK)
        )
        for n in nodes:
            n.input.append(_NO_MASK)
    return model


def ort_session(model: onnx.ModelProto, options=None):
    """An ONNX Runtime CPU session that runs the plugin nodes with their Python implementation
    (`options`: SessionOptions to start from, e.g. threads or graph optimisation level)."""
    from onnxruntime_extensions import (
        get_library_path,
    )  # deferred: slow to import; only the ort backend

    _register_ort_ops()
    options = options or ort.SessionOptions()
    options.register_custom_ops_library(get_library_path())
    return ort.InferenceSession(
        _with_mask_inputs(model).SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def run_plugin_graph(model: onnx.ModelProto, feeds: dict, backend: str | None = None) -> list:
    """Run a graph with plugin nodes on the CPU; returns the outputs in graph order.

    Args:
        backend: "ort" (ONNX Runtime + onnxruntime-extensions) or "reference" (onnx's reference
            evaluator). Defaults to "ort" when onnxruntime-extensions is installed, else "reference".
    """
    if backend is None:
        backend = "ort" if ort_extensions_available() else "reference"
    if backend == "ort":
        if not ort_extensions_available():
            raise RuntimeError(
                "backend 'ort' needs onnxruntime-extensions: pip install onnxruntime-extensions"
            )
        return ort_session(model).run(None, feeds)
    if backend == "reference":
        from onnx.reference import ReferenceEvaluator  # deferred: loaded only for this fallback

        return ReferenceEvaluator(model, new_ops=_reference_ops()).run(None, feeds)
    raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
