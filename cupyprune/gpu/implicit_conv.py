"""Implicit-GEMM convolution for fp16 and bf16: no im2col matrix in memory.

One block computes a BM x BN tile of Y (M, K) = X_taps (M, TP) @ W (TP, K). Its reduction loop
walks the rows of a row plan (ops/implicit_plan.py) BK = 32 at a time; each row is one kept
(tap, input channel), and each A tile is read straight from the channels-last activation
(N, H, W, C) at the tap's shift, with padding and stride in the address math (out-of-range
pixels read as zero). A k-step is one of two kinds, chosen at load and uniform over the block:
  vector  four packs of 8 consecutive channels of one tap: one 16-byte `cp.async` per
          (pixel, pack), straight into shared memory
  scalar  32 arbitrary kept rows: each thread keeps one row and loads it for BM / warps pixels
          (2-byte loads, consecutive lanes on consecutive kept channels of one pixel, so a warp
          reads one or two 128-byte lines), held in registers over the tile's MMAs and stored
          to shared memory after them
The B tile (BK rows of the plan's weight, BN outputs) always comes by 16-byte `cp.async`.
Shared memory holds STAGES tiles (A rows padded to BK + 8 halves, B rows to BN + 8: the
`ldmatrix` rows of a warp then fall in distinct banks); tensor cores run `mma.sync.m16n8k16`
with fp32 accumulation, A by `ldmatrix`, B by `ldmatrix.trans`. The fused epilogue (bias, ReLU,
residual add, ReLU after the add: ops/epilogue.py's relu forms) is applied on the accumulators
before the one store of Y. Fragment layouts: PTX ISA, "Matrix Fragments for mma.m16n8k16".

Why hand-written CUDA through CuPy's NVRTC: it adds no dependency and no install step (the
fused attention kernel is built the same way), compiles in about a second on first use, and the
gathered A operand with mixed vector/scalar k-steps is a few dozen lines here. CUTLASS/CuTe
headers would give wgmma mainloops but need the nvidia-cutlass wheel's headers at run time and
a gather iterator written in CuTe; the CuTe Python DSL (about 92 MB, NVIDIA licence) and Triton
(272 MB, a C compiler at first use) are heavy optional extras for one kernel.

Legend: N batch, H W C input, OH OW output size, M = N*OH*OW pixels, K output channels,
TP plan rows (a multiple of BK), BM BN BK the block tile.
"""
from dataclasses import dataclass

import numpy as np

from .cuda_source import MMA_SOURCE, compile_kernel

BK = 32                          # plan rows per k-step (four packs of 8)
GENERATION = "implicit-v2"       # names this kernel's code in the tuning cache's keys
PACK = 8                         # channels in one 16-byte vector load


@dataclass(frozen=True)
class TileConfig:
    """A block tile BM x BN x BK, its warps (WM along M, WN along N) and shared-memory stages."""
    bm: int
    bn: int
    wm: int
    wn: int
    stages: int = 3

    @property
    def name(self):
        return f"{self.bm}x{self.bn}x{BK}s{self.stages}w{self.wm * self.wn}"

    @property
    def threads(self):
        return 32 * self.wm * self.wn

    @property
    def smem_bytes(self):
        """A and B stages (16-bit values) plus the block's pixel table (16 bytes a pixel)."""
        return 2 * self.stages * (self.bm * (BK + 8) + BK * (self.bn + 8)) + 16 * self.bm


# Warp tiles 64x32 or 32x32 (MI = 4 or 2 row tiles of 16, NI = 4 column tiles of 8), and
# 64x64 (NI = 8) in the 4-warp 128x128 tile: twice the MMAs per k-step for the same copies and
# barrier, the fastest on the largest layers. 128x256 and 256x128 (8 warps of 64x64) and the
# 4-warp 128x128 with 4 stages were timed too and never won a layer (docs/DESIGN_NOTES.md,
# "The implicit conv's k-step"), so they are not candidates.
CONFIGS = (TileConfig(128, 128, 2, 4), TileConfig(128, 64, 2, 2), TileConfig(64, 64, 2, 2),
           TileConfig(64, 128, 2, 4), TileConfig(128, 128, 2, 4, stages=2),
           TileConfig(128, 128, 2, 2))
