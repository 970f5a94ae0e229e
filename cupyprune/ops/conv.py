"""conv2d as im2col + GEMM (paper formulas (1)-(2)); batch norm folded in at load.

Legend: N batch, C input channels, K output channels, kh kw kernel, M = N*OH*OW,
R = kh*kw*C taps, T kept taps. Activations are (N, H, W, C).
"""
import numpy as np

from ..errors import InputError
from ..gpu.gather import gather_columns
from ..patterns import conv_weight_to_f
from ..gpu.cuda_source import values_per_pack
from ..bf16 import from_bits, to_bits
from ..precision import is_bf16
from . import conv_implicit
from .epilogue import check_residual
from .grouped_conv import GroupedConv
from .im2col import TapPlan, TapTable, im2col_cupy, im2col_numpy, out_size
from .prunable import LAYER_PARAMS, LayerShape, PrunableOp, checked_weight_shape
from .registry import Op, need_rank, register, same_shape, shape_error
from .schema import Float, Int, Param, pair

BN_PARAMS = ("weight", "bias", "running_mean", "running_var")


def bn_scale_shift(node, ctx, channels=None):
    """batch_norm params -> per-channel (scale, shift), float64: y = x * scale + shift. Each
    param is one value per channel (`channels` of them where the conv before it says so), and
    running_var + eps is positive (a negative one made every logit NaN)."""
    gamma, beta, mean, var = (ctx.host_param(node, role) for role in BN_PARAMS)
    if channels is None:
        if gamma.ndim != 1:
            shape_error(node, f"weight has shape {gamma.shape}, expected one value per channel")
        channels = gamma.shape[0]
    for role, p in zip(BN_PARAMS, (gamma, beta, mean, var)):
        if p.shape != (channels,):
            shape_error(node, f"{role} has shape {p.shape}, expected ({channels},)")
    denominator = var + node.attrs["eps"]
    if not (denominator > 0).all():
        shape_error(node, f"running_var + eps is {float(denominator.min())} for some channel: "
                          f"must be positive")
    scale = gamma / np.sqrt(denominator)
    return scale, beta - mean * scale


