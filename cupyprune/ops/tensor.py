"""Tensor ops of traced graphs, in PyTorch's own dim order: shapes, indexing, reductions, matmul.

A traced graph (cupyprune.export) holds the primitive ops that torch.export produces. Shape
arguments that depend on the input (the batch size, a sequence length) are values of the graph:
`sym_size` reads one dim of a value as a host integer, `int_arith` combines such integers, and an
op whose shape attribute holds `null` takes those integers, in order, from its extra inputs.

scaled_dot_product_attention is in ops/sdpa.py.
"""
import numpy as np

from ..errors import InputError
from ..layout import LOGICAL
from .elementwise import broadcast_shape
from .registry import Op, elements, register, same_shape, shape_error
from .schema import Bool, Choice, Float, Int, Ints, Param
from .transformer import softmax

DTYPES = ("float", "int64", "int32", "bool")     # "float": the run's floating dtype


class Size(tuple):
    """A host integer value in shape inference (memory.py's footprint): an empty shape (one
    element) that remembers the integer, so the ops that take sizes see them."""

    def __new__(cls, value):
        obj = super().__new__(cls, ())
        obj.value = int(value)
        return obj


def _size(v):
    if not isinstance(v, Size):
        raise InputError(f"a size was expected, got a value of shape {tuple(v)}")
    return v.value


class Logical(Op):
    """A op on values in PyTorch's dim order; bf16 runs widen its float inputs (FloatBoundary)."""
    layout = LOGICAL
    attrs, params = {}, {}

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.dtype = ctx.dtype

    def np_dtype(self, name):
        return self.dtype if name == "float" else np.dtype(name)


class ShapeArg:
    """A list attribute whose `null` entries are filled, in order, from a node's extra inputs."""

    def __init__(self, node, name):
        self.template = node.attrs[name]
        self.free = [i for i, v in enumerate(self.template) if v is None]

    def fill(self, node, values):
        if len(values) != len(self.free):
            raise InputError(f"node {node.name!r}: {len(self.free)} symbolic sizes, got "
                             f"{len(values)}")
        out = list(self.template)
        for i, v in zip(self.free, values):
            out[i] = int(v)
        return out


class IntsOrNull(Ints):
    """A shape: integers (>= -1) or null for a size that an extra input supplies."""

    def check(self, value):
        if not isinstance(value, (list, tuple)) or not all(
                v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= -1)
                for v in value):
            raise ValueError("a list of integers >= -1 or null")
        return list(value)