CONFIG_BY_NAME = {c.name: c for c in CONFIGS}

# flags: what the epilogue applies, in this order
FLAG_BIAS, FLAG_RESIDUAL, FLAG_RELU, FLAG_POST_RELU = 1, 2, 4, 8

# What both implicit kernels (this one and implicit_conv_wgmma.py) share: the block's pixel
# table, a tap's bounds check, two 16-bit values to floats (@IS_BF16@ says which type) and the
# fused epilogue of two neighbouring outputs.
CONV_SOURCE = r"""
__device__ __forceinline__ float2 unpack2(unsigned v) {      // two 16-bit values -> floats
#if @IS_BF16@
    return make_float2(__uint_as_float(v << 16), __uint_as_float(v & 0xffff0000u));
#else
    float lo, hi;
    asm("cvt.f32.f16 %0, %1;" : "=f"(lo) : "h"((unsigned short)(v & 0xffffu)));
    asm("cvt.f32.f16 %0, %1;" : "=f"(hi) : "h"((unsigned short)(v >> 16)));
    return make_float2(lo, hi);
#endif
}
// pix[i], i < count: the pixel of Y's row m_block + i as (offset of its first value at tap
// (0, 0), input row there, input column there, -); a row past M gets a row no tap reaches
__device__ __forceinline__ void fill_pixel_table(int4* pix, int count, int m_block, int M,
        int H, int W, int C, int OH, int OW, int sh, int sw) {
    for (int i = threadIdx.x; i < count; i += blockDim.x) {
        const int m = m_block + i;
        int4 p = make_int4(0, -(1 << 29), 0, 0);
        if (m < M) {
            const int ow = m % OW, t = m / OW, oh = t % OH, n = t / OH;
            p = make_int4(((n * H + oh * sh) * W + ow * sw) * C, oh * sh, ow * sw, 0);
        }
        pix[i] = p;
    }
}
// whether a pixel's input row ih0 and column iw0 shifted by a plan row's (dy, dx) are inside
__device__ __forceinline__ bool tap_inside(int ih0, int iw0, int4 d, int H, int W) {
    return (unsigned)(ih0 + d.x) < (unsigned)H && (unsigned)(iw0 + d.y) < (unsigned)W;
}
// flags (FLAG_*): v + bias, ReLU, + residual, ReLU, in that order, on two outputs
__device__ __forceinline__ float2 epilogue2(float v0, float v1, float2 b, int flags, float2 r) {
    v0 += b.x; v1 += b.y;
    if (flags & 4) { v0 = fmaxf(v0, 0.f); v1 = fmaxf(v1, 0.f); }
    if (flags & 2) { v0 += r.x; v1 += r.y; }
    if (flags & 8) { v0 = fmaxf(v0, 0.f); v1 = fmaxf(v1, 0.f); }
    return make_float2(v0, v1);
}
"""