@register("conv2d")
class Conv2d(PrunableOp):
    bf16_native = True                 # im2col, cuBLAS, our epilogue kernel
    attrs = {"stride": pair((1, 1), min=1), "padding": pair((0, 0)),
             "dilation": pair((1, 1), min=1),
             "groups": Int(default=1, min=1, max=1 << 16)}   # checked against the weight too
    params = LAYER_PARAMS

    weight_to_f = staticmethod(conv_weight_to_f)

    @staticmethod
    def layer_shape(node, weight_shape):
        K, C, kh, kw = checked_weight_shape(node, weight_shape, ("K", "C", "kh", "kw"))
        return LayerShape(C, K, whole_features=_pointwise(node, kh, kw),
                          gemm=node.attrs["groups"] == 1)

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.layer = ctx.weight_plan(node, Conv2d)            # checks the weight's shape
        w = ctx.host_param(node, "weight")                    # (K, C, kh, kw)
        bias = ctx.host_param(node, "bias", required=False)
        self.K, self.C, kh, kw = w.shape
        if bias is not None and bias.shape != (self.K,):
            shape_error(node, f"bias has shape {bias.shape}, expected ({self.K},)")
        a = node.attrs
        self.geometry = (kh, kw, a["stride"], a["padding"], a["dilation"])
        f = conv_weight_to_f(w)                                # (R, K)
        bn = ctx.plan_of(node).bn
        if bn is not None:                                     # fold batch norm into F and bias
            scale, shift = bn_scale_shift(bn, ctx, channels=self.K)
            f = f * scale[None, :]
            bias = (0.0 if bias is None else bias) * scale + shift
        self.groups = _groups(node, self.C, self.K)
        if self.groups > 1:
            self._build_grouped(f * self.layer.fmask, bias, ctx)
            return
        self.path = self.layer.build(f, ctx)
        self.epilogue = ctx.epilogue(node, self.layer.kept_bias(bias))
        # the channels computed: fewer than the model's where a load-time pass compacted (a
        # pre-compacted 1x1 conv reads its T kept channels as a dense 1x1 conv over T)
        self.C, self.K = self.layer.computed_widths()
        self.pointwise = _pointwise(node, kh, kw)
        taps = np.arange(kh * kw * self.C) if self.path.input_rows is None \
            else self.path.rows_host                           # kept taps, (T,)
        if ctx.xp is np:
            self.taps = TapPlan(taps, kh, kw, self.C)
        elif not self.pointwise:
            # dense and group paths hold one weight matrix: pad its rows with zeros so that
            # im2col can write a 16-byte pack of columns per thread (group rows come aligned
            # already, see paths/group.py); other paths read exactly R columns
            vec = values_per_pack(np.dtype(ctx.dtype).itemsize) if hasattr(self.path, "w") else 1
            self.taps = TapTable(taps, self.geometry, self.C, pad_to=vec)
            if self.taps.count > self.taps.kept:
                pad = ctx.xp.zeros((self.taps.count - self.taps.kept, self.K), self.path.w.dtype)
                self.path.w = ctx.xp.concatenate([self.path.w, pad])     # (T_padded, K)
        self.implicit = None          # fp16/bf16/tf32 on the GPU: implicit GEMM where faster
        if conv_implicit.applies(ctx, self.path, self.K):     # False on the CPU
            self.implicit = conv_implicit.ImplicitConv(
                taps, self.path.w[:len(taps)], self.geometry, self.C, self.epilogue,
                conv_implicit.precision_tag(ctx))                  # w rows (T, K), taps' order

    def _build_grouped(self, f, bias, ctx):
        """groups > 1: the masked weight, dense, one batched product per tap (grouped_conv.py);
        its bias and batch norm are its own, nothing else folds into it (folding.py)."""
        kh, kw = self.geometry[:2]
        w = f.reshape(kh, kw, self.C, self.K).transpose(3, 2, 0, 1)    # F -> (K, Cg, kh, kw)
        self.bf16 = is_bf16(ctx.dtype)
        dtype = np.float32 if self.bf16 else ctx.dtype
        self.grouped = GroupedConv(ctx.xp, ctx.xp.asarray(w, dtype),
                                   None if bias is None else ctx.xp.asarray(bias, dtype),
                                   self.groups, self.geometry[:2] + self.geometry[2:])
        self.path = None
        self.C *= self.groups                                  # input channels of the layer

    def _columns(self, x):
        """x (N, H, W, C) -> im2col matrix (M, T) of the taps the path reads."""
        kh, kw, (sh, sw), _, _ = self.geometry
        if self.pointwise:                        # 1x1, no padding: a strided view, no im2col
            cols = x[:, ::sh, ::sw, :].reshape(-1, self.C)          # (M, C)
            return cols if self.path.input_rows is None else gather_columns(
                cols, self.path.input_rows)
        if self.xp is np:
            return im2col_numpy(x, self.taps, self.geometry)
        return im2col_cupy(x, self.taps, self.geometry)

    def __call__(self, x, residual=None):
        N, H, W, C = x.shape
        if C != self.C:
            raise InputError(f"layer {self.node.name!r} expects {self.C} input channels, got {C}")
        kh, kw, (sh, sw), (ph, pw), (dh, dw) = self.geometry
        OH, OW = out_size(H, kh, sh, ph, dh), out_size(W, kw, sw, pw, dw)
        if OH < 1 or OW < 1:
            raise InputError(f"layer {self.node.name!r}: input {H}x{W} is too small for its "
                             f"{kh}x{kw} kernel")
        if self.groups > 1:
            if self.bf16:
                return to_bits(self.grouped(from_bits(x)))
            return self.grouped(x)
        check_residual(self.node, residual, (N, OH, OW, self.K))
        if self.implicit is not None:
            y = self.implicit(x, residual, (OH, OW), lambda: self.epilogue.after(
                self.path, self._columns(x), residual))
            if y is not None:                     # (M, K)
                return y.reshape(N, OH, OW, self.K)
        y = self.epilogue.after(self.path, self._columns(x), residual)  # (M, T) @ (T, K) -> (M, K)
        return y.reshape(N, OH, OW, self.K)       # (M, K) -> (N, OH, OW, K), no transpose

    @property
    def capturable(self):
        return self.path is None or self.path.capturable

    @staticmethod
    def infer_shape(node, params, x):
        N, C, H, W = need_rank(node, x, 4)
        K, Cw, kh, kw = need_rank(node, params["weight"], 4, "weight")
        if C != Cw * node.attrs["groups"]:
            raise InputError(f"layer {node.name!r} expects {Cw * node.attrs['groups']} input "
                             f"channels, got {C}")
        (sh, sw), (ph, pw), (dh, dw) = (node.attrs[k] for k in ("stride", "padding", "dilation"))
        OH, OW = out_size(H, kh, sh, ph, dh), out_size(W, kw, sw, pw, dw)
        if OH < 1 or OW < 1:
            raise InputError(f"layer {node.name!r}: input {H}x{W} is too small for its "
                             f"{kh}x{kw} kernel")
        return N, K, OH, OW

    @staticmethod
    def workspace(node, params, x):
        N, _, OH, OW = Conv2d.infer_shape(node, params, x)
        kh, kw = params["weight"][2:]
        (ph, pw), (_, C, H, W) = node.attrs["padding"], x
        padded = N * C * (H + 2 * ph) * (W + 2 * pw) if ph or pw else 0   # NumPy's im2col
        return N * OH * OW * kh * kw * C + padded          # the im2col matrix (M, R) at most

    def describe(self):
        kh, kw, stride, padding, _ = self.geometry
        groups = f" g{self.groups}" if self.groups > 1 else ""
        return self.layer.describe(f"{self.C}->{self.K} {kh}x{kw} s{stride[0]} p{padding[0]}"
                                   f"{groups}")


def _pointwise(node, kh, kw):
    """A 1x1 conv without padding: its im2col matrix is a strided view of the input."""
    return (kh, kw) == (1, 1) and tuple(node.attrs["padding"]) == (0, 0)


def _groups(node, C_per_group, K):
    """The `groups` attribute, checked against the weight (K, C/groups, kh, kw)."""
    groups = node.attrs["groups"]
    if K % groups:
        shape_error(node, f"groups is {groups!r}: expected a positive integer dividing the "
                          f"{K} output channels")
    return groups


@register("batch_norm")
class BatchNorm(Op):
    """Only runs when it could not be folded into the conv before it."""
    attrs = {"eps": Float(default=1e-5, min=0)}     # F.batch_norm; var + eps > 0 checked too
    params = {role: Param() for role in BN_PARAMS}
    infer_shape = staticmethod(same_shape)

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        scale, shift = bn_scale_shift(node, ctx)
        self.scale, self.shift = ctx.device(scale), ctx.device(shift)

    def __call__(self, x):
        if x.shape[-1] != self.scale.shape[0]:
            raise InputError(f"layer {self.node.name!r} normalises {self.scale.shape[0]} "
                             f"channels, got {x.shape[-1]}")
        return x * self.scale + self.shift        # channels last: broadcast over (N, H, W)
