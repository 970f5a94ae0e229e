"""Implicit-GEMM convolution on Hopper's warpgroup MMA (`wgmma`, sm_90a): fp16, bf16, and fp32
models run in TF32.

The same GEMM as gpu/implicit_conv.py, Y (M, K) = X_taps (M, TP) @ W (TP, K), walked the same way
(the row plan's k-steps of BK = 32 rows, vector or scalar, ops/implicit_plan.py), with the
same gathered copies of A; what changes is who multiplies. Two warpgroups (8 warps) share a
block tile BM x BN; each issues `wgmma.mma_async` on its BM / 2 rows and all BN columns, both
operands read by the tensor cores straight from shared memory through matrix descriptors, the
accumulators in registers. No `ldmatrix`, no per-warp fragment loads: a k-step is the copies,
one barrier and 2 (16-bit) or 4 (TF32, or a wide tile) `wgmma` per 64-row tile, so the tile
can be twice as wide as the `mma.sync` kernel's for the same issue cost. A wide tile (span 2,
16-bit types) takes two plan k-steps at a time (KW = 64 rows, 128-byte rows of shared
memory): half the barriers and waits for the same MMAs; it runs plans whose k-steps are all
vector ones.

Shared memory: STAGES tiles of A (BM rows) and B (BN rows), each row one k-step of KW values
(64 bytes in 16-bit types, 128 in fp32 or in a wide tile), in the layout the descriptors name
(K-major, the 64-byte or 128-byte swizzle: a row's 16-byte chunk c sits at chunk
c ^ (row / 2 % 4), or c ^ (row % 8)), which is also what keeps the copies' and the tensor
cores' accesses free of bank conflicts. Every copy is a 16-byte `cp.async` written to its
swizzled place (a scalar k-step stores its values there after the MMAs); `fence.proxy.async`
makes them visible to the tensor cores before the barrier. B is W transposed, (K, TP), so
both operands are K-major (the only layout TF32 `wgmma` takes); the layer keeps that copy of
its plan weight.

Pipeline: tiles ks + 1 .. ks + STAGES - 2 are in flight while k-step ks multiplies, and one
`wgmma` group stays in flight past the k-step; the copies of tile ks + STAGES - 2 go to the
stage read two k-steps earlier, which every warpgroup has finished with by the barrier.
Fragment layout of the accumulators and the descriptor's fields: PTX ISA, "Asynchronous
Warpgroup Level Matrix Multiply-Accumulate" (register fragments, matrix descriptor).

Legend: N batch, H W C input, M = N*OH*OW pixels, K output channels, TP plan rows (a multiple
of BK), KW plan rows a k-step of the kernel (BK x span), BM BN the block tile, MT the 64-row
wgmma tiles of one warpgroup.
"""
from dataclasses import dataclass

import numpy as np

from .cuda_source import MMA_SOURCE, compile_kernel
from . import implicit_conv
from .implicit_conv import CONV_SOURCE, epilogue_flags

BK = 32                          # plan rows per k-step, as in gpu/implicit_conv.py
GENERATION = "wgmma-v2"          # names this kernel's code in the tuning cache's keys
THREADS = 256                    # two warpgroups
SMEM_LIMIT = 227 * 1024          # a block's shared memory on sm_90
MAX_ROW_BYTES = 128              # the widest swizzle: a tile row of one k-step at most
ALIGN = 1024                     # stage bases: a multiple of the 128-byte swizzle's 1024-byte atom


@dataclass(frozen=True)
class WgmmaTile:
    """A block tile BM x BN (BM = 128: one 64-row wgmma tile a warpgroup; 256: two), its
    shared-memory stages (at least 3: two tiles ahead of the one multiplied) and span, the plan
    k-steps one k-step of the kernel takes (2: 16-bit types, all-vector plans only)."""
    bm: int
    bn: int
    stages: int = 4
    span: int = 1

    @property
    def name(self):
        return f"wg{self.bm}x{self.bn}x{BK * self.span}s{self.stages}"

    def smem_bytes(self, itemsize):
        """A launch's dynamic shared memory for values of `itemsize` bytes: the A and B stages,
        the block's pixel table (16 bytes a pixel) and room to align the stages."""
        return (self.stages * (self.bm + self.bn) * BK * self.span * itemsize + 16 * self.bm
                + ALIGN)

    def runs(self, itemsize, vsteps, TP):
        """Whether this tile takes a plan of TP rows with `vsteps` leading vector k-steps, in
        values of `itemsize` bytes: a wide tile's rows fit the swizzle, its k-steps all vector."""
        if BK * self.span * itemsize > MAX_ROW_BYTES:
            return False
        return self.span == 1 or vsteps * BK == TP


