"""Dense path: the masked weight as one dense matrix; one GEMM (cuBLAS / BLAS)."""
from .base import GemmPath


class DensePath(GemmPath):
    name = "dense"

    def __init__(self, f, fmask, ctx):
        # f: (R, K) host float64; the mask is applied once here
        w = f if fmask is None else f * fmask
        self.matmul = ctx.matmul
        self.w = ctx.device(w)                       # (R, K)

    def __call__(self, x):
        return self.matmul(x, self.w)                # (M, R) @ (R, K) -> (M, K)

    @property
    def nbytes(self):
        return self.w.nbytes
