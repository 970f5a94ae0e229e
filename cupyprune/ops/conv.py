"""conv2d as im2col + GEMM (paper formulas (1)-(2)); batch norm folded in at load.

Legend: N batch, C input channels, K output channels, kh kw kernel, M = N*OH*OW,
R = kh*kw*C taps, T kept taps. Activations are (N, H, W, C).
"""
import numpy as np

from ..errors import InputError
from ..gpu.gather import gather_columns
from ..patterns import conv_weight_to_f
from ..gpu.cuda_source import values_per_pack
from ..precision import is_bf16
from . import conv_implicit
from .epilogue import check_residual
from .im2col import TapPlan, TapTable, im2col_cupy, im2col_numpy, out_size
from .prunable import PrunableWeight
from .registry import Op, attr_pair, register, shape_error

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
    eps = node.attrs.get("eps", 1e-5)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 <= eps < np.inf:
        shape_error(node, f"eps is {eps!r}: expected a non-negative number")
    denominator = var + float(eps)
    if not (denominator > 0).all():
        shape_error(node, f"running_var + eps is {float(denominator.min())} for some channel: "
                          f"must be positive")
    scale = gamma / np.sqrt(denominator)
    return scale, beta - mean * scale


@register("conv2d")
class Conv2d(Op):
    prunable = True
    bf16_native = True                 # im2col, cuBLAS, our epilogue kernel

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        w = ctx.host_param(node, "weight")                    # (K, C, kh, kw)
        if w.ndim != 4 or 0 in w.shape:
            shape_error(node, f"weight must be 4-D (K, C, kh, kw) and not empty, got shape "
                              f"{w.shape}")
        if node.attrs.get("groups", 1) != 1:
            shape_error(node, "grouped convolution is not supported")
        bias = ctx.host_param(node, "bias", required=False)
        self.K, self.C, kh, kw = w.shape
        if bias is not None and bias.shape != (self.K,):
            shape_error(node, f"bias has shape {bias.shape}, expected ({self.K},)")
        self.geometry = (kh, kw, attr_pair(node, "stride", 1, minimum=1),
                         attr_pair(node, "padding", 0), attr_pair(node, "dilation", 1, minimum=1))
        f = conv_weight_to_f(w)                                # (R, K)
        self.layer = PrunableWeight(node, ctx, f, conv_weight_to_f)
        bn = ctx.fold.get(node.name)
        if bn is not None:                                     # fold batch norm into F and bias
            scale, shift = bn_scale_shift(bn, ctx, channels=self.K)
            f = f * scale[None, :]
            bias = (0.0 if bias is None else bias) * scale + shift
        self.path = self.layer.build(f, ctx)
        self.epilogue = ctx.epilogue(node, bias)
        self.pointwise = (kh, kw) == (1, 1) and self.geometry[3] == (0, 0)
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
        self.implicit = None               # fp16/bf16 on the GPU: implicit GEMM where faster
        if ctx.xp is not np and conv_implicit.applies(ctx, self.path, self.K):
            self.implicit = conv_implicit.ImplicitConv(
                taps, self.path.w[:len(taps)], self.geometry, self.C, self.epilogue,
                "bf16" if is_bf16(ctx.dtype) else "fp16")          # w rows (T, K), taps' order

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
        return self.path.capturable

    def describe(self):
        kh, kw, stride, padding, _ = self.geometry
        return {**self.layer.describe(),
                "detail": f"{self.C}->{self.K} {kh}x{kw} s{stride[0]} p{padding[0]}"}


@register("batch_norm")
class BatchNorm(Op):
    """Only runs when it could not be folded into the conv before it."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        scale, shift = bn_scale_shift(node, ctx)
        self.scale, self.shift = ctx.device(scale), ctx.device(shift)

    def __call__(self, x):
        if x.shape[-1] != self.scale.shape[0]:
            raise InputError(f"layer {self.node.name!r} normalises {self.scale.shape[0]} "
                             f"channels, got {x.shape[-1]}")
        return x * self.scale + self.shift        # channels last: broadcast over (N, H, W)
