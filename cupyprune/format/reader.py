"""A loud reader for the model file: every defect is a ModelFileError that names it.

The safetensors header is parsed here (not by the safetensors package) so that a truncated file,
an oversized header, duplicate keys and bad offsets each get their own message (gguf-py style).
"""
import json
import mmap
import os
import struct
from dataclasses import dataclass, field

import numpy as np

from ..errors import ModelFileError
from . import keys
from .compact import expand_tensors
from .masks import unpack_masks


@dataclass
class ModelFile:
    """The file's contents: tensors as read-only NumPy arrays (views of the mapped file) and the
    parsed metadata."""
    path: str
    tensors: dict
    graph: dict
    input_spec: list
    pruning: dict = field(default_factory=dict)
    labels: list = None
    exporter: str = ""
    description: str = ""

    def sample_inputs(self):
        prefix = keys.SAMPLE_INPUT_PREFIX
        return {k[len(prefix):]: v for k, v in self.tensors.items() if k.startswith(prefix)}

    def sample_labels(self):
        return self.tensors.get(keys.SAMPLE_LABELS)


def _no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise ModelFileError(f"duplicate key {k!r} in the safetensors header")
        out[k] = v
    return out


def _read_header(f, path, size):
    if size < 8:
        raise ModelFileError(f"{path}: not a safetensors file (only {size} bytes)")
    (n,) = struct.unpack("<Q", f.read(8))
    if n > keys.MAX_HEADER_BYTES:
        raise ModelFileError(f"{path}: header of {n} bytes is larger than the "
                             f"{keys.MAX_HEADER_BYTES}-byte limit (not a safetensors file?)")
    if 8 + n > size:
        raise ModelFileError(f"{path}: truncated: header says {n} bytes but the file has {size - 8}")
    raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFileError(f"{path}: not a safetensors file (header is not JSON: {e})") from None
    except RecursionError:
        raise ModelFileError(f"{path}: not a safetensors file (header JSON nested too "
                             f"deeply)") from None
    if not isinstance(header, dict):
        raise ModelFileError(f"{path}: not a safetensors file (header is not a JSON object)")
    return header, 8 + n


def _parse_json(meta, key, path, kind):
    try:
        value = json.loads(meta[key])
    except (TypeError, json.JSONDecodeError) as e:
        raise ModelFileError(f"{path}: metadata {key!r} is not valid JSON: {e}") from None
    except RecursionError:
        raise ModelFileError(f"{path}: metadata {key!r} is JSON nested too deeply") from None
    if not isinstance(value, kind):
        raise ModelFileError(f"{path}: metadata {key!r} must be a JSON {kind.__name__}")
    return value


def _check_meta(meta, path):
    if not isinstance(meta, dict):
        raise ModelFileError(f"{path}: no __metadata__: not a cupyprune model file")
    for k in keys.REQUIRED_META:
        if k not in meta:
            raise ModelFileError(f"{path}: metadata key {k!r} is missing: not a cupyprune model file")
    for k, v in meta.items():
        if not isinstance(v, str):
            raise ModelFileError(f"{path}: metadata {k!r} is a JSON {type(v).__name__}; "
                                 f"safetensors metadata values must be strings")
    if meta[keys.META_FORMAT] != keys.FORMAT_NAME:
        raise ModelFileError(f"{path}: format is {meta[keys.META_FORMAT]!r}, expected "
                             f"{keys.FORMAT_NAME!r}")
    if meta[keys.META_VERSION] not in keys.READABLE_VERSIONS:
        raise ModelFileError(f"{path}: format version {meta[keys.META_VERSION]!r} is not "
                             f"supported (this cupyprune reads versions "
                             f"{', '.join(keys.READABLE_VERSIONS)})")


def _is_count(v):
    """A non-negative JSON integer (not a bool, not a float)."""
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _entry_fields(name, entry, path):
    """A tensor's header entry -> (dtype, shape, begin, end), each checked for its JSON type."""
    try:
        dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
    except (KeyError, TypeError, ValueError):
        raise ModelFileError(f"{path}: tensor {name!r} has a malformed header entry") from None
    if not isinstance(dtype, str):
        raise ModelFileError(f"{path}: tensor {name!r} has dtype {dtype!r}: not a dtype name")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise ModelFileError(f"{path}: tensor {name!r} has shape {shape!r}: not a list of "
                             f"non-negative integers")
    if not (_is_count(begin) and _is_count(end)):
        raise ModelFileError(f"{path}: tensor {name!r} has data_offsets {[begin, end]!r}: not two "
                             f"non-negative integers")
    return dtype, shape, begin, end


