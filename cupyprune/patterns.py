"""Pruning patterns of a layer's im2col weight matrix F (paper section 3.2, Fig. 3).

F has one row per reduction index (conv: tap (i, j, c) in channels-last order; linear: input
feature) and one column per output. Legend: R rows of F, K outputs (columns).
  element  any mask
  vector   N:M: along each column, every run of m consecutive rows keeps exactly n
  block    F cut into r x c blocks, each block kept or pruned whole
  group    whole rows kept or pruned (every output skips the same taps)
"""
import math

import numpy as np

from .errors import ModelFileError
from .format.keys import PATTERNS

# the N:M vector sizes `infer_pattern` tries
VECTOR_SIZES = (4, 8, 16)


def conv_weight_to_f(w):
    """(K, C, kh, kw) -> F (kh*kw*C, K): row (i*kw + j)*C + c holds w[:, c, i, j]."""
    K = w.shape[0]
    return w.transpose(2, 3, 1, 0).reshape(-1, K)


def weight_to_f(w):
    """A conv or linear weight in PyTorch layout -> F (R, K)."""
    if w.ndim == 4:
        return conv_weight_to_f(w)
    if w.ndim == 2:
        return w.T
    raise ValueError(f"not a conv or linear weight: shape {w.shape}")


def is_group(fm):
    rows = fm.any(axis=1)
    return bool(np.array_equal(fm, np.broadcast_to(rows[:, None], fm.shape)))


def is_block(fm, r, c):
    R, K = fm.shape
    if R % r or K % c:
        return False
    blocks = fm.reshape(R // r, r, K // c, c).sum(axis=(1, 3))   # (R/r, K/c) kept per block
    return bool(np.all((blocks == 0) | (blocks == r * c)))


def block_shape(fm):
    """The largest (r, c) that tiles the bool F-mask (R, K) into all-kept/all-pruned blocks.

    r is valid iff every row where the mask changes from the row above sits at a multiple of r,
    so the largest r is gcd(R, those rows); c likewise over columns. (r, 1) and (1, c) valid
    together make (r, c) valid: within a block, every column and every row is constant."""
    R, K = fm.shape
    row_breaks = np.flatnonzero((fm[1:] != fm[:-1]).any(axis=1)) + 1
    col_breaks = np.flatnonzero((fm[:, 1:] != fm[:, :-1]).any(axis=0)) + 1
    return math.gcd(R, *row_breaks.tolist()), math.gcd(K, *col_breaks.tolist())


def is_vector(fm, n, m):
    R, K = fm.shape
    if R % m or not 0 < n <= m:
        return False
    kept = fm.reshape(R // m, m, K).sum(axis=1)                     # (R/m, K)
    return bool(np.all(kept == n))


def mask_to_bool(mask, name):
    """A 0/1 mask of any dtype -> bool; anything else is an error naming the tensor."""
    if mask.dtype == bool:
        return mask
    if not np.all((mask == 0) | (mask == 1)):
        bad = mask[(mask != 0) & (mask != 1)].ravel()[0].item()
        raise ModelFileError(f"mask of {name!r} holds {bad!r}: a mask must be 0 or 1")
    return mask != 0


def infer_pattern(fm):
    """The most structured pattern a bool F-mask satisfies: (pattern, parameters)."""
    if fm.all():
        return "dense", {}
    if is_group(fm):
        return "group", {}
    r, c = block_shape(fm)
    if r * c > 1:
        return "block", {"block": [r, c]}
    for m in VECTOR_SIZES:
        R, K = fm.shape
        if R % m == 0:
            n = int(fm[:m, 0].sum())
            if n and is_vector(fm, n, m):
                return "vector", {"n": n, "m": m}
    return "element", {}


def check_declared(fm, decl, name):
    """Raise ModelFileError when the mask does not conform to the declared pattern."""
    pattern = decl.get("pattern")
    if pattern not in PATTERNS:
        raise ModelFileError(f"layer {name!r}: unknown pruning pattern {pattern!r} "
                             f"(one of {', '.join(PATTERNS)})")
    ok = True
    if pattern == "dense":
        ok = bool(fm.all())
    elif pattern == "group":
        ok = is_group(fm)
    elif pattern == "block":
        shape = decl.get("block")
        if not (isinstance(shape, list) and len(shape) == 2 and all(_positive_int(v) for v in shape)):
            raise ModelFileError(f"layer {name!r}: block pattern needs 'block': [r, c] of two "
                                 f"positive integers, got {shape!r}")
        r, c = shape
        if fm.shape[0] % r or fm.shape[1] % c:
            raise ModelFileError(f"layer {name!r}: block {r}x{c} does not divide F of shape "
                                 f"{fm.shape}")
        ok = is_block(fm, r, c)
    elif pattern == "vector":
        n, m = decl.get("n"), decl.get("m")
        if not (_positive_int(n) and _positive_int(m)) or n > m or fm.shape[0] % m:
            raise ModelFileError(f"layer {name!r}: vector pattern {n}:{m} does not fit F of "
                                 f"shape {fm.shape}")
        ok = is_vector(fm, n, m)
    if not ok:
        raise ModelFileError(f"layer {name!r}: mask does not conform to its declared "
                             f"{pattern!r} pattern {describe(decl)}")


def _positive_int(v):
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def describe(decl):
    p = decl.get("pattern", "dense")
    if p == "vector":
        return f"{decl['n']}:{decl['m']}"
    if p == "block":
        return "{}x{}".format(*decl["block"])
    return ""
