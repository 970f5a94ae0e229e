"""A module and its example inputs -> a torch.export program, and the masks it was pruned with.

torch.export rather than torch.fx.symbolic_trace: it traces through Python control flow on
concrete shapes and refuses, with a message, what depends on the data; it keeps the high-level
ATen ops (conv2d, linear, layer_norm, scaled_dot_product_attention) that map to the runtime's
fast ops; it names every parameter by its state-dict key and every node by the module it came
from; and it handles Hugging Face models, whose forward methods defeat symbolic tracing. The
batch dim (and a token input's sequence dim) is traced as symbolic, so the file runs any batch.
"""
import copy
import inspect

from .torchlib import ExportError, import_torch

TRACE_BATCH = 2           # a batch of 1 would be specialised by the tracer


def normalise_inputs(module, example_inputs):
    """A tensor, a tuple of tensors, or a dict of keyword tensors -> {name: tensor}, in the
    order of the module's forward arguments."""
    torch = import_torch()
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    if isinstance(example_inputs, dict):
        named = dict(example_inputs)
    elif isinstance(example_inputs, (tuple, list)):
        params = [p for p in inspect.signature(module.forward).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if len(example_inputs) > len(params):
            raise ExportError(f"{len(example_inputs)} example inputs, but forward() takes "
                              f"{len(params)}")
        named = {p.name: t for p, t in zip(params, example_inputs)}
    else:
        raise ExportError(f"example inputs must be a tensor, a tuple of tensors or a dict of "
                          f"tensors, got {type(example_inputs).__name__}")
    for name, t in named.items():
        if not isinstance(t, torch.Tensor):
            raise ExportError(f"example input {name!r} is a {type(t).__name__}, not a tensor")
        if t.dim() == 0:
            raise ExportError(f"example input {name!r} has no batch dim")
    return named


def _batched(t):
    """The example with at least TRACE_BATCH samples (repeated), so the batch dim stays free."""
    if t.shape[0] >= TRACE_BATCH:
        return t
    return t.repeat(TRACE_BATCH, *([1] * (t.dim() - 1)))[:TRACE_BATCH]


def strip_pruning(module):
    """A copy of the module with torch.nn.utils.prune's re-parametrisations made permanent
    (weight = weight_orig * weight_mask, a plain parameter again) -> (copy, {state-dict key of
    the weight: mask tensor}). The module itself is left as it is."""
    torch = import_torch()
    from torch.nn.utils import prune
    computed = []                 # pruned tensors are computed attributes: deepcopy refuses them
    for sub in module.modules():
        for hook in sub._forward_pre_hooks.values():
            if isinstance(hook, prune.BasePruningMethod) and hasattr(sub, hook._tensor_name):
                computed.append((sub, hook._tensor_name, getattr(sub, hook._tensor_name)))
    for sub, name, _ in computed:
        delattr(sub, name)
    try:
        module = copy.deepcopy(module)
    finally:
        for sub, name, value in computed:
            setattr(sub, name, value)
    masks = {}
    for prefix, sub in module.named_modules():
        for hook_id, hook in list(sub._forward_pre_hooks.items()):
            if not isinstance(hook, prune.BasePruningMethod):
                continue
            name = hook._tensor_name
            orig, mask = sub._parameters.pop(name + "_orig"), sub._buffers.pop(name + "_mask")
            del sub._forward_pre_hooks[hook_id]
            with torch.no_grad():
                sub.register_parameter(name, torch.nn.Parameter(orig * mask))
            masks[f"{prefix}.{name}" if prefix else name] = mask.detach().clone()
    return module, masks


def trace(module, named_inputs, sequence_limit=None):
    """module (eval mode, no pruning hooks), {name: example tensor} -> ExportedProgram."""
    torch = import_torch()
    from torch.export import Dim
    batch = Dim("batch", min=1, max=1 << 20)
    seq = Dim("sequence", min=1, max=sequence_limit or 1 << 16)
    kwargs, dynamic = {}, {}
    for name, t in named_inputs.items():
        kwargs[name] = _batched(t)
        dims = {0: batch}
        if not t.is_floating_point() and t.dim() == 2:            # token ids, masks: (N, T)
            dims[1] = seq
        dynamic[name] = dims
    try:
        with torch.no_grad():
            return torch.export.export(module, (), kwargs, dynamic_shapes=dynamic, strict=False)
    except Exception as e:         # torch raises many types here; each is one reason to refuse
        raise ExportError(f"torch.export could not trace the module: {first_line(e)}") from None


def first_line(e):
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]
