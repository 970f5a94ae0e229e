"""CSR path: the paper's sparse baseline. F^T is held as CSR (K, R): cuSPARSE SpMM through
cupyx.scipy.sparse on the GPU, scipy.sparse on the CPU. Y^T = F^T X^T."""
import numpy as np

from .base import GemmPath


class CsrPath(GemmPath):
    name = "csr"
    capturable = False  # cupyx's cuSPARSE wrappers allocate and synchronise per call

    def __init__(self, f, fmask, ctx):
        import scipy.sparse
        w = f if fmask is None else f * fmask
        host = scipy.sparse.csr_matrix(np.ascontiguousarray(w.T).astype(ctx.dtype))  # (K, R)
        host.eliminate_zeros()
        if ctx.xp is np:
            self.wt = host
        else:
            # built on the host: CuPy 14's dense -> CSR conversion on the device mishandles
            # C-ordered input (cupy PR #9321), so the matrix is converted by SciPy and copied
            import cupyx.scipy.sparse
            self.wt = cupyx.scipy.sparse.csr_matrix(host)
        self.xp = ctx.xp

    def __call__(self, x):
        yt = self.wt @ self.xp.ascontiguousarray(x.T)   # (K, R) @ (R, M) -> (K, M)
        return self.xp.ascontiguousarray(yt.T)           # (M, K)

    @property
    def nbytes(self):
        return self.wt.data.nbytes + self.wt.indices.nbytes + self.wt.indptr.nbytes
