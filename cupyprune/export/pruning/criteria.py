"""Pruning criteria (paper section 3.2: what decides which weights go): a small registry.

A criterion maps F (R, K) float64 to a non-negative importance per element, of the same shape.
A pruning unit (element, N:M candidate, block, group = row of F) scores the SUM of its elements'
importances, so a criterion must be additive over a unit. Plug another one in with

    @register_criterion("taylor")
    def taylor(f): ...

  magnitude  w**2: a unit's score is its squared L2 norm, which ranks units exactly as the L2
             norm does (blocks, groups) and single weights as |w| does (element, vector)
  l1         |w|: a unit's score is its L1 norm
"""
from .errors import UnknownPatternError

CRITERIA = {}


def register_criterion(name):
    def deco(fn):
        CRITERIA[name] = fn
        return fn
    return deco


@register_criterion("magnitude")
def magnitude(f):
    return f * f


@register_criterion("l1")
def l1(f):
    return f.abs()


def importance(f, criterion):
    """F (R, K) -> per-element importance (R, K) under the named criterion."""
    fn = CRITERIA.get(criterion)
    if fn is None:
        raise UnknownPatternError(f"unknown pruning criterion {criterion!r}: choose one of "
                                  f"{', '.join(CRITERIA)}")
    return fn(f)
