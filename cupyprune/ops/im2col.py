"""im2col in channels-last layout, building only the requested columns (taps).

Legend: N batch, H W input size, C channels, OH OW output size, kh kw kernel, M = N*OH*OW,
R = kh*kw*C all taps, T kept taps. Tap index t = (i*kw + j)*C + c (docs/FORMAT.md).
Building only the kept taps, rather than the full matrix and then a gather, is what makes the
group-wise conv cheap (paper Fig. 13; shared notes: 1.5x faster on the H100).
"""
import numpy as np


def out_size(size, k, stride, pad, dilation):
    return (size + 2 * pad - dilation * (k - 1) - 1) // stride + 1


class TapPlan:
    """Kept taps grouped by kernel position, for the NumPy builder: a list of
    (i, j, channels, col_begin, col_end), channels a slice when all C are kept."""

    def __init__(self, taps, kh, kw, C):
        taps = np.arange(kh * kw * C) if taps is None else np.asarray(taps)
        self.count = int(taps.size)
        self.groups = []
        ij_of = taps // C
        for ij in np.unique(ij_of):
            cols = np.flatnonzero(ij_of == ij)
            chans = taps[cols] - ij * C
            if chans.size == C:
                chans = slice(None)
            self.groups.append((int(ij) // kw, int(ij) % kw, chans, int(cols[0]), int(cols[-1]) + 1))


def im2col_numpy(x, plan, geometry):
    """x (N, H, W, C) -> (M, T), columns in tap order."""
    kh, kw, (sh, sw), (ph, pw), (dh, dw) = geometry
    N, H, W, C = x.shape
    OH, OW = out_size(H, kh, sh, ph, dh), out_size(W, kw, sw, pw, dw)
    xp_ = np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0))) if ph or pw else x
    cols = np.empty((N, OH, OW, plan.count), dtype=x.dtype)
    for i, j, chans, a, b in plan.groups:
        window = xp_[:, i * dh: i * dh + sh * (OH - 1) + 1: sh,
                     j * dw: j * dw + sw * (OW - 1) + 1: sw, :]   # (N, OH, OW, C)
        cols[..., a:b] = window[..., chans]
    return cols.reshape(N * OH * OW, plan.count)


_GPU_KERNEL = None


def _gpu_kernel():
    """Compiled on first use (never at import), per dtype by CuPy's kernel cache."""
    global _GPU_KERNEL
    if _GPU_KERNEL is None:
        import cupy
        _GPU_KERNEL = cupy.ElementwiseKernel(
            "raw T x, raw int32 taps, int32 H, int32 W, int32 C, int32 OH, int32 OW, "
            "int32 kw, int32 sh, int32 sw, int32 ph, int32 pw, int32 dh, int32 dw, int32 nt",
            "T out",
            """
            // out is (M, T): consecutive threads take consecutive kept taps of one pixel, so
            // reads of one kernel position are consecutive channels (coalesced, paper Fig. 6)
            const long long t = i % nt;
            const long long m = i / nt;
            const int ow = m % OW;
            const long long r = m / OW;
            const int oh = r % OH;
            const long long n = r / OH;
            const int tap = taps[t];
            const int c = tap % C;
            const int ij = tap / C;
            const int ih = oh * sh - ph + (ij / kw) * dh;
            const int iw = ow * sw - pw + (ij % kw) * dw;
            if (ih >= 0 && ih < H && iw >= 0 && iw < W) {
                out = x[((n * H + ih) * W + iw) * C + c];
            } else {
                out = (T)0;
            }
            """,
            "cupyprune_im2col_nhwc")
    return _GPU_KERNEL


def im2col_cupy(x, taps, geometry):
    """x (N, H, W, C) cupy, taps (T,) int32 cupy -> (M, T)."""
    import cupy
    kh, kw, (sh, sw), (ph, pw), (dh, dw) = geometry
    N, H, W, C = x.shape
    OH, OW = out_size(H, kh, sh, ph, dh), out_size(W, kw, sw, pw, dw)
    out = cupy.empty((N * OH * OW, taps.size), dtype=x.dtype)
    i32 = np.int32
    _gpu_kernel()(cupy.ascontiguousarray(x), taps, i32(H), i32(W), i32(C), i32(OH), i32(OW),
                  i32(kw), i32(sh), i32(sw), i32(ph), i32(pw), i32(dh), i32(dw),
                  i32(taps.size), out)
    return out
