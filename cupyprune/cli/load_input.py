"""Reading --input files: .npy (the first graph input) or .npz (inputs by name)."""
import os
import zipfile

import numpy as np

from .. import memory
from ..errors import InputError

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK"                    # a local file header, or the end record of an empty .npz


def _check_file(path):
    if path == "":
        raise InputError("--input: empty path")
    if not os.path.exists(path):
        raise InputError(f"--input {path}: no such file")
    if os.path.isdir(path):
        raise InputError(f"--input {path}: is a directory, not a .npy/.npz file")
    if not os.path.isfile(path):
        raise InputError(f"--input {path}: not a regular file (a pipe or device?)")


def _sniff(path):
    """-> 'npy' or 'npz' from the file's first bytes (its suffix is not trusted)."""
    with open(path, "rb") as f:
        head = f.read(len(NPY_MAGIC))
    if head.startswith(NPY_MAGIC):
        return "npy"
    if head.startswith(ZIP_MAGIC):
        return "npz"
    what = "an empty file" if not head else f"it starts with {head[:4]!r}"
    raise InputError(f"--input {path}: not a readable .npy/.npz file ({what}; save arrays with "
                     f"numpy.save or numpy.savez)")


def _declared_bytes(f, size, where):
    """An open .npy stream of `size` bytes -> the bytes its header declares, or None where
    np.load says better what is wrong (a newer format version, an object array). Declared
    bytes beyond the stream are an InputError (`where` names it) before anything is allocated."""
    version = np.lib.format.read_magic(f)
    read_header = getattr(np.lib.format, f"read_array_header_{version[0]}_{version[1]}", None)
    if read_header is None:
        return None                             # a newer version: np.load says what it thinks
    shape, _, dtype = read_header(f)
    if dtype.hasobject:
        return None                             # refused by np.load (no pickles) with its reason
    data_bytes = size - f.tell()
    need = dtype.itemsize
    for d in shape:
        need *= d
    if need > data_bytes:
        raise InputError(f"{where}: truncated or corrupt: its header declares shape "
                         f"{tuple(shape)} {dtype} ({need} bytes) but the file holds {data_bytes}")
    return need


def _check_sizes(path, kind):
    """Every array the file declares must be in it, and all of them must fit in memory
    together (np.load reads each whole), before anything is allocated."""
    if kind == "npy":
        with open(path, "rb") as f:
            needs = [_declared_bytes(f, os.fstat(f.fileno()).st_size, f"--input {path}")]
    else:
        with zipfile.ZipFile(path) as archive:
            needs = []
            for member in archive.infolist():
                if not member.filename.endswith(".npy"):
                    continue                    # np.load's NpzFile lists only .npy members
                with archive.open(member) as f:
                    needs.append(_declared_bytes(f, member.file_size,
                                                 f"--input {path} ({member.filename!r})"))
    need = sum(n for n in needs if n is not None)
    available = memory.available_host_bytes()
    if available is not None and need > available:     # read whole, it would not fit
        raise InputError(f"--input {path}: its arrays do not fit in memory "
                         f"({memory.size_text(need)}, {memory.size_text(available)} available)")


def _load(path):
    """np.load with no pickles; any failure to parse the file is one InputError."""
    try:
        _check_sizes(path, _sniff(path))
        return np.load(path, allow_pickle=False)
    except InputError:
        raise
    except MemoryError:
        raise InputError(f"--input {path}: its arrays do not fit in memory") from None
    except Exception as e:           # numpy raises ValueError, OSError, EOFError, SyntaxError...
        raise InputError(f"--input {path}: not a readable .npy/.npz file "
                         f"({type(e).__name__}: {e})") from None


def _check_finite(path, name, arr):
    if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))
        where = tuple(int(i) for i in bad[0])
        raise InputError(f"--input {path}: {name!r} holds {len(bad)} NaN/Inf value(s), the first "
                         f"at index {where} ({arr[where]})")


def _members(path, loaded, input_names):
    with loaded:
        unknown = sorted(set(loaded.files) - set(input_names))
        if unknown:
            raise InputError(f"--input {path}: unknown input {unknown[0]!r}; the model's inputs "
                             f"are {', '.join(input_names)}")
        if input_names[0] not in loaded.files:
            raise InputError(f"--input {path}: missing input {input_names[0]!r}")
        try:
            arrays = {k: loaded[k] for k in loaded.files}
        except MemoryError:
            raise InputError(f"--input {path}: its arrays do not fit in memory") from None
        except Exception as e:       # a corrupt or truncated member, an object array
            raise InputError(f"--input {path}: {type(e).__name__}: {e}") from None
    for name, value in arrays.items():
        if not isinstance(value, np.ndarray):   # np.load hands other members back as bytes
            raise InputError(f"--input {path}: member {name!r} is not a .npy array (save "
                             f"arrays with numpy.savez)")
    return arrays


def read_inputs(path, input_names):
    """path -> {input name: NumPy array}; a one-line InputError for anything unreadable."""
    _check_file(path)
    loaded = _load(path)
    if isinstance(loaded, np.ndarray):
        arrays = {input_names[0]: loaded}
    else:
        arrays = _members(path, loaded, input_names)
    for name, arr in arrays.items():
        _check_finite(path, name, arr)
    return arrays
