"""Pooling on channels-last activations (N, H, W, C), one strided slice per kernel position."""
from ..errors import InputError
from .im2col import out_size
from .registry import Op, attr_pair, register


def _windows(xp, x, kernel, stride, padding, fill):
    """Yield the (N, OH, OW, C) strided slices of padded x, one per kernel position."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    N, H, W, C = x.shape
    OH, OW = out_size(H, kh, sh, ph, 1), out_size(W, kw, sw, pw, 1)
    if OH < 1 or OW < 1:
        raise InputError(f"input {H}x{W} is too small for a {kh}x{kw} pooling window")
    if ph or pw:
        x = xp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)), constant_values=fill)
    for i in range(kh):
        for j in range(kw):
            yield x[:, i: i + sh * (OH - 1) + 1: sh, j: j + sw * (OW - 1) + 1: sw, :]


class _Pool(Op):
    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.kernel = attr_pair(node, "kernel", minimum=1)
        self.stride = attr_pair(node, "stride", minimum=1) if node.attrs.get("stride") \
            else self.kernel
        self.padding = attr_pair(node, "padding", 0)


@register("max_pool2d")
class MaxPool2d(_Pool):
    def __call__(self, x):
        out = None
        for w in _windows(self.xp, x, self.kernel, self.stride, self.padding, float("-inf")):
            if out is None:
                out = w.copy()
            else:
                self.xp.maximum(out, w, out=out)
        return out


@register("avg_pool2d")
class AvgPool2d(_Pool):
    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.count_include_pad = bool(node.attrs.get("count_include_pad", True))

    def _window_sum(self, x):
        total = None
        for w in _windows(self.xp, x, self.kernel, self.stride, self.padding, 0):
            if total is None:
                total = w.copy()
            else:
                total += w
        return total

    def __call__(self, x):
        total = self._window_sum(x)
        if self.count_include_pad or self.padding == (0, 0):
            return total / (self.kernel[0] * self.kernel[1])
        ones = self.xp.ones((1,) + x.shape[1:3] + (1,), dtype=x.dtype)
        return total / self._window_sum(ones)     # windows clipped to the unpadded input


def _bins(size, out):
    """PyTorch's adaptive pooling bins: [floor(i*size/out), ceil((i+1)*size/out))."""
    return [((i * size) // out, -((-(i + 1) * size) // out)) for i in range(out)]


@register("adaptive_avg_pool2d")
class AdaptiveAvgPool2d(Op):
    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.output_size = attr_pair(node, "output_size", minimum=1)

    def __call__(self, x):
        N, H, W, C = x.shape
        OH, OW = self.output_size
        if (H, W) == (OH, OW):
            return x
        if H % OH == 0 and W % OW == 0:            # equal bins: one reshape and mean
            return x.reshape(N, OH, H // OH, OW, W // OW, C).mean(axis=(2, 4))
        out = self.xp.empty((N, OH, OW, C), dtype=x.dtype)
        for oi, (h0, h1) in enumerate(_bins(H, OH)):
            for oj, (w0, w1) in enumerate(_bins(W, OW)):
                out[:, oi, oj, :] = x[:, h0:h1, w0:w1, :].mean(axis=(1, 2))
        return out
