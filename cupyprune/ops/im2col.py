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
        taps = np.asarray(taps)
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


# One block per output pixel m; its threads walk the kept taps t. Per-tap offsets are
# precomputed (TapTable), so the inner loop has no division; consecutive threads read consecutive
# kept channels of one kernel position (coalesced, paper Fig. 6) and write consecutive columns.
# The copy moves raw bits (16- or 32-bit words), so one kernel serves fp16 and fp32.
_IM2COL_SOURCE = r"""
extern "C" __global__ void cupyprune_im2col_taps_WORD(
        const WORD* __restrict__ x, const int* __restrict__ off, const int* __restrict__ dy,
        const int* __restrict__ dx, WORD* __restrict__ out,
        int H, int W, int C, int OH, int OW, int sh, int sw, int T) {
    const long long m = blockIdx.x;
    const int ow = (int)(m % OW);
    const long long r = m / OW;
    const int oh = (int)(r % OH);
    const long long n = r / OH;
    const int h0 = oh * sh, w0 = ow * sw;
    const WORD* xb = x + ((n * H + h0) * W + w0) * C;
    WORD* ob = out + m * T;
    for (int t = threadIdx.x; t < T; t += blockDim.x) {
        const int ih = h0 + dy[t], iw = w0 + dx[t];
        ob[t] = (ih >= 0 && ih < H && iw >= 0 && iw < W) ? xb[off[t]] : (WORD)0;
    }
}
"""
_WORDS = {2: ("unsigned short", "uint16"), 4: ("unsigned int", "uint32")}
_GPU_KERNELS = {}


def _gpu_kernel(itemsize):
    """Compiled on first use (never at import), one per word size."""
    if itemsize not in _GPU_KERNELS:
        import cupy
        word = _WORDS[itemsize][0]
        name = f"cupyprune_im2col_taps_{word.replace(' ', '_')}"
        src = _IM2COL_SOURCE.replace("cupyprune_im2col_taps_WORD", name).replace("WORD", word)
        _GPU_KERNELS[itemsize] = cupy.RawKernel(src, name)
    return _GPU_KERNELS[itemsize]


class TapTable:
    """Device tables for the GPU kernel, per input width: for kept tap t = (i, j, c),
    dy = i*dh - ph, dx = j*dw - pw, off = (dy*W + dx)*C + c."""

    def __init__(self, taps_host, geometry, C):
        import cupy
        kh, kw, _, (ph, pw), (dh, dw) = geometry
        taps = np.asarray(taps_host, dtype=np.int64)
        ij, self.c = taps // C, taps % C
        self.dy_host = (ij // kw) * dh - ph
        self.dx_host = (ij % kw) * dw - pw
        self.dy = cupy.asarray(self.dy_host, dtype=cupy.int32)
        self.dx = cupy.asarray(self.dx_host, dtype=cupy.int32)
        self.count = int(taps.size)
        self.C = C
        self._off = {}

    def offsets(self, W):
        if W not in self._off:
            import cupy
            off = (self.dy_host * W + self.dx_host) * self.C + self.c
            self._off[W] = cupy.asarray(off, dtype=cupy.int32)
        return self._off[W]


def im2col_cupy(x, table, geometry):
    """x (N, H, W, C) cupy, table: TapTable of the kept taps -> (M, T)."""
    import cupy
    kh, kw, (sh, sw), (ph, pw), (dh, dw) = geometry
    N, H, W, C = x.shape
    OH, OW = out_size(H, kh, sh, ph, dh), out_size(W, kw, sw, pw, dw)
    M, T = N * OH * OW, table.count
    out = cupy.empty((M, T), dtype=x.dtype)
    word = _WORDS[x.dtype.itemsize][1]
    threads = min(256, 32 * ((T + 31) // 32))
    i32 = np.int32
    _gpu_kernel(x.dtype.itemsize)(
        (M,), (threads,),
        (cupy.ascontiguousarray(x).view(word), table.offsets(W), table.dy, table.dx,
         out.view(word), i32(H), i32(W), i32(C), i32(OH), i32(OW), i32(sh), i32(sw), i32(T)))
    return out
