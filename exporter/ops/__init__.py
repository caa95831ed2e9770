"""Fixed-shape tensor operations shared by the token-reduction methods."""

from .attention import run_block, size_bias
from .clustering import TokenClustering
from .distance import squared_distance
from .grid import cell_of, own_cell, pool_matrix, window_mask
from .reconstruction import TokenReconstruction

__all__ = [
    "TokenClustering",
    "TokenReconstruction",
    "squared_distance",
    "pool_matrix",
    "cell_of",
    "own_cell",
    "window_mask",
    "run_block",
    "size_bias",
]
