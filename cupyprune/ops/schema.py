"""Declared schemas: each op class names its attributes with their types, ranges and defaults
(`attrs = {"eps": Float(default=1e-5, above=0)}`) and the parameter roles it reads
(`params = {"weight": Param(prunable=True), "bias": Param(required=False)}`), and the graph
parser checks every node against its op's schema in this one place. A value PyTorch would refuse
for the same op is a ModelFileError naming the node; an op then reads `node.attrs[name]` already
checked, converted (a pair given as one int is two) and with its default filled in. Relations
between attributes (a pool's padding at most half its kernel) are an op's static
`attr_relations(attrs)`, which returns what is wrong or None.
"""
import math

from ..errors import ModelFileError

REQUIRED = object()      # default of an attribute that every node must give
# Largest size, stride, padding or index an attribute may hold: the GPU kernels index with
# 32-bit ints, and anything near it is refused by the memory check long before.
EXTENT = 2 ** 31 - 1


class Attr:
    """One attribute: `check(value)` returns the value as the op reads it, or raises ValueError
    with what was expected."""
    expected = "a value"

    def __init__(self, default=REQUIRED):
        self.default = default

    def check(self, value):
        raise NotImplementedError


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _in_range(v, lo, hi, above=None):
    return (lo is None or v >= lo) and (hi is None or v <= hi) and (above is None or v > above)


def _range_text(lo, hi, above=None):
    parts = [f">= {lo}" if lo is not None else None, f"> {above}" if above is not None else None,
             f"<= {hi}" if hi is not None else None]
    return " and ".join(p for p in parts if p)


class Int(Attr):
    def __init__(self, default=REQUIRED, min=None, max=None):
        super().__init__(default)
        self.min, self.max = min, max
        rng = _range_text(min, max)
        self.expected = f"the integer {min}" if min is not None and min == max else \
            f"an integer {rng}" if rng else "an integer"

    def check(self, value):
        if not _is_int(value) or not _in_range(value, self.min, self.max):
            raise ValueError(self.expected)
        return value


class Float(Attr):
    """A finite number (JSON integers accepted, booleans not)."""

    def __init__(self, default=REQUIRED, min=None, max=None, above=None):
        super().__init__(default)
        self.min, self.max, self.above = min, max, above
        rng = _range_text(min, max, above)
        self.expected = f"a finite number {rng}" if rng else "a finite number"

    def check(self, value):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ValueError(self.expected)
        try:
            value = float(value)            # a JSON integer beyond float's range: OverflowError
        except OverflowError:
            raise ValueError(self.expected) from None
        if not math.isfinite(value) or not _in_range(value, self.min, self.max, self.above):
            raise ValueError(self.expected)
        return value


class Bool(Attr):
    expected = "true or false"

    def check(self, value):
        if not isinstance(value, bool):
            raise ValueError(self.expected)
        return value


class Choice(Attr):
    def __init__(self, *values, default=REQUIRED):
        super().__init__(default)
        self.values = values
        self.expected = "one of " + ", ".join(repr(v) for v in values)

    def check(self, value):
        if isinstance(value, bool) or value not in self.values:
            raise ValueError(self.expected)
        return value


class Ints(Attr):
    """A list of integers; `length` fixes its length, and with `scalar_ok` one integer stands for
    `length` equal ones (PyTorch's `stride=2` for `(2, 2)`). Returned as a tuple."""

    def __init__(self, default=REQUIRED, length=None, min=None, max=None, scalar_ok=False):
        super().__init__(default)
        self.length, self.min, self.max, self.scalar_ok = length, min, max, scalar_ok
        rng = _range_text(min, max)
        each = f" each {rng}" if rng else ""
        count = f"{length} integers" if length else "a list of integers"
        self.expected = (f"an integer or {count}" if scalar_ok else count) + each

    def check(self, value):
        if self.scalar_ok and _is_int(value):
            value = [value] * self.length
        if not isinstance(value, (list, tuple)) or \
                (self.length is not None and len(value) != self.length) or \
                not all(_is_int(v) and _in_range(v, self.min, self.max) for v in value):
            raise ValueError(self.expected)
        return tuple(value)


def pair(default=REQUIRED, min=0, max=EXTENT):
    """stride, padding, kernel size, ...: one int or two, each in range."""
    return Ints(default=default, length=2, min=min, max=max, scalar_ok=True)


class Param:
    """A parameter role: required or optional, and whether its tensor may carry a mask
    (`<key>.mask`): only the weights that conv2d and linear prune do."""

    def __init__(self, required=True, prunable=False):
        self.required, self.prunable = required, prunable


def check_params(node, op_class):
    """node.params against op_class.params: unknown roles and missing required ones refused.
    -> the tensor keys that may carry a mask."""
    schema = getattr(op_class, "params", None)
    if schema is None:
        return ()
    for role in node.params:
        if role not in schema:
            known = ", ".join(sorted(schema)) or "none"
            raise ModelFileError(f"node {node.name!r} ({node.op}): unknown param {role!r} "
                                 f"(the op takes: {known})")
    for role, spec in schema.items():
        if spec.required and role not in node.params:
            raise ModelFileError(f"node {node.name!r} ({node.op}) needs param {role!r}")
    return tuple(node.params[role] for role, spec in schema.items()
                 if spec.prunable and role in node.params)


def check_attrs(node, op_class):
    """Check node.attrs against op_class.attrs (if the op declares a schema) and fill defaults.
    Attributes the schema does not name are refused: a misspelt one would be ignored."""
    schema = getattr(op_class, "attrs", None)
    if schema is None:
        return
    for name in node.attrs:
        if name not in schema:
            known = ", ".join(sorted(schema)) or "none"
            raise ModelFileError(f"node {node.name!r} ({node.op}): unknown attribute {name!r} "
                                 f"(the op takes: {known})")
    checked = {}
    for name, spec in schema.items():
        if name not in node.attrs:
            if spec.default is REQUIRED:
                raise ModelFileError(f"node {node.name!r} ({node.op}): attribute {name!r} "
                                     f"is missing")
            checked[name] = None if spec.default is None else spec.check(spec.default)
            continue
        value = node.attrs[name]
        try:
            checked[name] = spec.check(value)
        except ValueError as e:
            raise ModelFileError(f"node {node.name!r} ({node.op}): attribute {name!r} is "
                                 f"{_short(value)}, expected {e}") from None
    relations = getattr(op_class, "attr_relations", None)
    problem = relations(checked) if relations is not None else None
    if problem:
        raise ModelFileError(f"node {node.name!r} ({node.op}): {problem}")
    node.attrs = checked


def _short(value, limit=60):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