TILES = (WgmmaTile(128, 256, 4), WgmmaTile(128, 256, 5), WgmmaTile(256, 128, 4),
         WgmmaTile(128, 128, 5), WgmmaTile(128, 128, 3),
         WgmmaTile(128, 256, 4, span=2), WgmmaTile(256, 128, 4, span=2),
         WgmmaTile(128, 128, 4, span=2))
TILE_BY_NAME = {t.name: t for t in TILES}

# the kernel's value types: run dtype tag -> (C storage type, bytes, wgmma type, k a wgmma)
TYPES = {"f16": ("unsigned short", 2, "f16", 16), "bf16": ("unsigned short", 2, "bf16", 16),
         "tf32": ("float", 4, "tf32", 8)}


def wgmma_source(n, kind):
    """`wgmma_m64n{n}(d, desc_a, desc_b)`: D (64, n) += A (64, k) @ B (k, n), both K-major in
    shared memory, fp32 accumulators d[n / 2] (the PTX fragment order)."""
    _, _, ptx, k = TYPES[kind]
    regs = n // 2
    outs = ", ".join(f"%{i}" for i in range(regs))
    trans = ", 0, 0" if ptx != "tf32" else ""          # TF32 takes no transpose operands
    constraints = ", ".join(f'"+f"(d[{i}])' for i in range(regs))
    return (f"__device__ __forceinline__ void wgmma_m64n{n}(float* d, unsigned long long da, "
            f"unsigned long long db) {{\n"
            f'    asm volatile("{{ .reg .pred p; setp.ne.b32 p, 1, 0; '
            f"wgmma.mma_async.sync.aligned.m64n{n}k{k}.f32.{ptx}.{ptx} "
            f"{{{outs}}}, %{regs}, %{regs + 1}, p, 1, 1{trans}; }}\"\n"
            f'        : {constraints} : "l"(da), "l"(db));\n}}\n')


