"""Pruning masks for the four patterns (paper section 3.2), per layer or across a model.

    mask = make_mask(weight, "group", 0.5)                    # same shape as weight, float 0/1
    masks = prune_state_dict(sd, default_prunable_keys(sd), "vector", 0.5, n_m=(2, 4))

Patterns are defined on the layer's im2col weight matrix F (docs/FORMAT.md): conv weight
(K, C, kh, kw) -> F = weight.permute(2, 3, 1, 0).reshape(kh*kw*C, K); linear (out, in) ->
F = weight.T. Legend: R rows of F, K outputs (columns), U pruning units of a layer.

Scope 'global' ranks the units of all layers together by LAMP, the paper's formula (4) from its
reference [5] (Lee et al., ICLR 2021): with a layer's unit scores s sorted ascending,
score(u) = s_u / sum_{v >= u} s_v. (The paper's text prints the sum as over v != u, which loses
LAMP's ">=": that reading scores a unit about 1/U, so on ResNet-18 at keep 0.5 it kept every
layer up to layer3 whole and pruned layer4 to 22%.) Each layer's best unit scores 1, so no layer is emptied. Ranked
units are kept until keep * (all prunable parameters) is reached. Vector (N:M) has no global
form: N:M fixes every layer's kept fraction.
"""
import torch

from .criteria import importance
from .errors import NMError, UnknownPatternError
from .units import (check_divides, check_finite, check_keep, check_pattern, expand_units,
                    layer_f_mask, resolve_block, resolve_n_m, unit_scores)

SCOPES = ("layer", "global")


def weight_to_f(w):
    """PyTorch-layout weight -> F (R, K), a view."""
    if w.dim() == 4:
        return w.permute(2, 3, 1, 0).reshape(-1, w.shape[0])     # (kh*kw*C, K)
    if w.dim() == 2:
        return w.t()                                              # (in, out)
    raise ValueError(f"not a conv (4-D) or linear (2-D) weight: shape {tuple(w.shape)}")


def f_to_weight(fm, shape):
    """F-shaped (R, K) -> the PyTorch layout `shape` (inverse of weight_to_f)."""
    if len(shape) == 4:
        K, C, kh, kw = shape
        return fm.reshape(kh, kw, C, K).permute(3, 2, 0, 1)       # (K, C, kh, kw)
    return fm.t()


def _as_float(w):
    w = torch.as_tensor(w).detach()
    return w, (w.dtype if w.is_floating_point() else torch.float32)


def _prepare(weight, pattern, keep, n_m, block, criterion, name):
    """Validate one layer -> (per-element importance on F, n_m, block)."""
    check_keep(keep)
    check_pattern(pattern, n_m, block)
    w, _ = _as_float(weight)
    n_m = resolve_n_m(n_m, keep) if pattern == "vector" else None
    block = resolve_block(block) if pattern == "block" else None
    f = weight_to_f(w.to(torch.float64))
    check_divides(f.shape, pattern, n_m, block, name)
    check_finite(f, name)
    return importance(f, criterion), n_m, block


def _to_weight_mask(fm, weight):
    w, dtype = _as_float(weight)
    return f_to_weight(fm, w.shape).to(dtype).contiguous()


def make_mask(weight, pattern, keep, *, n_m=None, block=None, criterion="magnitude",
              name="weight"):
    """A float 0/1 mask of weight's shape (conv (K, C, kh, kw) or linear (out, in)).

    pattern: element | vector | block | group. keep: kept fraction in (0, 1], rounded to whole
    units of the layer. n_m: vector only: (n, m), or m alone (n = round(keep * m)); default
    m = 4. block: block only: (r, c) on F; default (4, 4). criterion: a key of
    criteria.CRITERIA. name: the layer, for error messages. Raises PruningError (ValueError).
    """
    score, n_m, block = _prepare(weight, pattern, keep, n_m, block, criterion, name)
    return _to_weight_mask(layer_f_mask(score, pattern, keep, n_m, block), weight)


def lamp(scores):
    """Unit scores (U,) -> LAMP scores (U,): s_u / (sum of s_v over units v at least as large)."""
    ascending, order = torch.sort(scores, stable=True)
    at_least = torch.flip(torch.cumsum(torch.flip(ascending, [0]), 0), [0])   # suffix sums
    out = torch.empty_like(scores)
    out[order] = ascending / at_least.clamp_min(torch.finfo(scores.dtype).tiny)
    return out


def _global_f_masks(scores_by_key, pattern, keep, block):
    """{key: importance on F} -> {key: bool F mask}, ranked across layers by LAMP."""
    units = {k: unit_scores(s, pattern, block) for k, s in scores_by_key.items()}
    normed, sizes, owner = [], [], []
    for i, (u, size) in enumerate(units.values()):
        normed.append(lamp(u))
        sizes.append(torch.full(u.shape, size, dtype=torch.float64))
        owner.append(torch.full(u.shape, i, dtype=torch.long))
    normed, sizes, owner = torch.cat(normed), torch.cat(sizes), torch.cat(owner)
    order = torch.argsort(normed, descending=True, stable=True)
    # keep a unit when its middle falls within the budget: whole units, nearest to the target
    filled = torch.cumsum(sizes[order], 0) - sizes[order] / 2
    kept = torch.zeros(normed.shape, dtype=torch.bool)
    kept[order[filled < keep * sizes.sum()]] = True
    masks = {}
    for i, (key, (u, _)) in enumerate(units.items()):
        mine = kept[owner == i]
        if not mine.any():                  # only when the budget is below one unit per layer
            mine[torch.argmax(normed[owner == i])] = True
        masks[key] = expand_units(mine, pattern, scores_by_key[key].shape, block)
    return masks


def prune_state_dict(state_dict, prunable_keys, pattern, keep, *, scope="layer", n_m=None,
                     block=None, criterion="magnitude"):
    """{key: float 0/1 mask} for each of prunable_keys (see make_mask for the arguments).
    scope: 'layer' (each layer keeps `keep`) or 'global' (module docstring)."""
    if scope not in SCOPES:
        raise UnknownPatternError(f"unknown scope {scope!r}: choose one of {', '.join(SCOPES)}")
    if scope == "layer":
        return {k: make_mask(state_dict[k], pattern, keep, n_m=n_m, block=block,
                             criterion=criterion, name=k) for k in prunable_keys}
    if pattern == "vector":
        raise NMError("scope 'global' does not apply to the vector pattern: N:M keeps the same "
                      "fraction of every layer (use scope 'layer')")
    scores = {}
    for k in prunable_keys:
        scores[k], _, block = _prepare(state_dict[k], pattern, keep, n_m, block, criterion, k)
    f_masks = _global_f_masks(scores, pattern, keep, block)
    return {k: _to_weight_mask(fm, state_dict[k]) for k, fm in f_masks.items()}


def default_prunable_keys(state_dict):
    """Conv (4-D) and linear (2-D) weights, in state-dict order, except the first conv and the
    last linear (first conv and classifier left dense, as usual) and any embedding."""
    keys = [k for k, v in state_dict.items()
            if k.rsplit(".", 1)[-1].endswith("weight") and "embeddings" not in k
            and hasattr(v, "dim") and v.dim() in (2, 4)]
    convs = [k for k in keys if state_dict[k].dim() == 4]
    linears = [k for k in keys if state_dict[k].dim() == 2]
    skip = set(convs[:1]) | set(linears[-1:])
    return [k for k in keys if k not in skip]
