"""Adaptive average pooling of channels-last activations, one kernel: each output value averages
its bin of the input, the bins PyTorch's adaptive_avg_pool2d uses (rows floor(o H / OH) up to
ceil((o + 1) H / OH), columns likewise), accumulated in float.

Where bins overlap or differ in size the NumPy path multiplies by two bin-mean matrices
(ops/pool.py); on the GPU CuPy's tensordot calls cuBLAS, which CuPy refuses inside CUDA-graph
capture, so a model with such a pool (VGG's 7x7 pool after a 2x2 map) ran eagerly. This kernel
reads each input value once per bin holding it and launches once, inside a captured graph.

Legend: N batch, H W input size, OH OW output size, C channels.
"""
_KERNEL = None

_BODY = r"""
    const ptrdiff_t c = i % C;
    ptrdiff_t r = i / C;
    const int ow = r % OW; r /= OW;
    const int oh = r % OH;
    const ptrdiff_t n = r / OH;
    const int h0 = (oh * H) / OH, h1 = ((oh + 1) * H + OH - 1) / OH;
    const int w0 = (ow * W) / OW, w1 = ((ow + 1) * W + OW - 1) / OW;
    float s = 0.f;
    for (int h = h0; h < h1; ++h)
        for (int w = w0; w < w1; ++w)
            s += (float)x[((n * H + h) * W + w) * C + c];
    y = (T)(s / (float)((h1 - h0) * (w1 - w0)));
"""


def adaptive_avg_pool_nhwc(x, OH, OW):
    """x (N, H, W, C), a float CuPy array -> (N, OH, OW, C) of its bins' means."""
    global _KERNEL
    import cupy
    if _KERNEL is None:
        _KERNEL = cupy.ElementwiseKernel(
            "raw T x, int32 H, int32 W, int32 C, int32 OH, int32 OW", "T y", _BODY,
            "cupyprune_adaptive_avg_pool_nhwc")
    N, H, W, C = x.shape
    y = cupy.empty((N, OH, OW, C), dtype=x.dtype)
    _KERNEL(cupy.ascontiguousarray(x), H, W, C, OH, OW, y)
    return y
