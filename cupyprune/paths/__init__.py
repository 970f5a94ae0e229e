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


# A group-wise linear layer that must gather its kept input features pays only while the GEMM
# work it saves outweighs the gather: (R - T) * K > c * T, with R inputs, T kept, K outputs.
# c per precision was fitted to the H100 layer sweeps (docs/BENCHMARKS.md, "auto rule", which
# lists every sweep point where the rule and the measurement disagree): BERT FFN1 (768 -> 3072)
# breaks even near 45% kept in fp16 and near 85% in fp32; BERT FFN2 (3072 -> 768) and the
# 4096x4096 layer at batch 64 hardly ever pay in fp16. Convolutions always pay (im2col shrinks
# with T), and so does a linear whose input arrives pre-compacted (passes.compact_producers).
GATHER_COST = {"fp32": 500, "tf32": 2500, "fp16": 4500}


def gather_pays(R, T, K, precision):
    return (R - T) * K > GATHER_COST[precision] * T


def build_path(name, f, fmask, ctx):
    return PATH_CLASSES[name](f, fmask, ctx)
