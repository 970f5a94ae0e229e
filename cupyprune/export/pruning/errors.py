"""Errors of mask generation: ValueError subclasses with a one-line message a CLI can print."""


from ..torchlib import ExportError


class PruningError(ExportError, ValueError):
    """Base: a pruning request that cannot be carried out as asked."""


class UnknownPatternError(PruningError):
    """A pattern (or criterion, or scope) name that is not one of the known ones."""


class KeepError(PruningError):
    """A kept fraction outside (0, 1]."""


class ShapeError(PruningError):
    """A vector size or block shape that does not divide a layer's F matrix (names the layer)."""


class WeightError(PruningError):
    """A weight that cannot be ranked: it holds NaN or Inf (names the layer)."""


class NMError(PruningError):
    """An N:M vector pattern that is not 1 <= N <= M, or pattern parameters that do not apply."""
