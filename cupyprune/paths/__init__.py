"""Execution paths for prunable layers, and the rule that picks one per layer.

Choosing a path (here) is separate from running it (the path classes)."""
from ..errors import CupyPruneError
from .block import BlockPath
from .csr import CsrPath
from .dense import DensePath
from .group import GroupPath

PATH_CLASSES = {"dense": DensePath, "group": GroupPath, "csr": CsrPath, "block": BlockPath}
PATH_CHOICES = ("auto",) + tuple(PATH_CLASSES)

# which patterns each non-dense path applies to
APPLIES = {
    "group": {"group"},
    "csr": {"element", "vector", "block", "group"},
    "block": {"block"},
}


def choose_path(requested, pattern):
    """Path name for one layer.

    requested: 'auto' or a path name. A forced path runs on every layer it applies to; the
    others run dense. 'auto': group-wise layers take the compacted GEMM; every other pattern
    runs dense, because cuSPARSE CSR measured 10-25x slower than dense GEMM at 25-75% kept on
    the H100 (shared notes gpu-facts.md), as the paper found on its GPU.
    """
    if requested not in PATH_CHOICES:
        raise CupyPruneError(f"unknown path {requested!r}: choose one of {', '.join(PATH_CHOICES)}")
    if requested == "auto":
        return "group" if pattern == "group" else "dense"
    if requested == "dense" or pattern not in APPLIES.get(requested, ()):
        return "dense"
    return requested


def build_path(name, f, fmask, ctx):
    return PATH_CLASSES[name](f, fmask, ctx)
