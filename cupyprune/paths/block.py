"""Block-sparse path (paper section 3.2, block-wise pattern): CuPy 14 has no BSR, so our own.

Legend: M rows of activations, R rows of F, K outputs; F is tiled in r x c blocks (r along R,
c along K); J = K/c column blocks, B = the most kept blocks of any column block, L = B*r.
At load, each column block's kept blocks are stacked into a dense (L, c) slab, padded with zero
blocks to B, with the rows of X they read. A call gathers those rows of X for a chunk of column
blocks and runs one batched GEMM: (ch, M, L) @ (ch, L, c) -> (ch, M, c). No scatter-add: each
column block owns its outputs. The chunk bounds the gathered copy of X in memory.

Cost: the gather copies X about K*keep/c times, so this path is far slower than dense GEMM, as
block-wise was in the paper (Table 1). H100, fp32, the 512->512 3x3 conv at 28x28, batch 64
(M=50176, R=4608): dense 4.7 ms; keep 50%: block 4x4 149 ms, 16x16 38 ms, 32x32 19 ms, CSR on
the 4x4 mask 99 ms. A fused BSR kernel (X tiles reused across column blocks) is the next step.
"""
import numpy as np

from ..patterns import block_shape
from .base import GemmPath

GATHER_BUDGET = 1 << 26     # elements of gathered X per chunk (256 MB in fp32)


def pack_blocks(w, fmask, r, c):
    """Host F (R, K) and mask -> slabs (J, L, c) and the X rows each reads (J, L) int32."""
    R, K = w.shape
    kept = fmask.reshape(R // r, r, K // c, c)[:, 0, :, 0]           # (R/r, J) kept blocks
    B = int(kept.sum(axis=0).max()) if kept.size else 0
    J = K // c
    slabs = np.zeros((J, B, r, c), dtype=w.dtype)
    rows = np.zeros((J, B, r), dtype=np.int32)                       # padding reads row 0 * 0
    blocks = w.reshape(R // r, r, J, c)                              # (R/r, r, J, c)
    for j in range(J):
        ib = np.flatnonzero(kept[:, j])                              # kept row blocks of j
        slabs[j, :ib.size] = blocks[ib, :, j, :]                     # (n_j, r, c)
        rows[j, :ib.size] = ib[:, None] * r + np.arange(r)           # (n_j, r)
    return slabs.reshape(J, B * r, c), rows.reshape(J, B * r)


class BlockPath(GemmPath):
    name = "block"

    def __init__(self, f, fmask, ctx):
        # f: (R, K) host float64; fmask: bool (R, K), block-conforming (checked at load)
        fmask = np.ones(f.shape, dtype=bool) if fmask is None else fmask
        self.r, self.c = block_shape(fmask)
        slabs, rows = pack_blocks(f * fmask, fmask, self.r, self.c)
        self.K = f.shape[1]
        self.slabs = ctx.device(slabs)                                # (J, L, c)
        self.rows = ctx.xp.asarray(rows)                              # (J, L)
        self.batched = ctx.matmul.batched                             # (B, M, L) @ (B, L, c)
        self.xp = ctx.xp

    def __call__(self, x):
        xp = self.xp
        M = x.shape[0]
        J, L, c = self.slabs.shape
        y = xp.empty((M, self.K), dtype=xp.result_type(x.dtype, self.slabs.dtype))
        if L == 0:                                                    # every block pruned
            y[...] = 0
            return y
        ch = max(1, min(J, GATHER_BUDGET // max(1, M * L)))          # column blocks per chunk
        for j0 in range(0, J, ch):
            j1 = min(J, j0 + ch)
            xg = xp.take(x, self.rows[j0:j1], axis=1)                 # (M, ch, L)
            xg = xp.ascontiguousarray(xg.transpose(1, 0, 2))          # (ch, M, L)
            yc = self.batched(xg, self.slabs[j0:j1])                  # (ch, M, L) @ (ch, L, c)
            y[:, j0 * c:j1 * c] = yc.transpose(1, 0, 2).reshape(M, -1)  # (ch, M, c) -> (M, ch*c)
        return y

    @property
    def nbytes(self):
        return self.slabs.nbytes + self.rows.nbytes
