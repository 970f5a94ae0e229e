"""Mask generation for the four pruning patterns of paper section 3.2 (uses torch).

    from cupyprune.export.pruning import make_mask, prune_state_dict, default_prunable_keys
"""
from .criteria import CRITERIA, register_criterion
from .errors import (KeepError, NMError, PruningError, ShapeError, UnknownPatternError,
                     WeightError)
from .masks import (SCOPES, default_prunable_keys, f_to_weight, make_mask, prune_state_dict,
                    weight_to_f)
from .units import DEFAULT_BLOCK, DEFAULT_VECTOR_SIZE, PATTERNS

__all__ = ["CRITERIA", "register_criterion", "PruningError", "UnknownPatternError", "KeepError",
           "ShapeError", "NMError", "WeightError", "make_mask", "prune_state_dict",
           "default_prunable_keys", "weight_to_f", "f_to_weight", "PATTERNS", "SCOPES",
           "DEFAULT_BLOCK", "DEFAULT_VECTOR_SIZE"]
