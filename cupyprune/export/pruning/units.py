"""The pruning units of each pattern on F (R, K) (paper section 3.2, Fig. 3; docs/FORMAT.md).

Legend: R rows of F (reduction: conv taps (i, j, c) channels-last, linear inputs), K outputs,
U units of a layer. F is what the runtime multiplies by, so every pattern is defined on it:
  element  one weight
  vector   N:M: in each column, each run of m consecutive rows keeps its n most important
  block    an r x c block (r rows along the reduction, c columns along the outputs)
  group    one row: a conv tap (i, j, c) for all outputs, or one linear input feature
"""
import torch

from ...format.keys import PRUNING_PATTERNS as PATTERNS
from .errors import KeepError, NMError, ShapeError, UnknownPatternError, WeightError

DEFAULT_VECTOR_SIZE = 4          # m of N:M when neither n_m nor a vector size is given
DEFAULT_BLOCK = (4, 4)


def round_half_up(x):
    return int(x + 0.5)


def check_keep(keep):
    if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0 < keep <= 1:
        raise KeepError(f"keep must be a fraction in (0, 1], got {keep!r}")


def check_pattern(pattern, n_m, block):
    if pattern not in PATTERNS:
        raise UnknownPatternError(f"unknown pruning pattern {pattern!r}: choose one of "
                                  f"{', '.join(PATTERNS)}")
    if n_m is not None and pattern != "vector":
        raise NMError(f"n_m / vector size applies only to the vector pattern, not {pattern!r}")
    if block is not None and pattern != "block":
        raise NMError(f"block applies only to the block pattern, not {pattern!r}")


def resolve_n_m(n_m, keep):
    """n_m: None, m (an int: the vector size) or (n, m) with n possibly None -> (n, m).
    Without n, n = round(keep * m), at least 1."""
    n, m = (None, n_m) if isinstance(n_m, int) else (n_m or (None, DEFAULT_VECTOR_SIZE))
    if not isinstance(m, int) or m < 1:
        raise NMError(f"vector size m must be a positive integer, got {m!r}")
    if n is None:
        n = max(1, round_half_up(keep * m))
    if not isinstance(n, int) or n < 1:
        raise NMError(f"N of N:M must be a positive integer, got {n!r}")
    if n > m:
        raise NMError(f"N:M pattern {n}:{m} keeps more than it has: N must be <= M")
    return n, m


def resolve_block(block):
    r, c = block or DEFAULT_BLOCK
    if not all(isinstance(v, int) and v >= 1 for v in (r, c)):
        raise ShapeError(f"block shape must be two positive integers, got {block!r}")
    return r, c


def check_divides(shape, pattern, n_m, block, name):
    """Vector runs and blocks must tile F exactly; the message names the layer."""
    R, K = shape
    if pattern == "vector" and R % n_m[1]:
        raise ShapeError(f"layer {name!r}: vector size {n_m[1]} does not divide the {R} rows "
                         f"of its F matrix ({R}x{K})")
    if pattern == "block" and (R % block[0] or K % block[1]):
        raise ShapeError(f"layer {name!r}: block {block[0]}x{block[1]} does not divide its F "
                         f"matrix ({R}x{K})")


def check_finite(f, name):
    """Magnitude cannot rank NaN or Inf: refuse such a layer, naming it."""
    bad = ~torch.isfinite(f)
    if bool(bad.any()):
        raise WeightError(f"layer {name!r}: {int(bad.sum())} of its {f.numel()} weights are NaN "
                          f"or Inf, which cannot be ranked for pruning")


def unit_scores(score, pattern, block):
    """Per-element importance (R, K) -> (scores (U,), elements per unit). Not for vector."""
    R, K = score.shape
    if pattern == "element":
        return score.reshape(-1), 1
    if pattern == "group":
        return score.sum(dim=1), K                                     # (R,)
    r, c = block
    blocks = score.reshape(R // r, r, K // c, c).sum(dim=(1, 3))       # (R/r, K/c)
    return blocks.reshape(-1), r * c


def expand_units(kept, pattern, shape, block):
    """bool kept units (U,) -> bool F mask (R, K)."""
    R, K = shape
    if pattern == "element":
        return kept.reshape(R, K)
    if pattern == "group":
        return kept[:, None].expand(R, K)
    r, c = block
    return kept.reshape(R // r, 1, K // c, 1).expand(R // r, r, K // c, c).reshape(R, K)


def top_k(scores, k):
    """bool (U,) with exactly the k highest scores set."""
    kept = torch.zeros(scores.shape, dtype=torch.bool)
    kept[torch.topk(scores, k).indices] = True
    return kept


def n_m_mask(score, n, m):
    """Per-element importance (R, K) -> bool F mask keeping n of every m rows in each column."""
    R, K = score.shape
    runs = score.reshape(R // m, m, K)                                 # (R/m, m, K)
    kept = torch.zeros(runs.shape, dtype=torch.bool)
    kept.scatter_(1, torch.topk(runs, n, dim=1).indices, True)
    return kept.reshape(R, K)


def layer_f_mask(score, pattern, keep, n_m, block):
    """Scope 'layer': each layer keeps round(keep * U) of its own units (at least one)."""
    if pattern == "vector":
        return n_m_mask(score, *n_m)
    scores, _ = unit_scores(score, pattern, block)
    k = max(1, round_half_up(keep * scores.numel()))
    return expand_units(top_k(scores, k), pattern, score.shape, block)
