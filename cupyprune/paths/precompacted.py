"""A group-wise path whose input already holds only its kept features, so it gathers nothing.

The load-time pass passes.compact_producers gives a layer this path when the layer before it
computes only the features this one keeps (paper Algorithm 2 without its gather step)."""
from .base import GemmPath


class Precompacted(GemmPath):
    """Wraps a GroupPath: multiplies (M, T) inputs by its (T, K) weight, never gathers."""
    name = "group"

    def __init__(self, group):
        self.group = group
        self.rows_host = group.rows_host

    @property
    def w(self):
        return self.group.w                          # (T, K)

    @w.setter
    def w(self, value):
        self.group.w = value

    def __call__(self, x):
        return self.group(x)                         # (M, T) @ (T, K) -> (M, K)

    @property
    def nbytes(self):
        return self.group.w.nbytes
