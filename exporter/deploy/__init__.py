"""Deployment of a build folder: a Triton Inference Server model repository (`triton.py`) and
the Python model it serves on any CPU host (`triton_model.py`)."""

from .triton import Repository, write_repository

__all__ = ["Repository", "write_repository"]
