"""Masks stored in as few bytes as they need (format version 3).

A version-1 mask is one byte (or four) per weight, which makes an element-, vector- or
block-pruned file about a quarter larger than the dense one. Version 3 stores each mask in the
smallest of these forms, named in the `masks` metadata entry of its parameter:

  {"mask": "zeros"}
      no mask tensor: the mask is `param != 0` (the weight's zeros say exactly what is pruned).
  {"mask": "bits", "shape": [...]}
      `<param>.maskbits` (U8, ceil(n / 8)): the mask's n elements in C order, 8 to a byte, the
      first element in the lowest bit (np.packbits with bitorder="little"); `shape` is the
      parameter's shape. `<param>` holds either every value (at that shape) or, where every
      pruned value is zero, only the kept values, in C order (1-D, one per set bit).

Either way no value of the weight and no bit of its mask is lost: reading gives back the full
weight and its `.mask`, and everything after the reader sees a version-1 file.
"""
import json

import numpy as np

from ..errors import ModelFileError
from .keys import MASK_SUFFIX, MASKBITS_SUFFIX, META_MASKS, META_VERSION, PACKED_VERSION

FROM_ZEROS = "zeros"
FROM_BITS = "bits"


def _bits_nbytes(n):
    return (n + 7) // 8


def _stored_form(w, m):
    """A weight and its bool mask (same shape) -> the smallest lossless form:
    (form, stored values or the full weight)."""
    pruned_are_zero = not w[~m].any()
    if not pruned_are_zero:                        # the pruned values must be kept as they are
        return FROM_BITS, w
    kept_bytes = int(m.sum()) * w.itemsize + _bits_nbytes(m.size)
    if np.array_equal(m, w != 0) and w.nbytes <= kept_bytes:
        return FROM_ZEROS, w
    return FROM_BITS, w[m]                                              # (kept,)


def pack_masks(tensors):
    """{key: array} with `.mask` entries -> ({key: array} with every 0/1 mask of a same-shape
    parameter stored packed or dropped, {param: masks metadata entry}). A mask that is not 0/1
    or does not match its parameter's shape is left as it is, for the reader to refuse."""
    out, entries = dict(tensors), {}
    for mask_key in [k for k in tensors if k.endswith(MASK_SUFFIX)]:
        key = mask_key[:-len(MASK_SUFFIX)]
        mask, w = np.asarray(tensors[mask_key]), tensors.get(key)
        if w is None or np.shape(w) != mask.shape or not np.isin(mask, (0, 1)).all():
            continue
        w, m = np.asarray(w), mask != 0
        form, values = _stored_form(w, m)
        del out[mask_key]
        out[key] = values
        if form == FROM_BITS:
            out[key + MASKBITS_SUFFIX] = np.packbits(m.ravel(), bitorder="little")
            entries[key] = {"mask": FROM_BITS, "shape": list(w.shape)}
        else:
            entries[key] = {"mask": FROM_ZEROS}
    return out, entries


def _entries(meta, path):
    try:
        entries = json.loads(meta.get(META_MASKS, "{}"))
    except (TypeError, json.JSONDecodeError) as e:
        raise ModelFileError(f"{path}: metadata {META_MASKS!r} is not valid JSON: {e}") from None
    if not isinstance(entries, dict) or not all(isinstance(v, dict) for v in entries.values()):
        raise ModelFileError(f"{path}: metadata {META_MASKS!r} must be a JSON object of "
                             f"objects, one per parameter")
    return entries


def _unpack_bits(key, entry, tensors, path):
    """-> (full weight, bool mask) of a `bits` entry, each stored tensor checked."""
    shape = entry.get("shape")
    if not (isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool)
                                            and d >= 0 for d in shape)):
        raise ModelFileError(f"{path}: metadata {META_MASKS!r} entry of {key!r} has shape "
                             f"{shape!r}: expected a list of non-negative integers")
    bits = tensors.get(key + MASKBITS_SUFFIX)
    n = int(np.prod(shape, dtype=np.int64))
    if bits is None or bits.dtype != np.uint8 or bits.shape != (_bits_nbytes(n),):
        got = "missing" if bits is None else f"{bits.dtype} {tuple(bits.shape)}"
        raise ModelFileError(f"{path}: {key + MASKBITS_SUFFIX!r} is {got}: a mask of shape "
                             f"{tuple(shape)} packs into uint8 ({_bits_nbytes(n)},)")
    m = np.unpackbits(bits, count=n, bitorder="little").astype(bool).reshape(shape)
    values = tensors[key]
    if tuple(values.shape) == tuple(shape):
        return values, m
    kept = int(m.sum())
    if values.shape != (kept,):
        raise ModelFileError(f"{path}: {key!r} has shape {tuple(values.shape)}: expected its "
                             f"full shape {tuple(shape)} or its {kept} kept values ({kept},)")
    full = np.zeros(shape, dtype=values.dtype)
    full[m] = values
    return full, m


def unpack_masks(tensors, meta, path):
    """Inverse of pack_masks for a file's tensors and metadata: {key: array} with full weights
    and `.mask` entries only. Packed masks in a file older than version 3 are refused."""
    packed = [k for k in tensors if k.endswith(MASKBITS_SUFFIX)]
    if meta.get(META_VERSION) != PACKED_VERSION:
        if packed or META_MASKS in meta:
            raise ModelFileError(f"{path}: packed masks ({MASKBITS_SUFFIX}, metadata "
                                 f"{META_MASKS!r}) need format version {PACKED_VERSION}, the "
                                 f"file says {meta.get(META_VERSION)}")
        return tensors
    out = dict(tensors)
    entries = _entries(meta, path)
    for key, entry in entries.items():
        if key not in tensors:
            raise ModelFileError(f"{path}: metadata {META_MASKS!r} names {key!r}, which is not "
                                 f"in the file")
        if key + MASK_SUFFIX in tensors:
            raise ModelFileError(f"{path}: {key!r} has both a {META_MASKS!r} entry and a "
                                 f"{key + MASK_SUFFIX!r}")
        form = entry.get("mask")
        if form == FROM_ZEROS:
            out[key + MASK_SUFFIX] = tensors[key] != 0
        elif form == FROM_BITS:
            out[key], out[key + MASK_SUFFIX] = _unpack_bits(key, entry, tensors, path)
            del out[key + MASKBITS_SUFFIX]
        else:
            raise ModelFileError(f"{path}: metadata {META_MASKS!r} entry of {key!r} has mask "
                                 f"{form!r}: expected {FROM_ZEROS!r} or {FROM_BITS!r}")
    for k in packed:
        if k[:-len(MASKBITS_SUFFIX)] not in entries:
            raise ModelFileError(f"{path}: {k!r} has no {META_MASKS!r} entry for its parameter")
    return out
