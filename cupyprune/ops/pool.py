"""Pooling on channels-last activations (N, H, W, C): one strided slice per kernel position, and
on the GPU max pooling as one kernel (the slices took 4 launches per 2x2 pool, 10 for ResNet's
padded 3x3 one, each a pass over the activations)."""
import numpy as np

from ..errors import InputError
from ..gpu.cuda_source import STORAGE_TYPES, compile_kernel, storage_type, type_tag
from ..bf16 import from_bits, to_bits
from ..precision import is_bf16
from .im2col import out_size
from .registry import Op, attr_pair, register

_GPU_KERNELS = {}
_MAX_POOL_SOURCE = r"""
// y (N, OH, OW, C) = the max of x (N, H, W, C) over each window; padding is never the max.
// One thread per output value, consecutive threads along C (coalesced reads and writes).
extern "C" __global__ void %(name)s(const %(T)s* x, %(T)s* y, int total, int H, int W, int C,
                                    int OH, int OW, int kh, int kw, int sh, int sw, int ph,
                                    int pw) {
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    int c = idx %% C, t = idx / C;
    int ow = t %% OW;
    t /= OW;
    int oh = t %% OH, n = t / OH;
    int h0 = oh * sh - ph, w0 = ow * sw - pw;
    float m = __int_as_float(0xff800000);          // -inf
    for (int i = 0; i < kh; ++i) {
        int h = h0 + i;
        if (h < 0 || h >= H) continue;
        for (int j = 0; j < kw; ++j) {
            int w = w0 + j;
            if (w >= 0 && w < W) m = fmaxf(m, to_f(x[((size_t)(n * H + h) * W + w) * C + c]));
        }
    }
    store_f(y + idx, m);
}
"""


def _max_pool_source(T):
    name = f"cupyprune_max_pool_{type_tag(T)}"
    return name, _MAX_POOL_SOURCE % {"T": T, "name": name}


def kernel_sources():
    """(name, CUDA source) of every kernel this module can compile (for an NVRTC check)."""
    for T in STORAGE_TYPES:
        yield _max_pool_source(T)


def _out_hw(x, kernel, stride, padding):
    """x (N, H, W, C) -> (OH, OW) of the pooled output; an InputError when no window fits."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    H, W = x.shape[1:3]
    OH, OW = out_size(H, kh, sh, ph, 1), out_size(W, kw, sw, pw, 1)
    if OH < 1 or OW < 1:
        raise InputError(f"input {H}x{W} is too small for a {kh}x{kw} pooling window")
    return OH, OW


def _gpu_max_pool(x, kernel, stride, padding):
    """x (N, H, W, C) CuPy -> (N, OH, OW, C), one launch."""
    import cupy
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    N, H, W, C = x.shape
    OH, OW = _out_hw(x, kernel, stride, padding)
    x = cupy.ascontiguousarray(x)
    y = cupy.empty((N, OH, OW, C), dtype=x.dtype)
    T = storage_type(x.dtype)
    k = compile_kernel(_GPU_KERNELS, T, lambda: _max_pool_source(T))
    threads = 256
    k((-(-y.size // threads),), (threads,),
      (x, y, *(np.int32(v) for v in (y.size, H, W, C, OH, OW, kh, kw, sh, sw, ph, pw))))
    return y


def _windows(xp, x, kernel, stride, padding, fill):
    """Yield the (N, OH, OW, C) strided slices of padded x, one per kernel position."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    OH, OW = _out_hw(x, kernel, stride, padding)
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
    bf16_native = True                 # our kernel; the fallback widens bf16 itself

    def __call__(self, x):
        if self.xp is not np and x.size < 2 ** 31:          # the kernel indexes with int
            return _gpu_max_pool(x, self.kernel, self.stride, self.padding)
        if is_bf16(x.dtype):                                # CuPy compares bits as integers
            return to_bits(self._max_of_windows(from_bits(x)))
        return self._max_of_windows(x)

    def _max_of_windows(self, x):
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