_SOURCE = r"""
#define BM @BM@
#define BN @BN@
#define BK 32
#define WARPS_M @WM@
#define WARPS_N @WN@
#define STAGES @STAGES@
#define WARPS (WARPS_M * WARPS_N)
#define THREADS (32 * WARPS)
#define WTM (BM / WARPS_M)               // warp tile rows
#define WTN (BN / WARPS_N)               // warp tile columns
#define MI (WTM / 16)
#define NI (WTN / 8)
#define AS (BK + 8)                      // A row stride in shared memory (halves)
#define BS (BN + 8)                      // B row stride
#define A_STAGE (BM * AS)
#define B_STAGE (BK * BS)
#define A_VEC_JOBS (BM * 4 / THREADS)    // 16-byte copies of A per thread, vector k-step
#define A_SCALAR (BM / WARPS)            // 2-byte loads of A per thread, scalar k-step
#define B_JOBS (BK * BN / 8 / THREADS)   // 16-byte copies of B per thread
#define B_ROW_STEP (THREADS / (BN / 8))  // B rows between one thread's copies
// x (N, H, W, C), w (TP, K), y (M, K), bias (K,), res (M, K): 16-bit values. rows (TP,):
// (dy, dx, offset, 0) per plan row, offset = (dy * W + dx) * C + c; a vector k-step's packs
// take the descriptor of their first row. K-steps [0, vsteps) are vector ones. Block
// (blockIdx.x, blockIdx.y) = (column tile, row tile): the column tiles of one row tile run
// side by side and share its gathered activations in L2.
extern "C" __global__ void __launch_bounds__(THREADS) @NAME@(
        const unsigned short* __restrict__ x, const unsigned short* __restrict__ w,
        const int4* __restrict__ rows, unsigned short* __restrict__ y,
        const unsigned short* __restrict__ bias, const unsigned short* __restrict__ res,
        int H, int W, int C, int OH, int OW, int sh, int sw, int M, int K, int ksteps,
        int vsteps, int flags) {
    extern __shared__ __align__(16) unsigned char smem[];
    unsigned short* As = (unsigned short*)smem;                  // STAGES x (BM, AS)
    unsigned short* Bs = As + STAGES * A_STAGE;                  // STAGES x (BK, BS)
    int4* pix = (int4*)(Bs + STAGES * B_STAGE);                  // BM x (offset, ih0, iw0, -)
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int n_block = blockIdx.x * BN, m_block = blockIdx.y * BM;
    fill_pixel_table(pix, BM, m_block, M, H, W, C, OH, OW, sh, sw);
    __syncthreads();

    // Everything a k-step's copies need that does not change with the k-step is worked out
    // once here, so the loop issues little besides its copies, ldmatrix and mma.
    // B: this thread copies 8 columns (one pack) of rows b_row, b_row + B_ROW_STEP, ...
    const int b_pack = tid % (BN / 8), b_row = tid / (BN / 8);
    const bool b_ok = n_block + b_pack * 8 < K;
    const unsigned short* b_src = w + (size_t)b_row * K + (b_ok ? n_block + b_pack * 8 : 0);
    const unsigned b_dst = smem_addr(Bs + b_row * BS + b_pack * 8);
    // A, vector k-steps: this thread copies pack `pk` of the pixels tid / 4 + it * THREADS / 4
    const int pk = tid & 3;
    const unsigned a_dst = smem_addr(As + (tid >> 2) * AS + pk * 8);
    int a_off[A_VEC_JOBS], a_ih[A_VEC_JOBS], a_iw[A_VEC_JOBS];
    #pragma unroll
    for (int it = 0; it < A_VEC_JOBS; ++it) {
        const int4 q = pix[(tid >> 2) + it * (THREADS / 4)];
        a_off[it] = q.x; a_ih[it] = q.y; a_iw[it] = q.z;
    }
    // the plan row a k-step's descriptor comes from: the first of this thread's pack (vector)
    // or this lane's own row (scalar)
    auto descriptor = [&](int ks) { return rows[ks * BK + (ks < vsteps ? pk * 8 : lane)]; };

    auto load_b = [&](int stage, int ks) {
        const unsigned short* src = b_src + (size_t)ks * BK * K;
        #pragma unroll
        for (int it = 0; it < B_JOBS; ++it)
            cp_async16(b_dst + 2 * (stage * B_STAGE + it * B_ROW_STEP * BS),
                       src + (size_t)it * B_ROW_STEP * K, b_ok ? 16 : 0);
    };
    auto load_a_vector = [&](int stage, int4 d) {
        #pragma unroll
        for (int it = 0; it < A_VEC_JOBS; ++it) {
            const bool ok = tap_inside(a_ih[it], a_iw[it], d, H, W);
            cp_async16(a_dst + 2 * (stage * A_STAGE + it * (THREADS / 4) * AS),
                       ok ? x + (a_off[it] + d.z) : x, ok ? 16 : 0);
        }
    };
    unsigned short held[A_SCALAR];              // a scalar k-step's values, this thread's row
    auto load_a_scalar = [&](int4 d) {
        #pragma unroll
        for (int it = 0; it < A_SCALAR; ++it) {
            const int4 q = pix[warp + it * WARPS];
            const bool ok = tap_inside(q.y, q.z, d, H, W);
            held[it] = ok ? x[q.x + d.z] : (unsigned short)0;
        }
    };
    auto store_a_scalar = [&](int stage) {
        #pragma unroll
        for (int it = 0; it < A_SCALAR; ++it)
            As[stage * A_STAGE + (warp + it * WARPS) * AS + lane] = held[it];
    };
    auto load_tile = [&](int stage, int ks, int4 d) {  // -> whether A waits in `held`
        load_b(stage, ks);
        if (ks < vsteps) { load_a_vector(stage, d); return false; }
        load_a_scalar(d);
        return true;
    };

    #pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < ksteps && load_tile(s, s, descriptor(s))) store_a_scalar(s);
        asm volatile("cp.async.commit_group;");
    }
    // the next k-step's descriptor is read one k-step ahead, so its latency hides behind MMAs
    int4 d_next = STAGES - 1 < ksteps ? descriptor(STAGES - 1) : make_int4(0, 0, 0, 0);
    const int wm = warp % WARPS_M, wn = warp / WARPS_M, g = lane >> 2, t4 = lane & 3;
    const unsigned a_frag = smem_addr(As + (wm * WTM + (lane & 15)) * AS + (lane >> 4) * 8);
    const unsigned b_frag = smem_addr(Bs + (lane & 15) * BS + wn * WTN + (lane >> 4) * 8);
    float acc[MI][NI][4];
    #pragma unroll
    for (int mi = 0; mi < MI; ++mi)
        #pragma unroll
        for (int ni = 0; ni < NI; ++ni)
            acc[mi][ni][0] = acc[mi][ni][1] = acc[mi][ni][2] = acc[mi][ni][3] = 0.f;

    int stage = 0, next = STAGES - 1;
    #pragma unroll 1
    for (int ks = 0; ks < ksteps; ++ks) {
        asm volatile("cp.async.wait_group %0;" :: "n"(STAGES - 2));
        __syncthreads();                  // tile ks is in; every warp is done with tile ks - 1
        const int nk = ks + STAGES - 1;
        bool pending = false;
        if (nk < ksteps) {
            pending = load_tile(next, nk, d_next);
            if (nk + 1 < ksteps) d_next = descriptor(nk + 1);
        }
        asm volatile("cp.async.commit_group;");
        const unsigned a_tile = a_frag + 2 * stage * A_STAGE, b_tile = b_frag + 2 * stage * B_STAGE;
        #pragma unroll
        for (int kk = 0; kk < BK; kk += 16) {
            unsigned a[MI][4], b[NI][2];
            #pragma unroll
            for (int mi = 0; mi < MI; ++mi) ldsm_x4(a[mi], a_tile + 2 * (mi * 16 * AS + kk));
            #pragma unroll
            for (int nj = 0; nj < NI / 2; ++nj) {
                unsigned t[4];
                ldsm_x4_trans(t, b_tile + 2 * (kk * BS + nj * 16));
                b[2 * nj][0] = t[0]; b[2 * nj][1] = t[1];
                b[2 * nj + 1][0] = t[2]; b[2 * nj + 1][1] = t[3];
            }
            #pragma unroll
            for (int mi = 0; mi < MI; ++mi)
                #pragma unroll
                for (int ni = 0; ni < NI; ++ni) mma16816(acc[mi][ni], a[mi], b[ni][0], b[ni][1]);
        }
        if (pending) store_a_scalar(next);
        stage = stage + 1 == STAGES ? 0 : stage + 1;
        next = next + 1 == STAGES ? 0 : next + 1;
    }
    asm volatile("cp.async.wait_group 0;");

    #pragma unroll
    for (int ni = 0; ni < NI; ++ni) {
        const int col = n_block + wn * WTN + ni * 8 + t4 * 2;
        if (col >= K) continue;
        float2 b2 = make_float2(0.f, 0.f);
        if (flags & 1) b2 = unpack2(*(const unsigned*)(bias + col));
        #pragma unroll
        for (int mi = 0; mi < MI; ++mi)
            #pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int row = m_block + wm * WTM + mi * 16 + g + 8 * h;
                if (row >= M) continue;
                const size_t at = (size_t)row * K + col;
                const float2 r2 = flags & 2 ? unpack2(*(const unsigned*)(res + at))
                                           : make_float2(0.f, 0.f);
                const float2 v = epilogue2(acc[mi][ni][2 * h], acc[mi][ni][2 * h + 1], b2,
                                           flags, r2);
                *(unsigned*)(y + at) = pack2(v.x, v.y);
            }
    }
}
"""

