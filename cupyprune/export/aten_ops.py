"""ATen call -> runtime graph node(s): one converter per ATen op family (lower.py's registry).

Each returns the value name standing for the call's result. Ops that only alias or copy at
inference (dropout, clone, contiguous, a device move) return their input's value.
"""
import operator

from ..ops.activation import ACTIVATIONS
from .lower import converts
from .torchlib import ExportError, import_torch

BIG = 1 << 62              # slice ends at or past this are "to the end"


def _pair(v):
    v = list(v) if isinstance(v, (list, tuple)) else [v]
    return v * 2 if len(v) == 1 else v


def _dtype_name(dtype):
    torch = import_torch()
    if dtype is None or dtype.is_floating_point:
        return "float"
    if dtype == torch.bool:
        return "bool"
    if dtype in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        return "int64"
    raise ExportError(f"dtype {dtype} is not supported")


# -- identities ------------------------------------------------------------------------------
@converts("aten.dropout.default", "aten.dropout_.default", "aten.clone.default",
          "aten.contiguous.default", "aten.alias.default", "aten.detach.default",
          "aten.lift_fresh_copy.default", "aten.feature_dropout.default",
          "aten.alpha_dropout.default")
def identity(lw, node, x, *args, **kwargs):
    return lw.value(x)


@converts("aten._assert_tensor_metadata.default", "aten._assert_scalar.default",
          "aten.sym_constrain_range_for_size.default", "aten._assert_async.msg")
def assertion(lw, node, *args, **kwargs):
    return None


@converts("aten.to.dtype", "aten.to.device", "aten.to.dtype_layout", "aten._to_copy.default",
          "aten.type_as.default")
def to(lw, node, x, *args, **kwargs):
    torch = import_torch()
    dtype = kwargs.get("dtype")
    for a in args:
        if isinstance(a, torch.dtype):
            dtype = a
    if str(node.target) == "aten.type_as.default":
        dtype = lw.meta_dtype(args[0])
    if dtype is None or dtype == lw.meta_dtype(x):
        return lw.value(x)
    return lw.emit("cast", [lw.value(x)], attrs={"dtype": _dtype_name(dtype)}, name=node.name)