def _resolve(node, shape, count):
    """A reshape target with one -1 -> concrete, for `count` elements."""
    known = elements(d for d in shape if d != -1)
    if list(shape).count(-1) > 1 or (-1 in shape and (known == 0 or count % known)) or \
            (-1 not in shape and known != count):
        raise InputError(f"node {node.name!r}: cannot reshape {count} elements to "
                         f"{tuple(shape)}")
    return tuple(count // known if d == -1 else d for d in shape)


def _bounds(attrs, sizes, read):
    """[start, end] from the attributes, each index in `symbolic` (0: start, 1: end) taken from
    the next extra input; read(value) -> int (a Size in shape inference, a host int at run)."""
    bounds = [attrs["start"], attrs["end"]]
    for which, value in zip(attrs["symbolic"], sizes):
        bounds[which] = read(value)
    return bounds


def _dim(node, dim, ndim):
    if not -ndim <= dim < max(ndim, 1):
        raise InputError(f"node {node.name!r} ({node.op}): dim {dim} is out of range for a "
                         f"{ndim}-D value")
    return dim % max(ndim, 1)


@register("sym_size")
class SymSize(Logical):
    """One dim of a value, as a host integer."""
    bf16_native = True                 # reads a shape only
    attrs = {"dim": Int()}

    @staticmethod
    def infer_shape(node, params, x):
        return Size(x[_dim(node, node.attrs["dim"], len(x))])

    def __call__(self, x):
        return int(x.shape[_dim(self.node, self.node.attrs["dim"], x.ndim)])


_INT_OPS = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
            "floordiv": lambda a, b: a // b}


@register("int_arith")
class IntArith(Logical):
    """Host integer arithmetic on sizes: a op b, b an input or the attribute `value`."""
    bf16_native = True                 # host integers only
    attrs = {"op": Choice(*_INT_OPS), "value": Int(default=None)}

    @staticmethod
    def infer_shape(node, params, a, b=None):
        b = node.attrs["value"] if b is None else _size(b)
        if b is None or (node.attrs["op"] == "floordiv" and b == 0):
            shape_error(node, "needs a non-zero second operand")
        return Size(_INT_OPS[node.attrs["op"]](_size(a), b))

    def __call__(self, a, b=None):
        b = self.node.attrs["value"] if b is None else b
        if b is None:
            shape_error(self.node, "needs a second input or a 'value'")
        if self.node.attrs["op"] == "floordiv" and b == 0:
            raise InputError(f"node {self.node.name!r}: division of a size by zero")
        return int(_INT_OPS[self.node.attrs["op"]](int(a), int(b)))


class _ShapedByAttr(Logical):
    """An op whose `shape` attribute may hold nulls, each filled by the next size input."""
    attrs = {"shape": IntsOrNull()}

    @staticmethod
    def traced_shape(node, sizes):
        """The shape at shape inference (sizes: Size values)."""
        return ShapeArg(node, "shape").fill(node, [_size(v) for v in sizes])

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.shape = ShapeArg(node, "shape")

    def run_shape(self, sizes):
        """The shape at run time (sizes: host integers)."""
        return self.shape.fill(self.node, sizes)


@register("reshape")
class Reshape(_ShapedByAttr):
    bf16_native = True                 # only moves values: a traced attention's heads stay views

    @staticmethod
    def infer_shape(node, params, x, *sizes):
        shape = _ShapedByAttr.traced_shape(node, sizes)
        return _resolve(node, shape, elements(x))

    def __call__(self, x, *sizes):
        shape = self.run_shape(sizes)
        try:
            return x.reshape(shape)
        except ValueError:
            raise InputError(f"node {self.node.name!r}: cannot reshape {tuple(x.shape)} to "
                             f"{tuple(shape)}") from None


@register("expand")
class Expand(_ShapedByAttr):
    """torch's expand: -1 keeps a dim; new leading dims may be added."""
    bf16_native = True                 # only moves values

    @staticmethod
    def infer_shape(node, params, x, *sizes):
        shape = _ShapedByAttr.traced_shape(node, sizes)
        lead = len(shape) - len(x)
        if lead < 0:
            raise InputError(f"node {node.name!r}: cannot expand {tuple(x)} to {shape}")
        shape = [x[i - lead] if s == -1 else s for i, s in enumerate(shape)]
        return broadcast_shape(node, x, shape)

    def __call__(self, x, *sizes):
        shape = self.run_shape(sizes)
        lead = len(shape) - x.ndim
        if lead < 0:
            raise InputError(f"node {self.node.name!r}: cannot expand a {x.ndim}-D value to "
                             f"{len(shape)} dims")
        shape = [x.shape[i - lead] if s == -1 else s for i, s in enumerate(shape)]
        try:
            return self.xp.broadcast_to(x, shape)
        except ValueError:
            raise InputError(f"node {self.node.name!r}: cannot expand {tuple(x.shape)} to "
                             f"{tuple(shape)}") from None


@register("permute")
class Permute(Logical):
    bf16_native = True                 # only moves values
    attrs = {"dims": Ints(min=-8, max=7)}

    @staticmethod
    def infer_shape(node, params, x):
        dims = [d % max(len(x), 1) for d in node.attrs["dims"]]
        if sorted(dims) != list(range(len(x))):
            raise InputError(f"node {node.name!r}: dims {node.attrs['dims']} do not permute "
                             f"shape {tuple(x)}")
        return tuple(x[d] for d in dims)

    def __call__(self, x):
        dims = self.node.attrs["dims"]
        if sorted(d % x.ndim for d in dims) != list(range(x.ndim)):
            raise InputError(f"node {self.node.name!r}: dims {dims} do not permute a "
                             f"{x.ndim}-D value")
        return x.transpose([d % x.ndim for d in dims])


@register("cat")
class Cat(Logical):
    bf16_native = True
    attrs = {"dim": Int(default=0)}

    @staticmethod
    def infer_shape(node, params, *xs):
        dim = _dim(node, node.attrs["dim"], len(xs[0]))
        rest = {tuple(x[:dim]) + tuple(x[dim + 1:]) for x in xs}
        if len(rest) != 1 or len({len(x) for x in xs}) != 1:
            raise InputError(f"node {node.name!r}: cannot concatenate shapes "
                             f"{[tuple(x) for x in xs]} along dim {dim}")
        return tuple(xs[0][:dim]) + (sum(x[dim] for x in xs),) + tuple(xs[0][dim + 1:])

    def __call__(self, *xs):
        dim = _dim(self.node, self.node.attrs["dim"], xs[0].ndim)
        try:
            return self.xp.concatenate(xs, axis=dim)
        except ValueError:
            raise InputError(f"node {self.node.name!r}: cannot concatenate shapes "
                             f"{[tuple(x.shape) for x in xs]} along dim {dim}") from None


@register("slice")
class Slice(Logical):
    """x[..., start:end:step, ...] along `dim`; a null start or end comes from an input."""
    bf16_native = True
    attrs = {"dim": Int(), "start": Int(default=0), "end": Int(default=None),
             "step": Int(default=1, min=1), "symbolic": Ints(default=(), min=0, max=1)}

    @staticmethod
    def infer_shape(node, params, x, *sizes):
        a = node.attrs
        bounds = _bounds(a, sizes, _size)
        dim = _dim(node, a["dim"], len(x))
        length = len(range(*slice(bounds[0], bounds[1], a["step"]).indices(x[dim])))
        return tuple(x[:dim]) + (length,) + tuple(x[dim + 1:])

    def __call__(self, x, *sizes):
        a = self.node.attrs
        bounds = _bounds(a, sizes, int)
        index = [slice(None)] * x.ndim
        index[_dim(self.node, a["dim"], x.ndim)] = slice(bounds[0], bounds[1], a["step"])
        return x[tuple(index)]


@register("pad")
class Pad(Logical):
    """F.pad(x, pads, value=value): pads from the last dim backwards, (left, right) each;
    negative amounts crop."""
    attrs = {"pads": Ints(), "value": Float(default=0.0)}

    @staticmethod
    def infer_shape(node, params, x):
        pads = node.attrs["pads"]
        if len(pads) % 2 or len(pads) // 2 > len(x):
            raise InputError(f"node {node.name!r}: {len(pads)} pad amounts for shape {tuple(x)}")
        out = list(x)
        for i in range(len(pads) // 2):
            out[len(x) - 1 - i] += pads[2 * i] + pads[2 * i + 1]
        if min(out, default=1) < 0:
            raise InputError(f"node {node.name!r}: padding {pads} crops shape {tuple(x)} away")
        return tuple(out)

    def __call__(self, x):
        pads = self.node.attrs["pads"]
        if len(pads) % 2 or len(pads) // 2 > x.ndim:
            raise InputError(f"node {self.node.name!r}: {len(pads)} pad amounts for a "
                             f"{x.ndim}-D value")
        widths = [(0, 0)] * x.ndim
        crop = [slice(None)] * x.ndim
        for i in range(len(pads) // 2):
            lo, hi = pads[2 * i], pads[2 * i + 1]
            axis = x.ndim - 1 - i
            widths[axis] = (max(lo, 0), max(hi, 0))
            crop[axis] = slice(max(-lo, 0), x.shape[axis] + max(lo, 0) + max(hi, 0) - max(-hi, 0))
        out = self.xp.pad(x, widths, constant_values=self.node.attrs["value"])
        return out[tuple(crop)]


@register("roll")
class Roll(Logical):
    bf16_native = True
    attrs = {"shifts": Ints(), "dims": Ints(default=())}

    infer_shape = staticmethod(same_shape)

    def __call__(self, x):
        shifts, dims = self.node.attrs["shifts"], self.node.attrs["dims"]
        if dims and len(dims) != len(shifts):
            shape_error(self.node, "needs one dim per shift")
        if not dims:
            return self.xp.roll(x.ravel(), shifts[0]).reshape(x.shape)
        return self.xp.roll(x, shifts, axis=[_dim(self.node, d, x.ndim) for d in dims])


@register("select")
class Select(Logical):
    """x.select(dim, index): drops the dim."""
    bf16_native = True
    attrs = {"dim": Int(), "index": Int()}

    @staticmethod
    def infer_shape(node, params, x):
        dim = _dim(node, node.attrs["dim"], len(x))
        return tuple(x[:dim]) + tuple(x[dim + 1:])

    def __call__(self, x):
        dim = _dim(self.node, self.node.attrs["dim"], x.ndim)
        index = self.node.attrs["index"]
        if not -x.shape[dim] <= index < x.shape[dim]:
            raise InputError(f"node {self.node.name!r}: index {index} is out of range for "
                             f"size {x.shape[dim]}")
        return x[(slice(None),) * dim + (index,)]          # a view: no index array


@register("index")
class Index(Logical):
    """x[i0, i1, ...] with integer/bool index tensors at `axes` (aten.index.Tensor)."""
    attrs = {"axes": Ints(min=0, max=7)}

    @staticmethod
    def infer_shape(node, params, x, *indices):
        axes = node.attrs["axes"]
        if not axes or max(axes) >= len(x):
            raise InputError(f"node {node.name!r}: axes {axes} of shape {tuple(x)}")
        picked = broadcast_shape(node, *indices)
        return tuple(x[:axes[0]]) + picked + tuple(x[axes[-1] + 1:])

    def __call__(self, x, *indices):
        index = [slice(None)] * x.ndim
        for axis, ix in zip(self.node.attrs["axes"], indices):
            if axis >= x.ndim:
                raise InputError(f"node {self.node.name!r}: axis {axis} of a {x.ndim}-D value")
            index[axis] = ix
        try:
            return x[tuple(index)]
        except IndexError as e:
            raise InputError(f"node {self.node.name!r}: {e}") from None


class _Reduction(Logical):
    """x.mean / x.sum over `dims` (method: the array method's name)."""
    attrs = {"dims": Ints(min=-8, max=7), "keepdim": Bool(default=False)}
    method = ""

    @staticmethod
    def infer_shape(node, params, x):
        return _reduced(node, x)

    def __call__(self, x):
        dims = tuple(_dim(self.node, d, x.ndim) for d in self.node.attrs["dims"])
        out = getattr(x, self.method)(axis=dims, keepdims=self.node.attrs["keepdim"])
        return out.astype(x.dtype, copy=False)


@register("mean")
class Mean(_Reduction):
    method = "mean"


@register("sum")
class Sum(_Reduction):
    method = "sum"


@register("cumsum")
class Cumsum(Logical):
    attrs = {"dim": Int()}

    infer_shape = staticmethod(same_shape)

    def __call__(self, x):
        dim = _dim(self.node, self.node.attrs["dim"], x.ndim)
        return x.cumsum(axis=dim, dtype=x.dtype if x.dtype.kind == "f" else np.int64)


@register("where")
class Where(Logical):
    """torch.where(condition, a, b); b may be the number `scalar` (masked_fill)."""
    attrs = {"scalar": Float(default=None)}

    @staticmethod
    def infer_shape(node, params, condition, a, b=()):
        return broadcast_shape(node, condition, a, b)

    def __call__(self, condition, a, b=None):
        if b is None:
            if self.node.attrs["scalar"] is None:
                shape_error(self.node, "needs a third input or a 'scalar'")
            b = a.dtype.type(self.node.attrs["scalar"])
        try:
            out = self.xp.where(condition.astype(bool, copy=False), a, b)
        except ValueError:
            raise InputError(f"node {self.node.name!r}: shapes do not broadcast") from None
        return out.astype(a.dtype, copy=False)


def _reduced(node, x):
    dims = {_dim(node, d, len(x)) for d in node.attrs["dims"]}
    if node.attrs["keepdim"]:
        return tuple(1 if i in dims else d for i, d in enumerate(x))
    return tuple(d for i, d in enumerate(x) if i not in dims)


@register("softmax")
class Softmax(Logical):
    attrs = {"dim": Int()}

    infer_shape = staticmethod(same_shape)

    def __call__(self, x):
        dim = _dim(self.node, self.node.attrs["dim"], x.ndim)
        return self.xp.moveaxis(softmax(self.xp, self.xp.moveaxis(x, dim, -1)), -1, dim)


@register("matmul")
class Matmul(Logical):
    """torch.matmul with broadcasting batch dims."""

    @staticmethod
    def infer_shape(node, params, a, b):
        if len(a) < 2 or len(b) < 2 or a[-1] != b[-2]:
            raise InputError(f"node {node.name!r}: cannot multiply {tuple(a)} by {tuple(b)}")
        return broadcast_shape(node, a[:-2], b[:-2]) + (a[-2], b[-1])

    @staticmethod
    def workspace(node, params, a, b):
        return 0

    def __call__(self, a, b):
        if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
            raise InputError(f"node {self.node.name!r}: cannot multiply {tuple(a.shape)} by "
                             f"{tuple(b.shape)}")
        return self.xp.matmul(a, b)


@register("cast")
class Cast(Logical):
    attrs = {"dtype": Choice(*DTYPES)}

    infer_shape = staticmethod(same_shape)

    def __call__(self, x):
        return x.astype(self.np_dtype(self.node.attrs["dtype"]), copy=False)


@register("arange")
class Arange(Logical):
    """torch.arange(start, end, step) as int64; a null bound comes from an input."""
    attrs = {"start": Int(default=0), "end": Int(default=None), "step": Int(default=1),
             "symbolic": Ints(default=(), min=0, max=1)}

    @staticmethod
    def infer_shape(node, params, *sizes):
        a = node.attrs
        bounds = _bounds(a, sizes, _size)
        if bounds[1] is None or a["step"] == 0:
            shape_error(node, "needs an end and a non-zero step")
        return (len(range(bounds[0], bounds[1], a["step"])),)

    def __call__(self, *sizes):
        a = self.node.attrs
        bounds = _bounds(a, sizes, int)
        if bounds[1] is None or a["step"] == 0:
            shape_error(self.node, "needs an end and a non-zero step")
        return self.xp.arange(bounds[0], bounds[1], a["step"], dtype=np.int64)


@register("full")
class Full(_ShapedByAttr):
    """torch.full(shape, value, dtype); null sizes come from inputs."""
    attrs = {**_ShapedByAttr.attrs, "value": Float(), "dtype": Choice(*DTYPES)}

    @staticmethod
    def infer_shape(node, params, *sizes):
        shape = _ShapedByAttr.traced_shape(node, sizes)
        if any(s < 0 for s in shape):
            raise InputError(f"node {node.name!r}: negative size in {shape}")
        return tuple(shape)

    def __call__(self, *sizes):
        shape = self.run_shape(sizes)
        if any(s < 0 for s in shape):
            raise InputError(f"node {self.node.name!r}: negative size in {shape}")
        return self.xp.full(shape, self.node.attrs["value"],
                            dtype=self.np_dtype(self.node.attrs["dtype"]))


@register("constant")
class Constant(Logical):
    """A parameter or buffer read as a value (a layer scale, a position-id buffer, ...); floats
    in the run's dtype, integers and booleans as stored."""
    params = {"value": Param()}
    integer_params = ("value",)        # graph.check_tensors: this param may hold integers

    @staticmethod
    def infer_shape(node, params):
        return tuple(params["value"])

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        key = node.params.get("value")
        if key is None:
            shape_error(node, "needs param 'value'")
        host = ctx.tensors[key]
        self.value = ctx.device(np.asarray(host, np.float64)) if host.dtype.kind == "f" \
            else ctx.xp.asarray(host)

    def __call__(self):
        return self.value

