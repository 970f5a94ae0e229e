"""Whether a traced scaled_dot_product_attention runs as the GPU's self-attention (gpu/attention.py)
and how, from shapes, strides and dtypes alone: no value is read, so the decision needs no host
sync and holds for every replay of a captured CUDA graph.

A traced encoder computes q, k, v as linear -> view(N, T, H, dh) -> transpose(1, 2): (N, H, T, dh)
views of a C-contiguous (N, T, D) array, the layout self_attention reads its heads from in place.
Other layouts (nn.MultiheadAttention's, whose heads come (T, N, H, dh)-ordered) take one copy
each into that layout, still cheaper than the generic path's scores in memory. The mask must be
absent, always true, or a boolean padding mask over keys: constant along the heads and the
queries, by its shape or strides (size 1 or stride 0) or by what the graph proves of it
(attention_masks.py). Additive float masks go the generic way: a bias other than 0 and the
dtype's lowest cannot be told apart without reading it.

Legend: N batch, H heads, T tokens (queries and keys), dh head size, D = H * dh, S keys.
"""
import math
from dataclasses import dataclass

import numpy as np

from ..attention_masks import KEY_PADDING, NONE

FAST_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.uint16))  # uint16: bf16
SCALE_TOLERANCE = 1e-6        # relative: a traced head_dim ** -0.5 vs 1 / sqrt(dh)


@dataclass(frozen=True)
class FastPlan:
    """How the fast path runs: heads; for q, k, v whether the (N, T, D) form takes a copy; the
    mask passed on (NONE or KEY_PADDING)."""
    heads: int
    copies: tuple
    mask: str


def heads_merged(shape, strides, itemsize):
    """Whether an (N, H, T, dh) array views a C-contiguous (N, T, H * dh) one (strides in bytes;
    those of size-1 dims never matter)."""
    N, H, T, dh = shape
    want = (T * H * dh * itemsize, dh * itemsize, H * dh * itemsize, itemsize)
    return all(s == w for n, s, w in zip(shape, strides, want) if n > 1)


def pads_keys_only(shape, strides):
    """Whether a mask, broadcast to 4-D, is constant along dims 1 and 2 by its layout: size 1
    there, or stride 0 (an expand)."""
    lead = 4 - len(shape)
    if lead < 0:
        return False
    shape, strides = (1,) * lead + tuple(shape), (0,) * lead + tuple(strides)
    return all(shape[d] == 1 or strides[d] == 0 for d in (1, 2))


def _mask_plan(mask, mask_kind, N, H, T):
    """-> (NONE or KEY_PADDING, None) or (None, why not)."""
    if mask is None:
        return NONE, None
    if mask.dtype != np.bool_:
        return None, "additive mask"
    if mask_kind == NONE:
        return NONE, None
    if mask.ndim > 4:
        return None, "mask of more than 4 dims"
    shape = (1,) * (4 - mask.ndim) + tuple(mask.shape)
    if any(s not in (1, want) for s, want in zip(shape, (N, H, T, T))):
        return None, "mask does not broadcast"
    if mask_kind == KEY_PADDING or pads_keys_only(mask.shape, mask.strides):
        return KEY_PADDING, None
    return None, "mask varies over queries or heads"


def plan(q, k, v, mask=None, scale=None, is_causal=False, mask_kind=None):
    """q, k, v, mask: anything with shape, strides and dtype (CuPy or NumPy arrays).
    -> a FastPlan, or a string saying why the generic path runs."""
    if is_causal:
        return "causal"
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        return "not (N, H, T, dh)"
    if not tuple(q.shape) == tuple(k.shape) == tuple(v.shape):
        return "q, k, v shapes differ"
    N, H, T, dh = q.shape
    if min(q.shape) == 0:
        return "empty"
    if not q.dtype == k.dtype == v.dtype or q.dtype not in FAST_DTYPES:
        return f"dtype {q.dtype}"
    if scale is not None and abs(scale * math.sqrt(dh) - 1) > SCALE_TOLERANCE:
        return "scale is not 1/sqrt(dh)"
    kind, why = _mask_plan(mask, mask_kind, N, H, T)
    if kind is None:
        return why
    copies = tuple(not heads_merged(a.shape, a.strides, a.dtype.itemsize) for a in (q, k, v))
    return FastPlan(H, copies, kind)