_KERNELS = {}


def _source(ptx, config):
    c = config
    name = f"cupyprune_implicit_conv_{ptx}_{c.bm}x{c.bn}_w{c.wm}x{c.wn}_s{c.stages}"
    source = MMA_SOURCE + CONV_SOURCE + _SOURCE
    return name, (source.replace("@NAME@", name).replace("@PTX@", ptx)
                  .replace("@IS_BF16@", str(int(ptx == "bf16")))
                  .replace("@BM@", str(c.bm)).replace("@BN@", str(c.bn))
                  .replace("@WM@", str(c.wm)).replace("@WN@", str(c.wn))
                  .replace("@STAGES@", str(c.stages)))


def kernel_sources():
    """(name, CUDA source) of every kernel this module can compile (for an NVRTC check)."""
    for ptx in ("f16", "bf16"):
        for config in CONFIGS:
            yield _source(ptx, config)


def _kernel(ptx, config):
    def build():
        return _source(ptx, config)
    kernel = compile_kernel(_KERNELS, (ptx, config), build)
    if kernel.max_dynamic_shared_size_bytes < config.smem_bytes:
        kernel.max_dynamic_shared_size_bytes = config.smem_bytes
    return kernel


def epilogue_flags(bias, residual, relu, post_relu):
    """The kernels' `flags` argument: FLAG_* of what the epilogue applies."""
    return ((FLAG_BIAS if bias is not None else 0) | (FLAG_RESIDUAL if residual is not None else 0)
            | (FLAG_RELU if relu else 0) | (FLAG_POST_RELU if post_relu else 0))


