"""Dense path: the masked weight as one dense matrix; one GEMM (cuBLAS / BLAS)."""
from .base import MatrixPath


class DensePath(MatrixPath):
    name = "dense"

    def __init__(self, f, fmask, ctx):
        # f: (R, K) host float64; the mask is applied once here
        w = f if fmask is None else f * fmask
        self.matmul = ctx.matmul
        self.w = ctx.device(w)                       # (R, K)

    @classmethod
    def from_rows(cls, w_rows, rows, R, xp, matmul):
        """The masked dense weight (R, K) rebuilt from a group path's kept rows (T, K): the
        other rows are pruned, hence zero."""
        path = cls.__new__(cls)
        path.matmul = matmul
        path.w = xp.zeros((R, w_rows.shape[1]), dtype=w_rows.dtype)
        path.w[xp.asarray(rows)] = w_rows                               # (T, K) into (R, K)
        return path
