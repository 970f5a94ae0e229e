"""CSR path: the paper's sparse baseline. F^T is held as CSR (K, R): cuSPARSE SpMM through
cupyx.scipy.sparse on the GPU, scipy.sparse on the CPU. Y^T = F^T X^T."""
import numpy as np

from .base import GemmPath


def _sparse_module(xp):
    if xp is np:
        import scipy.sparse as sp
    else:
        import cupyx.scipy.sparse as sp
    return sp


class CsrPath(GemmPath):
    name = "csr"
    capturable = False  # cupyx's cuSPARSE wrappers allocate and synchronise per call

    def __init__(self, f, fmask, ctx):
        w = f if fmask is None else f * fmask
        host = np.ascontiguousarray(w.T).astype(ctx.dtype)            # (K, R)
        self.wt = _sparse_module(ctx.xp).csr_matrix(ctx.xp.asarray(host))
        self.wt.eliminate_zeros()
        self.xp = ctx.xp

    def __call__(self, x):
        yt = self.wt @ self.xp.ascontiguousarray(x.T)   # (K, R) @ (R, M) -> (K, M)
        return self.xp.ascontiguousarray(yt.T)           # (M, K)

    @property
    def nbytes(self):
        return self.wt.data.nbytes + self.wt.indices.nbytes + self.wt.indptr.nbytes