_SOURCE = r"""
#define BM @BM@
#define BN @BN@
#define STAGES @STAGES@
#define EB @EB@                          // bytes a value: 2 (fp16, bf16) or 4 (fp32 as TF32)
#define SPAN @SPAN@                      // plan k-steps a k-step: 1, or 2 (all-vector plans)
#define BK 32
#define KW (BK * SPAN)                   // plan rows a k-step
#define THREADS 256
#define ROWB (KW * EB)                   // bytes of one row of a tile: 64 or 128
#define CH (ROWB / 16)                   // 16-byte chunks a row: 4 or 8
#define VPC (16 / EB)                    // values a chunk: 8 or 4
#define CPP (8 / VPC)                    // chunks a plan pack of 8 rows: 1 or 2
#define MT (BM / 128)                    // 64-row wgmma tiles a warpgroup
#define A_STAGE (BM * ROWB)              // bytes
#define B_STAGE (BN * ROWB)
#define STAGE_BYTES (A_STAGE + B_STAGE)
#define PASS (THREADS / CH)              // rows one pass of the block's 16-byte copies covers
#define A_VEC_JOBS (BM / PASS)
#define B_JOBS (BN / PASS)
#define A_SCALAR (BM / 8)                // values of A one thread loads in a scalar k-step
#define SW_SHIFT (ROWB == 64 ? 1 : 0)    // 64-byte swizzle: chunk ^= row / 2 % 4; 128: row % 8
#define SWZ(row, c) ((c) ^ (((row) >> SW_SHIFT) & (CH - 1)))
// descriptor fields besides the start address: leading offset 1 (unused with a swizzle),
// stride 8 rows (one swizzle atom), the swizzle mode (64-byte: 2, 128-byte: 1)
#define DESC_BASE ((1ull << 16) | ((unsigned long long)(8 * ROWB / 16) << 32) \
                   | ((ROWB == 64 ? 2ull : 1ull) << 62))
typedef @T@ elem_t;
__device__ __forceinline__ unsigned long long desc(unsigned saddr) {
    return DESC_BASE | (unsigned long long)((saddr & 0x3ffff) >> 4);
}
__device__ __forceinline__ float2 load2(const elem_t* p) {     // two values -> floats
#if EB == 4
    return *(const float2*)p;
#else
    return unpack2(*(const unsigned*)p);
#endif
}
__device__ __forceinline__ void store2(elem_t* p, float v0, float v1) {
#if EB == 4
    *(float2*)p = make_float2(v0, v1);
#else
    *(unsigned*)p = pack2(v0, v1);
#endif
}
@WGMMA@
// x (N, H, W, C), wt (K, TP) the plan weight transposed, y (M, K), bias (K,), res (M, K), all
// in the run's storage type. rows (TP,): (dy, dx, offset, 0) per plan row as in
// gpu/implicit_conv.py; ksteps = ceil(TP / KW), of which [0, vsteps) are vector ones (all of
// them where SPAN is 2; an odd count of plan k-steps leaves the last k-step's second half past
// TP, copied as zeros). Block (blockIdx.x, blockIdx.y) = (column tile, row tile).
extern "C" __global__ void __launch_bounds__(THREADS, 1) @NAME@(
        const elem_t* __restrict__ x, const elem_t* __restrict__ wt,
        const int4* __restrict__ rows, elem_t* __restrict__ y,
        const elem_t* __restrict__ bias, const elem_t* __restrict__ res,
        int H, int W, int C, int OH, int OW, int sh, int sw, int M, int K, int TP, int ksteps,
        int vsteps, int flags) {
    extern __shared__ __align__(1024) unsigned char smem[];
    // stages at 1024-byte multiples: the swizzle is a function of the address bits
    const unsigned base = (smem_addr(smem) + 1023) & ~1023u;
    unsigned char* tiles = smem + (base - smem_addr(smem));       // STAGES x (A, B)
    int4* pix = (int4*)(tiles + STAGES * STAGE_BYTES);            // BM x (offset, ih0, iw0, -)
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int n_block = blockIdx.x * BN, m_block = blockIdx.y * BM;
    fill_pixel_table(pix, BM, m_block, M, H, W, C, OH, OW, sh, sw);
    __syncthreads();

    // this thread's 16-byte copies: chunk `c` of rows row0, row0 + PASS, ... of both tiles;
    // PASS is a multiple of 8, so each row's swizzled chunk is the same
    const int c = tid % CH, row0 = tid / CH;
    const unsigned chunk_dst = row0 * ROWB + SWZ(row0, c) * 16;
    const elem_t* b_src[B_JOBS];
    bool b_ok[B_JOBS];
    #pragma unroll
    for (int it = 0; it < B_JOBS; ++it) {
        const int n = n_block + row0 + it * PASS;
        b_ok[it] = n < K;
        b_src[it] = wt + (size_t)(b_ok[it] ? n : 0) * TP + c * VPC;
    }
    int a_off[A_VEC_JOBS], a_ih[A_VEC_JOBS], a_iw[A_VEC_JOBS];
    #pragma unroll
    for (int it = 0; it < A_VEC_JOBS; ++it) {
        const int4 q = pix[row0 + it * PASS];
        a_off[it] = q.x + (c % CPP) * VPC; a_ih[it] = q.y; a_iw[it] = q.z;
    }
#if SPAN == 2
    // whether this thread's chunk of k-step ks holds plan rows (not past TP)
    auto in_plan = [&](int ks) { return ks * KW + c * VPC < TP; };
#else
    auto in_plan = [&](int ks) { return true; };
#endif
    // a k-step's descriptor: this chunk's plan pack's first row (vector) or this lane's row
    auto descriptor = [&](int ks) {
        if (!in_plan(ks)) return make_int4(0, 0, 0, 0);
        return rows[ks * KW + (ks < vsteps ? (c / CPP) * 8 : lane)];
    };
    auto load_b = [&](unsigned stage, int ks) {
        const unsigned dst = stage + A_STAGE + chunk_dst;
        const bool in = in_plan(ks);
        #pragma unroll
        for (int it = 0; it < B_JOBS; ++it)
            cp_async16(dst + it * PASS * ROWB, b_src[it] + ks * KW, b_ok[it] && in ? 16 : 0);
    };
    auto load_a_vector = [&](unsigned stage, int ks, int4 d) {
        const bool in = in_plan(ks);
        #pragma unroll
        for (int it = 0; it < A_VEC_JOBS; ++it) {
            const bool ok = in && tap_inside(a_ih[it], a_iw[it], d, H, W);
            cp_async16(stage + chunk_dst + it * PASS * ROWB, ok ? x + (a_off[it] + d.z) : x,
                       ok ? 16 : 0);
        }
    };
    elem_t held[A_SCALAR];                 // a scalar k-step's values of this thread's row
    auto load_a_scalar = [&](int4 d) {
        #pragma unroll
        for (int it = 0; it < A_SCALAR; ++it) {
            const int4 q = pix[warp + it * 8];
            const bool ok = tap_inside(q.y, q.z, d, H, W);
            held[it] = ok ? x[q.x + d.z] : (elem_t)0;
        }
    };
    auto store_a_scalar = [&](unsigned stage) {
        unsigned char* a = tiles + (stage - base);
        #pragma unroll
        for (int it = 0; it < A_SCALAR; ++it) {
            const int p = warp + it * 8;
            *(elem_t*)(a + p * ROWB + SWZ(p, lane / VPC) * 16 + (lane % VPC) * EB) = held[it];
        }
    };
    auto load_tile = [&](unsigned stage, int ks, int4 d) {   // -> whether A waits in `held`
        load_b(stage, ks);
        if (SPAN == 2 || ks < vsteps) { load_a_vector(stage, ks, d); return false; }
        load_a_scalar(d);
        return true;
    };

    #pragma unroll
    for (int s = 0; s < STAGES - 2; ++s) {
        if (s < ksteps && load_tile(base + s * STAGE_BYTES, s, descriptor(s)))
            store_a_scalar(base + s * STAGE_BYTES);
        asm volatile("cp.async.commit_group;");
    }
    int4 d_next = STAGES - 2 < ksteps ? descriptor(STAGES - 2) : make_int4(0, 0, 0, 0);
    const int wg = warp >> 2;                          // this thread's warpgroup
    float acc[MT][BN / 2];
    #pragma unroll
    for (int mt = 0; mt < MT; ++mt)
        #pragma unroll
        for (int i = 0; i < BN / 2; ++i) acc[mt][i] = 0.f;

    int stage = 0, next = STAGES - 2;
    #pragma unroll 1
    for (int ks = 0; ks < ksteps; ++ks) {
        asm volatile("cp.async.wait_group %0;" :: "n"(STAGES - 3));
        asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
        __syncthreads();           // tile ks is in; every warpgroup is done with tile ks - 2
        const int nk = ks + STAGES - 2;
        bool pending = false;
        if (nk < ksteps) {
            pending = load_tile(base + next * STAGE_BYTES, nk, d_next);
            if (nk + 1 < ksteps) d_next = descriptor(nk + 1);
        }
        asm volatile("cp.async.commit_group;");
        const unsigned a_tile = base + stage * STAGE_BYTES + wg * MT * 64 * ROWB;
        const unsigned b_tile = base + stage * STAGE_BYTES + A_STAGE;
        asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
        #pragma unroll
        for (int j = 0; j < ROWB / 32; ++j)            // one wgmma reads 32 bytes of each row
            #pragma unroll
            for (int mt = 0; mt < MT; ++mt)
                WGMMA_N(acc[mt], desc(a_tile + mt * 64 * ROWB + j * 32), desc(b_tile + j * 32));
        asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
        asm volatile("wgmma.wait_group.sync.aligned 1;" ::: "memory");
        if (pending) store_a_scalar(base + next * STAGE_BYTES);
        stage = stage + 1 == STAGES ? 0 : stage + 1;
        next = next + 1 == STAGES ? 0 : next + 1;
    }
    asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory");
    asm volatile("cp.async.wait_group 0;");

    // accumulator (row, column) of acc[mt][4j + 2h + e]: row 16 * (warp % 4) + lane / 4 + 8h of
    // the warpgroup's tile mt, column 8j + 2 * (lane % 4) + e
    const int g = lane >> 2, t4 = lane & 3;
    #pragma unroll
    for (int j = 0; j < BN / 8; ++j) {
        const int col = n_block + j * 8 + t4 * 2;
        if (col >= K) continue;
        float2 b2 = make_float2(0.f, 0.f);
        if (flags & 1) b2 = load2(bias + col);
        #pragma unroll
        for (int mt = 0; mt < MT; ++mt)
            #pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int row = m_block + (wg * MT + mt) * 64 + (warp & 3) * 16 + g + 8 * h;
                if (row >= M) continue;
                const size_t at = (size_t)row * K + col;
                const float2 r2 = flags & 2 ? load2(res + at) : make_float2(0.f, 0.f);
                const float2 v = epilogue2(acc[mt][4 * j + 2 * h], acc[mt][4 * j + 2 * h + 1],
                                           b2, flags, r2);
                store2(y + at, v.x, v.y);
            }
    }
}
"""

