"""im2col in channels-last layout, building only the requested columns (taps).

Legend: N batch, H W input size, C channels, OH OW output size, kh kw kernel, M = N*OH*OW,
R = kh*kw*C all taps, T kept taps. Tap index t = (i*kw + j)*C + c (docs/FORMAT.md).
Building only the kept taps, rather than the full matrix and then a gather, is what makes the
group-wise conv cheap (paper Fig. 13; shared notes: 1.5x faster on the H100).
"""
import numpy as np

from ..gpu.cuda_source import compile_kernel


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
        if isinstance(chans, slice):
            cols[..., a:b] = window[..., chans]
        else:   # take(mode="clip") skips fancy indexing's bounds-checked buffering: ~2x faster
            cols[..., a:b] = np.take(window, chans, axis=3, mode="clip")
    return cols.reshape(N * OH * OW, plan.count)


# A thread copies VEC consecutive kept taps (one 16-byte pack: values_per_pack) of `pix`
# consecutive output pixels: it loads its taps' offsets and shifts (TapTable) into registers once
# and walks the pixels, stepping (n, oh, ow) without division, so the inner loop is VEC loads and
# one vector store. Consecutive threads read consecutive kept channels of one kernel position
# (coalesced, paper Fig. 6) and write consecutive packs of a row. The copy moves raw bits (16- or
# 32-bit words), so one kernel serves fp16 and fp32. Taps padded up to a multiple of VEC read
# nothing (dy out of range) and write zeros, which meet zero rows of the weight. (Eight fp32
# columns, two stores, ran the H100's conv layer 1-7% slower than the previous kernel did.)
_IM2COL_SOURCE = r"""
struct __align__(PACK_BYTES) Pack { WORD v[VEC]; };
extern "C" __global__ void NAME(
        const WORD* __restrict__ x, const int* __restrict__ off, const int* __restrict__ dy,
        const int* __restrict__ dx, Pack* __restrict__ out,
        int H, int W, int C, int OH, int OW, int sh, int sw, int TV, long long M, int pix) {
    const int q = blockIdx.y * blockDim.x + threadIdx.x;          // which pack of the row
    if (q >= TV) return;
    long long m = ((long long)blockIdx.x * blockDim.y + threadIdx.y) * pix;
    if (m >= M) return;
    const long long m_end = m + pix < M ? m + pix : M;
    int o[VEC], ty[VEC], tx[VEC];
    #pragma unroll
    for (int k = 0; k < VEC; ++k) {
        o[k] = off[q * VEC + k]; ty[k] = dy[q * VEC + k]; tx[k] = dx[q * VEC + k];
    }
    int ow = (int)(m % OW);
    const long long r = m / OW;
    int oh = (int)(r % OH);
    long long n = r / OH;
    for (; m < m_end; ++m) {
        const int h0 = oh * sh, w0 = ow * sw;
        const WORD* xb = x + ((n * H + h0) * W + w0) * (long long)C;
        Pack p;
        #pragma unroll
        for (int k = 0; k < VEC; ++k) {
            const int ih = h0 + ty[k], iw = w0 + tx[k];
            p.v[k] = ((unsigned)ih < (unsigned)H && (unsigned)iw < (unsigned)W) ? xb[o[k]]
                                                                                 : (WORD)0;
        }
        out[m * TV + q] = p;
        if (++ow == OW) { ow = 0; if (++oh == OH) { oh = 0; ++n; } }
    }
}
"""
_WORDS = {2: ("unsigned short", "uint16", "ushort"), 4: ("unsigned int", "uint32", "uint")}
_GPU_KERNELS = {}

_OUT_OF_RANGE = -(1 << 20)


def _im2col_source(itemsize, vec):
    word, _, short = _WORDS[itemsize]
    name = f"cupyprune_im2col_taps_{short}{vec}"
    return name, (_IM2COL_SOURCE.replace("NAME", name).replace("PACK_BYTES", str(itemsize * vec))
                  .replace("WORD", word).replace("VEC", str(vec)))


def kernel_sources():
    """(name, CUDA source) of every kernel this module can compile (for an NVRTC check)."""
    for itemsize in _WORDS:
        for vec in (1, 4, 8):
            yield _im2col_source(itemsize, vec)


def _gpu_kernel(itemsize, vec):
    """Compiled on first use (never at import), one per (word size, vector width)."""
    return compile_kernel(_GPU_KERNELS, (itemsize, vec), lambda: _im2col_source(itemsize, vec))


class TapTable:
    """Device tables for the GPU kernel, per input width: for kept tap t = (i, j, c),
    dy = i*dh - ph, dx = j*dw - pw, off = (dy*W + dx)*C + c. With pad_to > 1 the table is
    padded with taps that read nothing, up to a multiple of pad_to (`count` >= `kept`)."""

    def __init__(self, taps_host, geometry, C, pad_to=1):
        import cupy
        kh, kw, _, (ph, pw), (dh, dw) = geometry
        taps = np.asarray(taps_host, dtype=np.int64)
        self.kept = int(taps.size)
        self.count = -(-self.kept // pad_to) * pad_to
        self.vec = pad_to
        extra = self.count - self.kept
        ij = taps // C
        self.c = np.concatenate([taps % C, np.zeros(extra, np.int64)])
        self.dy_host = np.concatenate([(ij // kw) * dh - ph, np.full(extra, _OUT_OF_RANGE)])
        self.dx_host = np.concatenate([(ij % kw) * dw - pw, np.zeros(extra, np.int64)])
        self.dy = cupy.asarray(self.dy_host, dtype=cupy.int32)
        self.dx = cupy.asarray(self.dx_host, dtype=cupy.int32)
        self.C = C
        self._off = {}

    def offsets(self, W):
        if W not in self._off:
            import cupy
            off = (self.dy_host * W + self.dx_host) * self.C + self.c
            off[self.kept:] = 0
            self._off[W] = cupy.asarray(off, dtype=cupy.int32)
        return self._off[W]


def im2col_cupy(x, table, geometry):
    """x (N, H, W, C) cupy, table: TapTable of the kept taps -> (M, table.count); columns past
    table.kept (padding) are zero."""
    import cupy
    kh, kw, (sh, sw), (ph, pw), (dh, dw) = geometry
    N, H, W, C = x.shape
    OH, OW = out_size(H, kh, sh, ph, dh), out_size(W, kw, sw, pw, dw)
    M, T = N * OH * OW, table.count
    out = cupy.empty((M, T), dtype=x.dtype)
    word = _WORDS[x.dtype.itemsize][1]
    tv = T // table.vec                          # packs per row
    tx = min(128, tv)
    ty = max(1, 256 // tx)                       # several pixel lanes per block when T is small
    pix = max(1, min(8, M // (ty * 512)))        # pixels per thread, while blocks stay plenty
    i32 = np.int32
    _gpu_kernel(x.dtype.itemsize, table.vec)(
        (-(-M // (ty * pix)), -(-tv // tx)), (tx, ty),
        (cupy.ascontiguousarray(x).view(word), table.offsets(W), table.dy, table.dx,
         out.view(word), i32(H), i32(W), i32(C), i32(OH), i32(OW), i32(sh), i32(sw), i32(tv),
         np.int64(M), i32(pix)))
    return out
