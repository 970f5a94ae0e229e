"""Group-wise path (paper section 4, Algorithms 1-2, Fig. 4): pruned rows of F are dropped once
at load, so the GEMM is dense and smaller. The caller supplies only the kept columns of X."""
import numpy as np

from .base import GemmPath


def kept_rows(fmask):
    """bool F-mask (R, K), whole rows kept or pruned -> sorted int32 indices of kept rows (T,)."""
    return np.flatnonzero(fmask.any(axis=1)).astype(np.int32)


class GroupPath(GemmPath):
    name = "group"

    def __init__(self, f, fmask, ctx):
        rows = kept_rows(fmask)
        self.rows_host = rows
        self.input_rows = ctx.xp.asarray(rows)
        self.matmul = ctx.matmul
        self.w = ctx.device(f[rows] * fmask[rows])   # (T, K)

    def __call__(self, x):
        return self.matmul(x, self.w)                # (M, T) @ (T, K) -> (M, K)

    @property
    def nbytes(self):
        return self.w.nbytes + self.input_rows.nbytes