_KERNELS = {}
OPTIONS = ("-arch=sm_90a",)      # wgmma exists on sm_90a only (CuPy adds its own -arch after)


def _source(kind, tile):
    T, itemsize, _, _ = TYPES[kind]
    name = (f"cupyprune_implicit_conv_wgmma_{kind}_{tile.bm}x{tile.bn}x{BK * tile.span}"
            f"_s{tile.stages}")
    source = (MMA_SOURCE + CONV_SOURCE + _SOURCE).replace(
        "@WGMMA@", wgmma_source(tile.bn, kind)).replace("WGMMA_N", f"wgmma_m64n{tile.bn}")
    return name, (source.replace("@NAME@", name).replace("@T@", T)
                  .replace("@PTX@", "bf16" if kind == "bf16" else "f16")
                  .replace("@IS_BF16@", str(int(kind == "bf16"))).replace("@EB@", str(itemsize))
                  .replace("@BM@", str(tile.bm)).replace("@BN@", str(tile.bn))
                  .replace("@STAGES@", str(tile.stages)).replace("@SPAN@", str(tile.span)))


def tiles_for(itemsize):
    """The tiles whose stages fit a block's shared memory and whose rows fit the swizzle, for
    values of `itemsize` bytes."""
    return tuple(t for t in TILES if t.smem_bytes(itemsize) <= SMEM_LIMIT
                 and BK * t.span * itemsize <= MAX_ROW_BYTES)


