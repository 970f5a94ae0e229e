"""Constant folding at export: ATen calls that depend on no graph input are run once with torch,
and the runtime graph gets their results as tensors.

A traced module often builds tensors from its buffers and Python numbers alone, such as Swin's
shifted-window attention mask (zeros, then slices filled region by region: in-place writes the
runtime has no op for). Running such a subgraph at export costs nothing at run time and needs no
converter for its calls. A call is constant when every tensor it reads is a parameter, a buffer,
a lifted constant or another constant call, no argument is a symbolic size, and its result has a
static shape; `new_zeros` and its kin read only the dtype of their first argument, so that
argument never makes them depend on an input.

In-place calls are only folded on a functional graph: mutation.functional runs torch's
functionalisation where the program mutates a tensor with a call no converter takes, so that
every folded value is the one its readers see.
"""

from .fxargs import flat, is_symbolic
from .torchlib import import_torch

# calls that read only the dtype (and device) of their first argument
DTYPE_ONLY_FIRST = {"aten.new_zeros.default", "aten.new_ones.default", "aten.new_full.default",
                    "aten.new_empty.default"}


def _static_tensor(node):
    torch = import_torch()
    val = node.meta.get("val")
    return isinstance(val, torch.Tensor) and all(isinstance(d, int) for d in val.shape)


def _node_args(node):
    """The fx Nodes among a call's arguments (nested lists included), and whether any plain
    argument is a symbolic size."""
    items = list(flat(list(node.args) + list(node.kwargs.values())))
    return [a for a in items if hasattr(a, "op")], any(is_symbolic(a) for a in items)


def _evaluate(node, values):
    """Run one call with torch on the values of its arguments."""
    torch = import_torch()

    def sub(a, first=False):
        if isinstance(a, (list, tuple)):
            return type(a)(sub(b) for b in a)
        if hasattr(a, "op"):
            if first and str(node.target) in DTYPE_ONLY_FIRST:
                return torch.empty(0, dtype=a.meta["val"].dtype)
            return values[a.name]
        return a
    args = [sub(a, first=i == 0) for i, a in enumerate(node.args)]
    kwargs = {k: sub(v) for k, v in node.kwargs.items()}
    with torch.no_grad():
        return node.target(*args, **kwargs)


def fold_constants(program, param_of, state):
    """-> (names of every constant call, {fx node name: torch tensor} of those whose value a
    non-constant call or the output reads: the values the runtime graph takes as tensors)."""
    values = {name: state[key] for name, key in param_of.items() if key in state}
    constant = set()
    graph = program.graph_module.graph
    for node in graph.nodes:
        if node.op != "call_function" or not _static_tensor(node):
            continue
        args, symbolic = _node_args(node)
        if str(node.target) in DTYPE_ONLY_FIRST and node.args:
            args = [a for a in args if a is not node.args[0]]
        if symbolic or not all(a.name in values for a in args):
            continue
        if not args and str(node.target) not in DTYPE_ONLY_FIRST:
            continue                    # a factory of numbers alone (arange, full): converted
        values[node.name] = _evaluate(node, values)
        constant.add(node.name)
    read = set()
    for node in graph.nodes:
        if node.name in constant:
            continue
        read.update(a.name for a in _node_args(node)[0] if a.name in constant)
    return constant, {name: values[name] for name in read}