# -- layers ----------------------------------------------------------------------------------
@converts("aten.conv2d.default", "aten.conv2d.padding")
def conv2d(lw, node, x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    key = lw.param(w)
    if key is None:
        raise ExportError("a convolution whose weight is computed is not supported")
    kh, kw = lw.meta_shape(w)[2:]
    dilation = _pair(dilation)
    if isinstance(padding, str):
        if padding == "valid":
            padding = [0, 0]
        elif _pair(stride) == [1, 1] and all((d * (k - 1)) % 2 == 0
                                             for d, k in zip(dilation, (kh, kw))):
            padding = [d * (k - 1) // 2 for d, k in zip(dilation, (kh, kw))]
        else:
            raise ExportError("padding='same' with an even kernel is not supported")
    params = {"weight": key}
    if b is not None:
        params["bias"] = lw.param(b)
    return lw.emit("conv2d", [lw.value(x)], params=params, name=node.name, attrs={
        "stride": _pair(stride), "padding": _pair(padding), "dilation": dilation,
        "groups": int(groups)})


@converts("aten.linear.default")
def linear(lw, node, x, w, b=None):
    key = lw.param(w)
    if key is None:
        raise ExportError("a linear layer whose weight is computed is not supported")
    params = {"weight": key}
    if b is not None:
        params["bias"] = lw.param(b)
    return lw.emit("linear", [lw.value(x)], params=params, name=node.name)


@converts("aten.batch_norm.default")
def batch_norm(lw, node, x, w, b, mean, var, training=False, momentum=0.1, eps=1e-5, *rest):
    keys = [lw.param(t) for t in (w, b, mean, var)]
    if None in keys:
        raise ExportError("batch norm without affine parameters or running statistics "
                          "is not supported")
    return lw.emit("batch_norm", [lw.value(x)], name=node.name, attrs={"eps": float(eps)},
                   params=dict(zip(("weight", "bias", "running_mean", "running_var"), keys)))


@converts("aten.layer_norm.default")
def layer_norm(lw, node, x, shape, w=None, b=None, eps=1e-5, *rest):
    if len(shape) != 1 or w is None or b is None:
        raise ExportError("layer norm over more than the last dim, or without weight and "
                          "bias, is not supported")
    return lw.emit("layer_norm", [lw.value(x)], name=node.name, attrs={"eps": float(eps)},
                   params={"weight": lw.param(w), "bias": lw.param(b)})


@converts("aten.embedding.default")
def embedding(lw, node, w, ids, padding_idx=-1, *rest):
    return lw.emit("embedding", [lw.value(ids)], params={"weight": lw.param(w)}, name=node.name)


@converts("aten.scaled_dot_product_attention.default")
def sdpa(lw, node, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
         enable_gqa=False):
    inputs = [lw.value(t) for t in (q, k, v)] + ([lw.value(attn_mask)] if attn_mask is not None
                                                 else [])
    return lw.emit("scaled_dot_product_attention", inputs, name=node.name,
                   attrs={"scale": scale, "is_causal": bool(is_causal)})


# -- pooling ---------------------------------------------------------------------------------
@converts("aten.max_pool2d.default")
def max_pool2d(lw, node, x, kernel, stride=(), padding=0, dilation=1, ceil_mode=False):
    if ceil_mode or _pair(dilation) != [1, 1]:
        raise ExportError("max pooling with ceil_mode or dilation is not supported")
    return lw.emit("max_pool2d", [lw.value(x)], name=node.name, attrs={
        "kernel": _pair(kernel), "stride": _pair(stride or kernel), "padding": _pair(padding)})


@converts("aten.avg_pool2d.default")
def avg_pool2d(lw, node, x, kernel, stride=(), padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    if ceil_mode or divisor_override is not None:
        raise ExportError("average pooling with ceil_mode or divisor_override is not supported")
    return lw.emit("avg_pool2d", [lw.value(x)], name=node.name, attrs={
        "kernel": _pair(kernel), "stride": _pair(stride or kernel), "padding": _pair(padding),
        "count_include_pad": bool(count_include_pad)})


@converts("aten.adaptive_avg_pool2d.default")
def adaptive_avg_pool2d(lw, node, x, size):
    return lw.emit("adaptive_avg_pool2d", [lw.value(x)], name=node.name,
                   attrs={"output_size": _pair(size)})


# -- activations -----------------------------------------------------------------------------
# aten name -> runtime op: every activation without attrs (ops/activation.py's one list) under
# its own name and its in-place form; bitwise_not (of bools, in traced masks) is logical_not
_UNARY = {**{aten: name for name, act in ACTIVATIONS.items() if not act.attrs
             for aten in (name, name + "_")},
          "bitwise_not": "logical_not"}


@converts(*(f"aten.{name}.default" for name in _UNARY))
def unary(lw, node, x):
    return lw.emit(_UNARY[str(node.target).split(".")[1]], [lw.value(x)], name=node.name)


@converts("aten.gelu.default", "aten.gelu_.default")
def gelu(lw, node, x, approximate="none"):
    return lw.emit("gelu", [lw.value(x)], name=node.name, attrs={"approximate": approximate})


@converts("aten.hardtanh.default", "aten.hardtanh_.default", "aten.clamp.default",
          "aten.clamp_.default", "aten.relu6.default", "aten.relu6_.default")
def hardtanh(lw, node, x, lo=None, hi=None):
    op = str(node.target).split(".")[1].rstrip("_")
    if op == "relu6":
        lo, hi = 0.0, 6.0
    elif op == "hardtanh":
        lo, hi = (-1.0 if lo is None else lo), (1.0 if hi is None else hi)
    return lw.emit("hardtanh", [lw.value(x)], name=node.name, attrs={
        "min_val": float(-3.4e38 if lo is None else lo), "max_val": float(3.4e38 if hi is None
                                                                          else hi)})


# -- arithmetic ------------------------------------------------------------------------------
_BINARY = {"add": "broadcast_add", "sub": "sub", "mul": "mul", "div": "div", "pow": "pow",
           "eq": "eq", "ne": "ne", "lt": "lt", "le": "le", "gt": "gt", "ge": "ge",
           "__and__": "logical_and", "bitwise_and": "logical_and", "logical_and": "logical_and",
           "__or__": "logical_or", "bitwise_or": "logical_or", "logical_or": "logical_or",
           "maximum": "maximum", "minimum": "minimum", "rsub": "sub"}


@converts(*(f"aten.{n}{inplace}.{overload}" for n in _BINARY for inplace in ("", "_")
            for overload in ("Tensor", "Scalar", "Tensor_Scalar")),
          "aten.maximum.default", "aten.minimum.default")
def binary(lw, node, a, b, alpha=1, rounding_mode=None):
    name = str(node.target).split(".")[1]
    if name.endswith("_") and not name.startswith("__"):
        name = name[:-1]                                    # in place: the same result
    if rounding_mode is not None:
        raise ExportError("division with a rounding mode is not supported")
    if alpha != 1:
        if not hasattr(b, "op"):
            b = b * alpha
        else:
            b = lw.emit("mul", [lw.value(b)], attrs={"scalar": float(alpha)},
                        name=node.name + ".alpha")
            return _binary(lw, node, name, lw.value(a), b)
    reverse = name == "rsub"
    if not hasattr(a, "op"):                                 # scalar op tensor
        a, b, reverse = b, a, True
    if not hasattr(b, "op"):
        return lw.emit(_BINARY[name], [lw.value(a)], name=node.name,
                       attrs={"scalar": float(b), "scalar_first": reverse})
    return _binary(lw, node, name, lw.value(a), lw.value(b), a, b)


def _binary(lw, node, name, va, vb, a=None, b=None):
    same = a is not None and lw.meta_shape(a) == lw.meta_shape(b) and \
        lw.param(a) is None and lw.param(b) is None
    op = "add" if name == "add" and same else _BINARY[name]
    return lw.emit(op, [va, vb], name=node.name)


@converts("aten.where.self", "aten.masked_fill.Scalar", "aten.masked_fill_.Scalar",
          "aten.masked_fill.Tensor")
def where(lw, node, a, b, c):
    if str(node.target).startswith("aten.masked_fill"):       # x.masked_fill(mask, v)
        x, mask, fill = a, b, c
        if hasattr(fill, "op"):
            return lw.emit("where", [lw.value(mask), lw.value(fill), lw.value(x)],
                           name=node.name)
        return lw.emit("where", [lw.value(mask), lw.value(x)], name=node.name,
                       attrs={"scalar": float(fill)})
    return lw.emit("where", [lw.value(a), lw.value(b), lw.value(c)], name=node.name)


# -- shapes ----------------------------------------------------------------------------------
@converts("aten.view.default", "aten.reshape.default", "aten._unsafe_view.default")
def reshape(lw, node, x, shape):
    template, extra = lw.sizes(shape)
    return lw.emit("reshape", [lw.value(x)] + extra, name=node.name, attrs={"shape": template})


@converts("aten.expand.default")
def expand(lw, node, x, shape, implicit=False):
    template, extra = lw.sizes(shape)
    return lw.emit("expand", [lw.value(x)] + extra, name=node.name, attrs={"shape": template})


@converts("aten.flatten.using_ints")
def flatten(lw, node, x, start=0, end=-1):
    return lw.emit("flatten", [lw.value(x)], name=node.name,
                   attrs={"start_dim": int(start), "end_dim": int(end)})


@converts("aten.permute.default")
def permute(lw, node, x, dims):
    return lw.emit("permute", [lw.value(x)], name=node.name, attrs={"dims": list(dims)})


@converts("aten.transpose.int", "aten.t.default", "aten.swapaxes.default")
def transpose(lw, node, x, d0=0, d1=1):
    rank = len(lw.meta_shape(x))
    dims = list(range(rank))
    d0, d1 = d0 % max(rank, 1), d1 % max(rank, 1)
    dims[d0], dims[d1] = dims[d1], dims[d0]
    return lw.emit("permute", [lw.value(x)], name=node.name, attrs={"dims": dims})


@converts("aten.unsqueeze.default", "aten.squeeze.dim", "aten.squeeze.dims",
          "aten.squeeze.default", "aten.unflatten.int")
def unsqueeze(lw, node, x, *args):
    """Ops that only regroup dims: a reshape to the traced output shape."""
    out = lw.meta_shape(node)
    template, extra = lw.sizes(out)
    return lw.emit("reshape", [lw.value(x)] + extra, name=node.name, attrs={"shape": template})


@converts("aten.pad.default", "aten.constant_pad_nd.default")
def pad(lw, node, x, pads, mode="constant", value=None):
    if mode != "constant":
        raise ExportError(f"padding mode {mode!r} is not supported")
    return lw.emit("pad", [lw.value(x)], name=node.name,
                   attrs={"pads": list(pads), "value": float(value or 0.0)})


@converts("aten.roll.default")
def roll(lw, node, x, shifts, dims=()):
    return lw.emit("roll", [lw.value(x)], name=node.name,
                   attrs={"shifts": list(shifts), "dims": list(dims)})


@converts("aten.cat.default", "aten.concat.default")
def cat(lw, node, tensors, dim=0):
    return lw.emit("cat", [lw.value(t) for t in tensors], name=node.name, attrs={"dim": dim})


def _bounds(lw, attrs, start, end):
    """start and end of a slice or arange into `attrs` (start 0 and end None unless given; an end
    at or past BIG is "to the end"); a symbolic one is listed in attrs['symbolic'] (0: start,
    1: end) and its value returned among the extra inputs."""
    attrs.update(start=0, end=None)
    symbolic, extra = [], []
    for which, (key, v) in enumerate((("start", start), ("end", end))):
        if hasattr(v, "op"):
            symbolic.append(which)
            extra.append(lw.value(v))
        elif v is not None and abs(v) < BIG:
            attrs[key] = int(v)
    if symbolic:
        attrs["symbolic"] = symbolic
    return extra


@converts("aten.slice.Tensor")
def slice_(lw, node, x, dim=0, start=None, end=None, step=1):
    attrs = {"dim": dim, "step": step}
    extra = _bounds(lw, attrs, start, end)
    if attrs["start"] == 0 and attrs["end"] is None and step == 1 and not extra:
        return lw.value(x)
    return lw.emit("slice", [lw.value(x)] + extra, name=node.name, attrs=attrs)


@converts("aten.select.int")
def select(lw, node, x, dim, index):
    return lw.emit("select", [lw.value(x)], name=node.name, attrs={"dim": dim, "index": index})


@converts("aten.index.Tensor")
def index(lw, node, x, indices):
    axes = [i for i, ix in enumerate(indices) if ix is not None]
    if axes != list(range(axes[0], axes[0] + len(axes))):
        raise ExportError("indexing with tensors on non-adjacent dims is not supported")
    return lw.emit("index", [lw.value(x)] + [lw.value(indices[i]) for i in axes],
                   name=node.name, attrs={"axes": axes})


@converts("aten.mean.dim", "aten.sum.dim_IntList")
def reduce(lw, node, x, dims, keepdim=False, dtype=None):
    op = "mean" if str(node.target).startswith("aten.mean") else "sum"
    dims = list(dims) if dims is not None else list(range(len(lw.meta_shape(x))))
    return lw.emit(op, [lw.value(x)], name=node.name, attrs={"dims": dims,
                                                             "keepdim": bool(keepdim)})


@converts("aten.cumsum.default")
def cumsum(lw, node, x, dim, dtype=None):
    return lw.emit("cumsum", [lw.value(x)], name=node.name, attrs={"dim": dim})


@converts("aten.softmax.int", "aten._softmax.default")
def softmax(lw, node, x, dim, dtype=None):
    return lw.emit("softmax", [lw.value(x)], name=node.name, attrs={"dim": dim})


@converts("aten.matmul.default", "aten.bmm.default", "aten.mm.default")
def matmul(lw, node, a, b):
    return lw.emit("matmul", [lw.value(a), lw.value(b)], name=node.name)


# -- creation and sizes ----------------------------------------------------------------------
@converts("aten.arange.default", "aten.arange.start", "aten.arange.start_step")
def arange(lw, node, *args, **kwargs):
    bounds = list(args) if len(args) > 1 else [0, args[0]]
    start, end = bounds[0], bounds[1]
    step = bounds[2] if len(bounds) > 2 else 1
    attrs = {"step": int(step)}
    extra = _bounds(lw, attrs, start, end)
    return lw.emit("arange", extra, name=node.name, attrs=attrs)


@converts("aten.full.default", "aten.new_ones.default", "aten.new_zeros.default",
          "aten.new_full.default", "aten.ones.default", "aten.zeros.default")
def full(lw, node, *args, **kwargs):
    op = str(node.target).split(".")[1]
    if op.startswith("new_"):
        like, args = args[0], args[1:]
        kwargs.setdefault("dtype", lw.meta_dtype(like))
    shape, value = args[0], {"ones": 1.0, "zeros": 0.0}.get(op.replace("new_", ""))
    if value is None:
        value = args[1]
    template, extra = lw.sizes(shape)
    return lw.emit("full", extra, name=node.name, attrs={
        "shape": template, "value": float(value), "dtype": _dtype_name(kwargs.get("dtype"))})


@converts("aten.sym_size.int")
def sym_size(lw, node, x, dim):
    return lw.emit("sym_size", [lw.value(x)], name=node.name, attrs={"dim": dim})


_INT_OPS = {operator.mul: "mul", operator.add: "add", operator.sub: "sub",
            operator.floordiv: "floordiv"}


@converts(*(str(f) for f in _INT_OPS))
def int_arith(lw, node, a, b):
    op = _INT_OPS[node.target]
    if not hasattr(a, "op"):
        if op in ("sub", "floordiv"):
            raise ExportError(f"size arithmetic {a} {op} <size> is not supported")
        a, b = b, a
    if hasattr(b, "op"):
        return lw.emit("int_arith", [lw.value(a), lw.value(b)], name=node.name,
                       attrs={"op": op})
    return lw.emit("int_arith", [lw.value(a)], name=node.name, attrs={"op": op, "value": int(b)})


@converts(str(operator.getitem))
def getitem(lw, node, values, i):
    got = lw.value(values)
    if not isinstance(got, tuple):
        raise ExportError("indexing a single value as a tuple")
    return got[i]
