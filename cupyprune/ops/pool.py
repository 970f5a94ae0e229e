"""Pooling on channels-last activations (N, H, W, C): windows reduced along W then H, each in
log2(kernel) strided passes, and on the GPU max pooling as one kernel (the slices took 4 launches
per 2x2 pool, 10 for ResNet's padded 3x3 one, each a pass over the activations).
Adaptive average pooling with unequal bins: on the GPU one kernel (gpu/adaptive_pool.py), on the
CPU two products with bin-mean matrices."""
import numpy as np

from ..errors import InputError
from ..gpu.adaptive_pool import adaptive_avg_pool_nhwc
from ..gpu.cuda_source import STORAGE_TYPES, compile_kernel, storage_type, type_tag
from ..bf16 import from_bits, to_bits
from ..precision import is_bf16
from .im2col import out_size
from .registry import Op, need_rank, register
from .schema import Bool, pair

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
    """x (N, H, W, C) or its shape -> (OH, OW) of the pooled output; an InputError when no
    window fits."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    H, W = getattr(x, "shape", x)[1:3]
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


def _reduce_windows(xp, x, axis, k, stride, count, combine):
    """The `combine` (maximum or add) of `count` windows of k values along `axis` of x, the
    windows starting at 0, stride, 2*stride, ... -> x with that axis of length `count`.

    A window of k is cut into power-of-two blocks (k's binary digits), and blocks of 2p values
    are combined from blocks of p: log2(k) passes over x, not k, so that a 3000-wide window costs
    about 12 passes."""
    def part(a, start):             # a[start::stride] along axis, `count` of them
        index = [slice(None)] * a.ndim
        index[axis] = slice(start, start + stride * (count - 1) + 1, stride)
        return a[tuple(index)]

    def shifted(a, lo, hi):         # a[lo:hi] along axis
        index = [slice(None)] * a.ndim
        index[axis] = slice(lo, hi)
        return a[tuple(index)]

    blocks, width, offset, out = x, 1, 0, None          # blocks[i]: combine of x[i:i+width]
    while True:
        if k & width:
            piece = part(blocks, offset)
            out = piece.copy() if out is None else combine(out, piece, out=out)
            offset += width
        if 2 * width > k:
            return out
        n = blocks.shape[axis] - width                  # blocks of 2*width values
        blocks = combine(shifted(blocks, 0, n), shifted(blocks, width, width + n))
        width *= 2


def _pool(xp, x, kernel, stride, padding, fill, combine):
    """x (N, H, W, C) -> (N, OH, OW, C), each output the `combine` of its window; padding holds
    `fill`. Windows are rectangles, so this reduces along W, then along H."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    OH, OW = _out_hw(x, kernel, stride, padding)
    if ph or pw:
        x = xp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)), constant_values=fill)
    rows = _reduce_windows(xp, x, 2, kw, sw, OW, combine)           # (N, H+2ph, OW, C)
    return _reduce_windows(xp, rows, 1, kh, sh, OH, combine)        # (N, OH, OW, C)


def _padding_within_half_kernel(attrs):
    """F.max_pool2d and F.avg_pool2d refuse padding over half the kernel (a window could hold
    padding only: -inf or a divide by zero)."""
    (kh, kw), (ph, pw) = attrs["kernel"], attrs["padding"]
    if 2 * ph > kh or 2 * pw > kw:
        return (f"attribute 'padding' is {list(attrs['padding'])}, more than half the kernel "
                f"{list(attrs['kernel'])} (PyTorch refuses it too)")
    return None


class _Pool(Op):
    attrs = {"kernel": pair(min=1), "stride": pair(default=None, min=1),  # None: the kernel
             "padding": pair((0, 0))}
    params = {}
    attr_relations = staticmethod(_padding_within_half_kernel)

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.kernel, self.padding = node.attrs["kernel"], node.attrs["padding"]
        self.stride = node.attrs["stride"] or self.kernel

    @staticmethod
    def infer_shape(node, params, x):
        N, C, H, W = need_rank(node, x, 4)
        a = node.attrs
        kernel, padding = a["kernel"], a["padding"]
        OH, OW = _out_hw((N, H, W, C), kernel, a["stride"] or kernel, padding)
        return N, C, OH, OW

    @staticmethod
    def workspace(node, params, x):
        N, C, H, W = x
        (ph, pw), OW = node.attrs["padding"], _Pool.infer_shape(node, params, x)[3]
        padded = N * C * (H + 2 * ph) * (W + 2 * pw)
        return 2 * padded + N * C * (H + 2 * ph) * OW      # padded input, its blocks, rows


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
        return _pool(self.xp, x, self.kernel, self.stride, self.padding, float("-inf"),
                     self.xp.maximum)


@register("avg_pool2d")
class AvgPool2d(_Pool):
    attrs = {**_Pool.attrs, "count_include_pad": Bool(default=True)}

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.count_include_pad = node.attrs["count_include_pad"]

    def _window_sum(self, x):
        return _pool(self.xp, x, self.kernel, self.stride, self.padding, 0, self.xp.add)

    def __call__(self, x):
        total = self._window_sum(x)
        if self.count_include_pad or self.padding == (0, 0):
            return total / (self.kernel[0] * self.kernel[1])
        ones = self.xp.ones((1,) + x.shape[1:3] + (1,), dtype=x.dtype)
        return total / self._window_sum(ones)     # windows clipped to the unpadded input


def _bin_means(size, out, dtype):
    """PyTorch's adaptive pooling bins [floor(i*size/out), ceil((i+1)*size/out)) as a NumPy
    matrix (out, size) whose row i averages bin i."""
    i = np.arange(out)
    begin, end = (i * size) // out, -((-(i + 1) * size) // out)
    at = np.arange(size)
    inside = (at >= begin[:, None]) & (at < end[:, None])                 # (out, size)
    return (inside / (end - begin)[:, None]).astype(dtype)


@register("adaptive_avg_pool2d")
class AdaptiveAvgPool2d(Op):
    attrs = {"output_size": pair(min=1)}
    params = {}

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.output_size = node.attrs["output_size"]

    @staticmethod
    def infer_shape(node, params, x):
        N, C, _, _ = need_rank(node, x, 4)
        return (N, C, *node.attrs["output_size"])

    @staticmethod
    def workspace(node, params, x):
        N, C, H, W = x
        OH, OW = node.attrs["output_size"]
        return N * C * OH * W + OH * H + OW * W            # rows pooled, the two bin matrices

    def __call__(self, x):
        N, H, W, C = x.shape
        OH, OW = self.output_size
        if (H, W) == (OH, OW):
            return x
        if H % OH == 0 and W % OW == 0:            # equal bins: one reshape and mean
            return x.reshape(N, OH, H // OH, OW, W // OW, C).mean(axis=(2, 4))
        if self.xp is not np:                       # one kernel, capturable (no cuBLAS)
            return adaptive_avg_pool_nhwc(x, OH, OW)
        # bins overlap or differ in size: two products with bin-mean matrices, one per axis
        down = _bin_means(H, OH, x.dtype)                                    # (OH, H)
        across = _bin_means(W, OW, x.dtype)                                  # (OW, W)
        rows = np.tensordot(down, x, axes=(1, 1))                            # (OH, N, W, C)
        out = np.tensordot(across, rows, axes=(1, 2))                        # (OW, OH, N, C)
        return np.ascontiguousarray(out.transpose(2, 1, 0, 3))                # (N, OH, OW, C)
