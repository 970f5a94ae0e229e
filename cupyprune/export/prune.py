"""Prune any module in place with one of the four patterns, as torch.nn.utils.prune masks that
export_module then reads (magnitude criterion; pruning/ holds the patterns).

    prune_module(model, "group", keep=0.5)
    export_module(model, example, "pruned.safetensors")
"""
from .pruning import default_prunable_keys, prune_state_dict
from .pruning.spec import parse_pattern_spec
from .torchlib import ExportError, import_torch


def prunable_weights(module):
    """{state-dict key: (submodule, parameter name)} of every conv and linear weight (with
    nn.MultiheadAttention's packed input projection), but the first conv and the last linear
    (the stem and the classifier stay dense) and embeddings."""
    torch = import_torch()
    layers = {}
    for name, sub in module.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(sub, (torch.nn.Conv2d, torch.nn.Linear)):
            layers[prefix + "weight"] = (sub, "weight")
        elif isinstance(sub, torch.nn.MultiheadAttention) and sub.in_proj_weight is not None:
            layers[prefix + "in_proj_weight"] = (sub, "in_proj_weight")
    weights = {k: getattr(sub, p) for k, (sub, p) in layers.items()}
    return {k: layers[k] for k in default_prunable_keys(weights)}


def prune_module(module, pattern, keep=0.5, *, n_m=None, block=None, scope="layer",
                 layers=None):
    """Prune `module`'s conv and linear weights (prunable_weights, or the keys `layers` names)
    to `keep` with `pattern` (element, group, vector[:N:M], block[:RxC]); returns {key: mask}."""
    torch = import_torch()
    pattern, spec_n_m, spec_block = parse_pattern_spec(pattern)
    n_m, block = n_m or spec_n_m, block or spec_block
    from torch.nn.utils import prune
    targets = prunable_weights(module)
    if layers is not None:
        unknown = [k for k in layers if k not in targets]
        if unknown:
            raise ExportError(f"{unknown[0]!r} is not a prunable conv or linear weight")
        targets = {k: targets[k] for k in layers}
    if not targets:
        raise ExportError("the module has no conv or linear layer to prune")
    with torch.no_grad():
        weights = {k: getattr(sub, p).detach() for k, (sub, p) in targets.items()}
        masks = prune_state_dict(weights, list(weights), pattern, keep, scope=scope, n_m=n_m,
                                 block=block)
    for key, mask in masks.items():
        sub, param = targets[key]
        prune.custom_from_mask(sub, param, mask.to(weights[key].dtype))
    return masks
