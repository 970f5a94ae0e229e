"""The row plan of the implicit-GEMM conv (gpu/implicit_conv.py): the order in which its reduction
loop walks a layer's kept rows, and what each row reads.

Legend: C input channels, kh kw kernel, T kept rows (taps, t = (i*kw + j)*C + c, sorted),
TP plan rows (a multiple of BK = 32), K outputs. A pack is 8 plan rows.

A k-step of 32 rows is one of two kinds (uniform, so the kernel never diverges on it):
  vector  four packs, each the 8 channels 8q..8q+7 of one tap: an aligned 16-byte load per
          pixel. A pack holds at least `vec_min` kept rows; its other channels get zero weight
          rows (padding costs MMA work but saves seven 2-byte loads per pixel).
  scalar  32 kept rows in tap order, each loaded on its own (rows past T read nothing).
Vector packs come first, best filled first; those that do not fill a whole k-step (the last
0-3) go back to the scalar rows. A dense layer with C a multiple of 8 is all vector k-steps.
"""
from dataclasses import dataclass

import numpy as np

BK = 32
PACK = 8
PACKS_PER_STEP = BK // PACK
VEC_MIN = 6                      # kept rows of 8 that make a pack worth a vector load
_MISS = -(1 << 20)               # dy of a padding row: no pixel is in range


@dataclass
class ImplicitPlan:
    """source (TP,): the kept-row index (into the layer's (T, K) weight) of each plan row, -1 for
    a zero row; dy, dx, c (TP,): what each plan row reads; vsteps: leading vector k-steps."""
    source: np.ndarray
    dy: np.ndarray
    dx: np.ndarray
    c: np.ndarray
    vsteps: int
    C: int

    @property
    def rows(self):
        return int(self.source.size)

    @property
    def ksteps(self):
        return self.rows // BK

    def offsets(self, W):
        """(TP,) int64: (dy * W + dx) * C + c, the row's offset from its pixel's first value
        (0 for padding rows, which never load)."""
        off = (self.dy * W + self.dx) * self.C + self.c
        off[self.dy == _MISS] = 0
        return off

    def descriptors(self, W):
        """(TP, 4) int32 (dy, dx, offset, 0): the kernel's row table for input width W."""
        table = np.zeros((self.rows, 4), dtype=np.int32)
        table[:, 0], table[:, 1], table[:, 2] = self.dy, self.dx, self.offsets(W)
        return table

    def weight(self, w_kept):
        """w_kept (T', K) host or device, rows in the layer's kept order -> (TP, K) in plan order,
        zero rows where source is -1."""
        xp = np if isinstance(w_kept, np.ndarray) else _module_of(w_kept)
        padded = xp.concatenate([w_kept, xp.zeros((1, w_kept.shape[1]), w_kept.dtype)])
        index = np.where(self.source < 0, w_kept.shape[0], self.source)
        return padded[xp.asarray(index)]                            # (TP, K)


def _module_of(a):
    import cupy
    return cupy.get_array_module(a)


def build_plan(taps, geometry, C, vec_min=VEC_MIN):
    """taps (T,) sorted kept row indices of F (R = kh*kw*C rows); geometry as Conv2d's
    (kh, kw, stride, padding, dilation) -> ImplicitPlan. vec_min 1 turns every 8-channel run
    with a kept row into a vector pack (the dense plan of a pruned layer)."""
    kh, kw, _, (ph, pw), (dh, dw) = geometry
    taps = np.asarray(taps, dtype=np.int64)
    position = {int(t): i for i, t in enumerate(taps)}              # tap -> kept-row index
    vector = []                                                     # (kept count, ij, q)
    if C % PACK == 0:
        ij, q = taps // C, (taps % C) // PACK
        chunks, counts = np.unique(ij * (C // PACK) + q, return_counts=True)
        for chunk, n in zip(chunks, counts):
            if n >= vec_min:
                vector.append((int(n), int(chunk) // (C // PACK), int(chunk) % (C // PACK)))
        vector.sort(key=lambda v: (-v[0], v[1], v[2]))               # best filled first
    whole = len(vector) - len(vector) % PACKS_PER_STEP
    vector = sorted(vector[:whole], key=lambda v: (v[1], v[2]))     # tap order within the run
    in_vector = set()
    src, tap_of = [], []
    for _, ij, q in vector:
        for c in range(q * PACK, (q + 1) * PACK):
            t = ij * C + c
            src.append(position.get(t, -1))
            tap_of.append(t)
            if t in position:
                in_vector.add(t)
    scalar = [t for t in taps.tolist() if t not in in_vector]
    src += [position[t] for t in scalar]
    tap_of += scalar
    short = -len(scalar) % BK or (BK if not src else 0)           # at least one k-step
    src += [-1] * short
    tap_of = np.asarray(tap_of, dtype=np.int64)
    i, j, c = tap_of // C // kw, tap_of // C % kw, tap_of % C
    dy = np.concatenate([i * dh - ph, np.full(short, _MISS)])
    dx = np.concatenate([j * dw - pw, np.zeros(short, np.int64)])
    c = np.concatenate([c, np.zeros(short, np.int64)])
    return ImplicitPlan(np.asarray(src, dtype=np.int64), dy, dx, c,
                        len(vector) // PACKS_PER_STEP, C)


def implicit_conv_numpy(x, plan, w_plan, out_hw, stride):
    """The kernel's arithmetic on the host, through the plan's own descriptors: x (N, H, W, C),
    w_plan (TP, K) -> (M, K) float64. Each plan row gathers x at (oh*sh + dy, ow*sw + dx, c),
    zero outside the image, exactly the address math of the kernel (for tests)."""
    N, H, W, C = x.shape
    OH, OW = out_hw
    sh, sw = stride
    ih = (np.arange(OH) * sh)[:, None] + plan.dy[None, :]            # (OH, TP)
    iw = (np.arange(OW) * sw)[:, None] + plan.dx[None, :]            # (OW, TP)
    ok = ((ih >= 0) & (ih < H))[:, None, :] & ((iw >= 0) & (iw < W))[None, :, :]  # (OH, OW, TP)
    pixel = ((np.arange(OH) * sh)[:, None] * W + (np.arange(OW) * sw)[None, :]) * C  # (OH, OW)
    flat = x.reshape(N, -1).astype(np.float64)                       # (N, H*W*C)
    address = np.where(ok, pixel[:, :, None] + plan.offsets(W)[None, None, :], 0)
    cols = flat[:, address] * ok                                     # (N, OH, OW, TP)
    return cols.reshape(N * OH * OW, -1) @ w_plan.astype(np.float64)  # (M, TP) @ (TP, K)
