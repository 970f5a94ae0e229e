"""export_module's steps: trace, lower, collect masks, write, verify (see __init__.py)."""
import numpy as np

from ..atomic import atomic_path
from ..errors import CupyPruneError
from ..format import write_model_file
from ..format.compact import group_rows
from ..format.keys import MASK_SUFFIX
from . import aten_ops  # noqa: F401  (registers the converters)
from ..ops import PRUNABLE_OPS
from .lower import CONVERTERS, Lowering
from .mutation import functional
from .spec import input_spec
from .torchlib import ExportError
from .trace import normalise_inputs, strip_pruning, trace
from .verify import TOLERANCE, reference_output, relative_error


def export_to_file(module, example_inputs, out, labels, pattern, verify, tolerance,
                   description, exporter, max_length, normalization, report):
    named = normalise_inputs(module, example_inputs)
    module, masks = strip_pruning(module)
    module.eval()
    report(f"tracing {type(module).__name__} with torch.export")
    program = functional(trace(module, named, sequence_limit=max_length), CONVERTERS)
    lowering = Lowering(program, list(named))
    graph = lowering.run()
    tensors = lowering.tensors
    weights = _prunable_weights(graph)
    tensors.update(_masks(masks, tensors, weights))
    pruning = _declared(pattern, tensors, weights)
    spec = input_spec(named, graph, tensors, max_length=max_length,
                      normalization=normalization)
    report(f"{len(graph['nodes'])} nodes, {len(tensors)} tensors; writing {out}")
    expected = reference_output(module, named) if verify else None
    with atomic_path(out) as tmp:
        write_model_file(tmp, tensors, graph, spec, pruning=pruning, labels=labels,
                         exporter=exporter, description=description, compact=True)
        if not verify:
            return None
        try:
            error = relative_error(tmp, named, expected)
        except CupyPruneError as e:
            raise ExportError(f"the written file does not run: {e}") from None
        limit = TOLERANCE if tolerance is None else tolerance
        report(f"verified: max relative error {error:.2e} against PyTorch (limit {limit:.0e})")
        if not error <= limit:
            raise ExportError(f"verification failed: max relative error {error:.2e} against "
                              f"PyTorch is above {limit:.0e} (--no-verify to keep the file)")
    return error


def _prunable_weights(graph):
    return {n["params"]["weight"] for n in graph["nodes"]
            if n["op"] in PRUNABLE_OPS and "weight" in n["params"]}


def _masks(masks, tensors, weights):
    """`<weight>.mask` for every prune re-parametrisation of a conv/linear weight, and for a
    weight whose zeros make whole groups (so the writer can store it compacted)."""
    out = {}
    for key, mask in masks.items():
        if key not in weights:
            raise ExportError(f"{key!r} is pruned, but only conv and linear weights can be")
        out[key + MASK_SUFFIX] = mask.detach().cpu().numpy().astype(np.uint8)
    for key in weights - set(masks):
        nonzero = tensors[key] != 0
        if group_rows(nonzero) is not None:
            out[key + MASK_SUFFIX] = nonzero.astype(np.uint8)
    return out


def _declared(pattern, tensors, weights):
    """pattern (a name, or a dict as in docs/FORMAT.md) declared for every masked weight."""
    if pattern is None:
        return {}
    decl = dict(pattern) if isinstance(pattern, dict) else {"pattern": str(pattern)}
    return {k: decl for k in weights if k + MASK_SUFFIX in tensors}