def kernel_sources():
    """(name, CUDA source) of every kernel this module can compile (for an NVRTC check)."""
    for kind, (_, itemsize, _, _) in TYPES.items():
        for tile in tiles_for(itemsize):
            yield _source(kind, tile)


def _kernel(kind, tile):
    kernel = compile_kernel(_KERNELS, (kind, tile), lambda: _source(kind, tile), OPTIONS)
    need = tile.smem_bytes(TYPES[kind][1])
    if kernel.max_dynamic_shared_size_bytes < need:
        kernel.max_dynamic_shared_size_bytes = need
    return kernel


def supported():
    """Whether this GPU runs sm_90a code (wgmma): compute capability 9.0 exactly."""
    import cupy
    return int(cupy.cuda.Device().compute_capability) == 90


def fits(x_shape, M, K, TP, tile):
    """Whether the kernel's 32-bit offsets and grid cover this call: those of
    implicit_conv.fits, and the transposed weight (K, TP) indexed in 32 bits."""
    return implicit_conv.fits(x_shape, M, K, tile) and K * TP <= implicit_conv.INDEX_LIMIT


def kind_of(dtype):
    """The kernel kind of a run dtype: f16, bf16 (its bits in uint16) or tf32 (float32)."""
    from ..precision import is_bf16
    if is_bf16(dtype):
        return "bf16"
    return {np.dtype(np.float16): "f16", np.dtype(np.float32): "tf32"}[np.dtype(dtype)]


def implicit_conv_wgmma(x, wt, rows, vsteps, out_hw, stride, tile, bias=None, residual=None,
                        relu=False, post_relu=False, out=None):
    """x (N, H, W, C) C-contiguous CuPy array (fp16, bf16 bits, or fp32 multiplied in TF32);
    wt (K, TP) the plan's weight transposed, C-contiguous; rows (TP, 4) int32 device
    descriptors for x's width (ImplicitPlan.rows_for); vsteps the plan's leading vector
    k-steps (all of them for a wide tile: WgmmaTile.runs);
    out_hw (OH, OW); stride (sh, sw) -> y (M, K) = post_relu?(relu?(conv + bias) + residual).
    bias (K,), residual (M, K) or None."""
    import cupy
    N, H, W, C = x.shape
    K, TP = wt.shape
    OH, OW = out_hw
    M = N * OH * OW
    kind = kind_of(x.dtype)
    if not tile.runs(TYPES[kind][1], vsteps, TP):
        raise ValueError(f"{tile.name} does not run a {kind} plan of {TP} rows with {vsteps} "
                         f"vector k-steps")
    kernel = _kernel(kind, tile)
    ksteps = -(-TP // (BK * tile.span))
    vsteps = ksteps if tile.span == 2 else vsteps
    y = cupy.empty((M, K), dtype=x.dtype) if out is None else out
    flags = epilogue_flags(bias, residual, relu, post_relu)
    i32 = np.int32
    kernel((-(-K // tile.bn), -(-M // tile.bm)), (THREADS,),
           (x, wt, rows, y, x if bias is None else bias, x if residual is None else residual,
            i32(H), i32(W), i32(C), i32(OH), i32(OW), i32(stride[0]), i32(stride[1]), i32(M),
            i32(K), i32(TP), i32(ksteps), i32(vsteps), i32(flags)),
           shared_mem=tile.smem_bytes(TYPES[kind][1]))
    return y
