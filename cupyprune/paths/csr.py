"""CSR path: the paper's sparse baseline. F^T is held as CSR (K, R): cuSPARSE SpMM through
cupyx.scipy.sparse on the GPU, scipy.sparse on the CPU (SciPy builds the matrix on both; it is
the optional `csr` extra). Y^T = F^T X^T.

cupyx.scipy.sparse has no bfloat16: a bf16 run holds the weights' bf16 values in float32 and
multiplies in float32, its input widened and its output rounded back to bf16."""
import numpy as np

from .. import bf16
from ..errors import CupyPruneError
from ..precision import is_bf16
from .base import GemmPath

CSR_HINT = "the csr path needs SciPy: pip install 'cupyprune[csr]'"


def _scipy_sparse():
    """scipy.sparse, imported when a layer first takes this path (SciPy is an optional extra:
    the other paths never need it)."""
    try:
        import scipy.sparse
    except ImportError:
        raise CupyPruneError(CSR_HINT) from None
    return scipy.sparse


class CsrPath(GemmPath):
    name = "csr"
    capturable = False  # cupyx's cuSPARSE wrappers allocate and synchronise per call

    def __init__(self, f, fmask, ctx):
        sparse = _scipy_sparse()
        w = f if fmask is None else f * fmask
        self.bf16 = is_bf16(ctx.dtype)
        wt = np.ascontiguousarray(w.T)                                                # (K, R)
        wt = bf16.from_bits_host(bf16.to_bits_host(wt)) if self.bf16 else wt.astype(ctx.dtype)
        host = sparse.csr_matrix(wt)
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
        if self.bf16:
            return bf16.to_bits(self._product(bf16.from_bits(x)))
        return self._product(x)

    def _product(self, x):
        yt = self.wt @ self.xp.ascontiguousarray(x.T)   # (K, R) @ (R, M) -> (K, M)
        return self.xp.ascontiguousarray(yt.T)           # (M, K)

    @property
    def nbytes(self):
        return self.wt.data.nbytes + self.wt.indices.nbytes + self.wt.indptr.nbytes
