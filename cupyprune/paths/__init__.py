"""Execution paths for prunable layers, and the rule that picks one per layer.

Choosing a path (here) is separate from running it (the path classes)."""
from ..errors import CupyPruneError
from ..format.keys import PRUNING_PATTERNS
from .block import BlockPath
from .csr import CsrPath
from .dense import DensePath
from .group import GroupPath

PATH_CLASSES = {"dense": DensePath, "group": GroupPath, "csr": CsrPath, "block": BlockPath}
PATH_CHOICES = ("auto",) + tuple(PATH_CLASSES)

# which patterns each non-dense path applies to
APPLIES = {
    "group": {"group"},
    "csr": set(PRUNING_PATTERNS),
    "block": {"block"},
}


def choose_path(requested, pattern):
    """Path name for one layer.

    requested: 'auto' or a path name. A forced path runs on every layer it applies to; the
    others run dense. 'auto': group-wise layers take the compacted GEMM; every other pattern
    runs dense, because cuSPARSE CSR measured 6-22x slower than dense GEMM at 25-75% kept on
    the H100 (docs/BENCHMARKS.md, "What holds on an H100"), as the paper found on its GPU.
    """
    if requested not in PATH_CHOICES:
        raise CupyPruneError(f"unknown path {requested!r}: choose one of {', '.join(PATH_CHOICES)}")
    if requested == "auto":
        return "group" if pattern == "group" else "dense"
    if requested == "dense" or pattern not in APPLIES.get(requested, ()):
        return "dense"
    return requested


# A group-wise linear layer that must gather its kept input features pays only while the GEMM work
# it saves outweighs the gather: (R - T) * K > c * T, with R inputs, T kept, K outputs. c per
# precision was fitted to the H100 layer sweeps with the runtime's gather kernel (gpu/gather.py;
# bench/results/h100/linears.json, and docs/benchmarks_generated.md, "The `auto` rule for linear
# layers", lists every sweep point where the rule and the measurement disagree). In fp32 the gather
# pays at every measured point. In fp16 the rule breaks even at 50% kept for BERT FFN1 (768 -> 3072;
# measured between 50% and 60%), at 20% for BERT FFN2 (3072 -> 768; measured near 35%) and at 58%
# for the 4096x4096 layer at batch 64, whose 0.01 ms timings lie within noise of each other.
# Convolutions always pay (im2col shrinks with T), and so does a linear whose input arrives
# pre-compacted (passes.compact_producers).
GATHER_COST = {"fp32": 50, "tf32": 650, "fp16": 3000, "bf16": 3000}   # bf16: as fp16 (2 bytes)


def gather_pays(R, T, K, precision):
    return (R - T) * K > GATHER_COST[precision] * T


def build_path(name, f, fmask, ctx):
    return PATH_CLASSES[name](f, fmask, ctx)