def _read_tensor(buf, name, entry, data_start, data_len, path):
    dtype, shape, begin, end = _entry_fields(name, entry, path)
    if dtype not in keys.DTYPES:
        raise ModelFileError(f"{path}: tensor {name!r} has unsupported dtype {dtype!r}")
    np_dtype = np.dtype(keys.DTYPES[dtype])
    count = 1
    for d in shape:                  # Python ints: a huge shape cannot overflow to a small count
        count *= d
    if not (0 <= begin <= end <= data_len) or end - begin != count * np_dtype.itemsize:
        if end > data_len:
            raise ModelFileError(f"{path}: truncated: tensor {name!r} ends at byte {end} of a "
                                 f"{data_len}-byte data section")
        raise ModelFileError(f"{path}: tensor {name!r} has offsets [{begin}, {end}) that do not "
                             f"match its shape {shape} and dtype {dtype}")
    arr = np.frombuffer(buf, dtype=np_dtype, count=count, offset=data_start + begin)
    try:
        return arr.reshape(shape)            # a view of the mapped file: nothing is copied
    except ValueError:                       # more dimensions, or more elements, than NumPy's
        raise ModelFileError(f"{path}: tensor {name!r} has shape {shape}, which NumPy cannot "
                             f"hold") from None


def _check_layout(header, data_len, path):
    """Tensors' byte ranges (already checked to lie in the data section) may not share bytes,
    and together cover the data section exactly, as the safetensors format requires: bytes
    between tensors or after the last one mean a corrupt file (or two files joined)."""
    spans = sorted((entry["data_offsets"][0], entry["data_offsets"][1], name)
                   for name, entry in header.items())
    for (_, end, first), (begin, _, second) in zip(spans, spans[1:]):
        if begin < end:
            raise ModelFileError(f"{path}: tensors {first!r} and {second!r} have overlapping "
                                 f"data offsets")
    covered = 0
    for begin, end, name in spans:
        if begin > covered:
            raise ModelFileError(f"{path}: bytes {covered}-{begin} of the data section, before "
                                 f"tensor {name!r}, belong to no tensor (a corrupt file)")
        covered = end
    if covered < data_len:
        raise ModelFileError(f"{path}: {data_len - covered} bytes after the last tensor's data "
                             f"belong to no tensor (a corrupt file, or two files joined)")


def _check_pruning_entries(pruning, path):
    for param, decl in pruning.items():
        if not isinstance(decl, dict):
            raise ModelFileError(f"{path}: metadata 'pruning' entry for {param!r} is "
                                 f"{json.dumps(decl)}: expected a JSON object with a 'pattern'")


def _check_regular_file(path):
    """A missing path, a directory, or a pipe/device (which would block or never end) is refused."""
    if path == "":
        raise ModelFileError("model path is empty")
    if not os.path.exists(path):
        raise ModelFileError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ModelFileError(f"{path}: is a directory, not a model file")
    if not os.path.isfile(path):
        raise ModelFileError(f"{path}: not a regular file (a pipe or device?), not a model file")


def read_model_file(path):
    """Read and check a model file's container and metadata. Graph checks live in graph.py."""
    path = os.fspath(path)
    _check_regular_file(path)
    try:
        return _read_checked(path)
    except OSError as e:
        raise ModelFileError(f"{path}: cannot read: {e.strerror or e}") from None


def _read_checked(path):
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        header, data_start = _read_header(f, path, size)
        meta = header.pop("__metadata__", None)
        _check_meta(meta, path)
        tensors = {}
        if header:
            # Tensors are read-only views of one mapping of the file (as safetensors' own
            # loaders map it): a page is read when a tensor is first used, and the mapping
            # stays open while any tensor refers to it. Read-only, because a private writable
            # mapping is charged in full against the kernel's overcommit limit: a file larger
            # than memory could not even be mapped to be measured (memory.check_fits).
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            for name, entry in header.items():
                tensors[name] = _read_tensor(buf, name, entry, data_start,
                                             size - data_start, path)
        _check_layout(header, size - data_start, path)
    tensors = unpack_masks(tensors, meta, path)
    if meta[keys.META_VERSION] in keys.COMPACT_VERSIONS:
        tensors = expand_tensors(tensors, path)
    elif any(k.endswith(keys.GROUPS_SUFFIX) for k in tensors):
        raise ModelFileError(f"{path}: compacted weights ({keys.GROUPS_SUFFIX}) need format "
                             f"version {keys.COMPACT_VERSION}, the file says "
                             f"{meta[keys.META_VERSION]}")
    labels = _parse_json(meta, keys.META_LABELS, path, list) if keys.META_LABELS in meta else None
    if labels is not None and not all(isinstance(label, str) for label in labels):
        raise ModelFileError(f"{path}: metadata 'labels' must be a JSON list of strings (class "
                             f"names)")
    pruning = _parse_json(meta, keys.META_PRUNING, path, dict) if keys.META_PRUNING in meta else {}
    _check_pruning_entries(pruning, path)
    return ModelFile(
        path=path, tensors=tensors,
        graph=_parse_json(meta, keys.META_GRAPH, path, dict),
        input_spec=_parse_json(meta, keys.META_INPUT_SPEC, path, list),
        pruning=pruning, labels=labels,
        exporter=meta.get(keys.META_EXPORTER, ""), description=meta.get(keys.META_DESCRIPTION, ""))