# 32-bit offsets inside the kernel; y's grid rows at most 65535
INDEX_LIMIT = 2 ** 31 - 1


def fits(x_shape, M, K, config):
    """Whether the kernel's 32-bit activation offsets and grid cover this call."""
    N, H, W, C = x_shape
    return N * H * W * C <= INDEX_LIMIT and -(-M // config.bm) <= 65535 and M * K <= INDEX_LIMIT


def implicit_conv(x, w, rows, vsteps, out_hw, stride, config, bias=None, residual=None,
                  relu=False, post_relu=False, out=None):
    """x (N, H, W, C) C-contiguous fp16 or bf16 bits (uint16) CuPy array; w (TP, K) the plan's
    weight; rows (TP, 4) int32 device descriptors for x's width (ImplicitPlan.rows_for);
    vsteps: the leading vector k-steps; out_hw (OH, OW); stride (sh, sw) -> y (M, K) =
    post_relu?(relu?(conv + bias) + residual). bias (K,), residual (M, K) or None."""
    import cupy
    from ..precision import is_bf16
    N, H, W, C = x.shape
    TP, K = w.shape
    OH, OW = out_hw
    M = N * OH * OW
    ptx = "bf16" if is_bf16(x.dtype) else "f16"
    kernel = _kernel(ptx, config)
    y = cupy.empty((M, K), dtype=x.dtype) if out is None else out
    flags = epilogue_flags(bias, residual, relu, post_relu)
    i32 = np.int32
    kernel((-(-K // config.bn), -(-M // config.bm)), (config.threads,),
           (x, w, rows, y, x if bias is None else bias, x if residual is None else residual,
            i32(H), i32(W), i32(C), i32(OH), i32(OW), i32(stride[0]), i32(stride[1]), i32(M),
            i32(K), i32(TP // BK), i32(vsteps), i32(flags)),
           shared_mem=config.smem_bytes)
    return y
