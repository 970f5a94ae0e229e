"""Group-wise weights stored compacted (format version 2): only the kept groups' values.

A group-wise mask keeps the same groups for every output: (c_in, kh, kw) taps of a conv weight
(K, C, kh, kw), input features of a linear weight (K, C). Such a weight is stored as

  `<param>`         (K, T)            the kept groups' values, in C-order of the groups
  `<param>.groups`  weight.shape[1:]  bool, T of them true

instead of the full weight and its `.mask`, so a file pruned to half its groups holds about
half the bytes of the dense one. Reading expands both back to the full weight (pruned values
zero) and its mask: everything after the reader sees a version-1 file.
"""
import numpy as np

from ..errors import ModelFileError
from .keys import GROUPS_SUFFIX, MASK_SUFFIX


def group_rows(mask):
    """A weight's mask -> the kept groups (bool, mask.shape[1:]) where every output keeps the
    same groups, some pruned and some kept; else None (not group-wise, or nothing to gain)."""
    m = np.asarray(mask) != 0
    if m.ndim < 2 or m.shape[0] == 0:
        return None
    rows = m.reshape(m.shape[0], -1)                       # (K, groups)
    if not (rows == rows[:1]).all() or rows[0].all() or not rows[0].any():
        return None
    return m[0].copy()


def compact_tensors(tensors):
    """{key: array} with `.mask` entries -> the same with every group-wise masked weight stored
    compacted (its `.mask` replaced by `.groups`). Other entries are left as they are."""
    out = dict(tensors)
    for mask_key in [k for k in tensors if k.endswith(MASK_SUFFIX)]:
        key = mask_key[:-len(MASK_SUFFIX)]
        groups = group_rows(tensors[mask_key])
        if groups is None or key not in tensors:
            continue
        w = np.asarray(tensors[key])
        out[key] = np.ascontiguousarray(w.reshape(w.shape[0], -1)[:, groups.ravel()])  # (K, T)
        out[key + GROUPS_SUFFIX] = groups
        del out[mask_key]
    return out


def _expand_one(key, compact, groups, path):
    if groups.dtype != np.bool_:
        raise ModelFileError(f"{path}: {key + GROUPS_SUFFIX!r} has dtype {groups.dtype}: "
                             f"group flags are BOOL")
    kept = int(groups.sum())
    if compact.ndim != 2 or compact.shape[1] != kept or kept == 0:
        raise ModelFileError(f"{path}: compacted {key!r} has shape {tuple(compact.shape)}, but "
                             f"{key + GROUPS_SUFFIX!r} keeps {kept} groups: expected (K, {kept})"
                             + (" with at least one kept" if kept == 0 else ""))
    full = np.zeros((compact.shape[0],) + groups.shape, dtype=compact.dtype)
    full.reshape(compact.shape[0], -1)[:, groups.ravel()] = compact
    return full, np.broadcast_to(groups, full.shape)


def expand_tensors(tensors, path):
    """Inverse of compact_tensors, checking each compacted entry: {key: array} -> {key: array}
    with full weights and `.mask` entries only."""
    out = dict(tensors)
    for groups_key in [k for k in tensors if k.endswith(GROUPS_SUFFIX)]:
        key = groups_key[:-len(GROUPS_SUFFIX)]
        if key not in tensors:
            raise ModelFileError(f"{path}: {groups_key!r} has no compacted parameter {key!r}")
        if key + MASK_SUFFIX in tensors:
            raise ModelFileError(f"{path}: {key!r} has both {groups_key!r} and a "
                                 f"{key + MASK_SUFFIX!r}: a compacted weight has no mask")
        out[key], out[key + MASK_SUFFIX] = _expand_one(key, tensors[key], tensors[groups_key],
                                                       path)
        del out[groups_key]
    return out
