"""Group-wise path (paper section 4, Algorithms 1-2, Fig. 4): pruned rows of F are dropped once
at load, so the GEMM is dense and smaller. The caller supplies only the kept columns of X."""
import numpy as np

from .base import MatrixPath


# The compacted GEMM's reduction size T is rounded up to a multiple of this: cuBLAS's tensor-core
# kernels want 16-byte-aligned rows, and on the H100 a T of, say, 461 ran the fp16 GEMM 3-4x
# slower than T = 384 or 464 (docs/DESIGN_NOTES.md, "Kept rows aligned to a multiple of 8
# (padding with pruned, zero-weight rows)").
ALIGN_ROWS = 8


def kept_rows(fmask, align=ALIGN_ROWS):
    """bool F-mask (R, K), whole rows kept or pruned -> sorted int32 row indices (T,): the kept
    rows, plus as many pruned rows as make T a multiple of `align` (where R allows). A pruned
    row's masked weights are zero, so the padding changes no output, exactly as in the masked
    dense product, and every index still names a real input column. A layer with every row
    pruned keeps `align` zero rows, so that T > 0 and its im2col and GEMM take their usual path
    (the output is the bias alone, as in the masked dense model)."""
    kept = fmask.any(axis=1)
    short = (-int(kept.sum()) % align) or (0 if kept.any() else align)
    if short:
        pruned = np.flatnonzero(~kept)[:short]
        kept = kept.copy()
        kept[pruned] = True
    return np.flatnonzero(kept).astype(np.int32)


class GroupPath(MatrixPath):
    name = "group"

    def __init__(self, f, fmask, ctx):
        rows = kept_rows(fmask)
        self.rows_host = rows
        self.input_rows = ctx.xp.asarray(rows)
        self.matmul = ctx.matmul
        self.w = ctx.device(f[rows] * fmask[rows])   # (T, K); padding rows are zero

    @property
    def nbytes(self):
        return self.w.nbytes + self.input_rows.nbytes
