"""The one spelling of a pruning pattern on every command line: element, group, vector[:N:M],
block[:RxC] (`vector:2:4` keeps 2 of every 4 inputs; `block:4x4` prunes 4x4 blocks of F)."""
from .errors import UnknownPatternError
from .units import PATTERNS

PATTERN_SYNTAX = "element, group, vector[:N:M] or block[:RxC]"


def _pair(text, sep):
    try:
        a, b = (int(v) for v in text.lower().split(sep))
    except ValueError:
        raise UnknownPatternError(f"must look like 2{sep}4, got {text!r}") from None
    return a, b


def parse_pattern_spec(text):
    """'vector:2:4' -> ('vector', (2, 4), None); 'block:4x4' -> ('block', None, (4, 4));
    a bare name -> (name, None, None)."""
    name, _, rest = str(text).partition(":")
    if name not in PATTERNS or (rest and name not in ("vector", "block")):
        raise UnknownPatternError(f"invalid choice: {text!r} (use {PATTERN_SYNTAX})")
    if not rest:
        return name, None, None
    if name == "vector":
        return name, _pair(rest, ":"), None
    return name, None, _pair(rest, "x")
