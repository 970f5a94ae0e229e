"""A small on-disk cache of kernel choices timed at load (ops/conv_implicit.py), so the second
load of a model on the same GPU skips the timing.

One JSON file, key -> {"choice": name, "ms": {candidate: median ms}}, in $CUPYPRUNE_CACHE_DIR
or ~/.cache/cupyprune. Written atomically (atomic.py); a missing, unreadable or corrupt file
is an empty cache, and a cache that cannot be written is skipped: timing again costs a few
milliseconds per layer, never a wrong result.
"""
import json
import os

from ..atomic import atomic_path

CACHE_ENV = "CUPYPRUNE_CACHE_DIR"
FILE_NAME = "conv-tuning.json"
_memory = {}                      # path -> its entries, read once per process


def cache_path():
    root = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache",
                                                      "cupyprune")
    return os.path.join(root, FILE_NAME)


def key(device, precision, shape, kept, epilogue, kernels):
    """One string per (GPU name, precision, layer and input shape, kept rows, fused epilogue,
    kernel generation): a choice timed against older kernels is timed again."""
    return "|".join([device, precision, "x".join(str(int(s)) for s in shape), f"kept{kept}",
                     "".join("1" if e else "0" for e in epilogue), kernels])


def _entries(path):
    if path not in _memory:
        try:
            with open(path) as f:
                data = json.load(f)
            _memory[path] = data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            _memory[path] = {}
    return _memory[path]


def lookup(k):
    """The cached choice for key k, or None."""
    entry = _entries(cache_path()).get(k)
    return entry.get("choice") if isinstance(entry, dict) else None


def store(k, choice, timings):
    path = cache_path()
    entries = _entries(path)
    entries[k] = {"choice": choice, "ms": {n: round(float(t), 5) for n, t in timings.items()}}
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with atomic_path(path) as tmp:
            with open(tmp, "w") as f:
                json.dump(entries, f, indent=1, sort_keys=True)
    except OSError:
        pass
