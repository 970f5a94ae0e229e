"""A lane-by-lane host emulation of gpu/implicit_conv.py's kernel, for CPU tests of its index
math: the pixel table, the vector and scalar A copies and the B copies of every thread (each
shared-memory value must be written once per k-step), ldmatrix and mma.m16n8k16 by their PTX
ISA definitions ("Matrix Fragments for mma.m16n8k16", "ldmatrix"), and the epilogue's lane ->
(row, column) map (each output written once). Values stay float64: this checks addressing,
not rounding. Mirrors the CUDA source expression by expression; keep the two in step."""
import numpy as np

BK = 32
LANES = np.arange(32)


def _ldmatrix(smem, addresses, trans):
    """x4: lanes 8i..8i+7 give the row addresses (in halves) of matrix i -> regs (32, 4, 2):
    lane l gets row l // 4, elements 2 (l % 4) + {0, 1} (columns, transposed, when trans)."""
    regs = np.empty((32, 4, 2))
    for i in range(4):
        m = np.stack([smem[a:a + 8] for a in addresses[8 * i: 8 * i + 8]])      # (8, 8)
        m = m.T if trans else m
        regs[:, i, 0] = m[LANES // 4, 2 * (LANES % 4)]
        regs[:, i, 1] = m[LANES // 4, 2 * (LANES % 4) + 1]
    return regs


def _mma(acc, a, b0, b1):
    """acc (32, 4) += A (16x16) @ B (16x8), from lane fragments a (32, 4, 2), b0/b1 (32, 2)."""
    g, t = LANES // 4, LANES % 4
    A = np.zeros((16, 16))
    B = np.zeros((16, 8))
    for r, (dr, dc) in enumerate([(0, 0), (8, 0), (0, 8), (8, 8)]):
        for e in range(2):
            A[g + dr, 2 * t + dc + e] = a[:, r, e]
    for e in range(2):
        B[2 * t + e, g] = b0[:, e]
        B[2 * t + 8 + e, g] = b1[:, e]
    C = A @ B
    acc[:, 0] += C[g, 2 * t]
    acc[:, 1] += C[g, 2 * t + 1]
    acc[:, 2] += C[g + 8, 2 * t]
    acc[:, 3] += C[g + 8, 2 * t + 1]


def pixel_table(m_block, BM, M, HWC, out_hw, stride):
    """The kernels' fill_pixel_table: (BM, 3) (offset of the pixel's first value at tap (0, 0),
    input row, input column) of Y's rows m_block..; a row past M gets a row no tap reaches."""
    H, W, C = HWC
    OH, OW = out_hw
    sh, sw = stride
    pix = np.zeros((BM, 3), dtype=np.int64)
    for i in range(BM):
        m = m_block + i
        pix[i] = (0, -(1 << 29), 0)
        if m < M:
            ow, t = m % OW, m // OW
            oh, n = t % OH, t // OH
            pix[i] = (((n * H + oh * sh) * W + ow * sw) * C, oh * sh, ow * sw)
    return pix


def conv_case(rng, case, both_kinds):
    """A test case (N, C, K, kernel, stride, padding, dilation, H, W, kept fraction, vec_min)
    -> x (N, H, W, C), its plan, the kept rows' weight (T, K), out_hw, and the reference conv
    (M, K) by torch.nn.functional.conv2d in float64. both_kinds: channels 0-15 of every tap
    kept whole, so the plan holds vector and scalar k-steps."""
    import torch
    import torch.nn.functional as F

    from cupyprune.ops.im2col import out_size
    from cupyprune.ops.implicit_plan import build_plan
    from cupyprune.patterns import conv_weight_to_f
    N, C, K, k, s, p, d, H, W, keep, vec_min = case
    x = rng.standard_normal((N, H, W, C))
    f = conv_weight_to_f(rng.standard_normal((K, C, k, k)))                     # (R, K)
    R = f.shape[0]
    taps = np.sort(rng.permutation(R)[:max(1, int(round(keep * R)))])
    if both_kinds:
        taps = np.union1d(taps, np.flatnonzero(np.arange(R) % C < 16))
    plan = build_plan(taps, (k, k, (s, s), (p, p), (d, d)), C, vec_min=vec_min)
    if both_kinds:
        assert 0 < plan.vsteps < plan.ksteps
    full = np.zeros((R, K))
    full[taps] = f[taps]
    wt = torch.from_numpy(np.ascontiguousarray(full.reshape(k, k, C, K).transpose(3, 2, 0, 1)))
    ref = F.conv2d(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), wt, stride=s, padding=p,
                   dilation=d).permute(0, 2, 3, 1).reshape(-1, K).numpy()        # (M, K)
    out_hw = (out_size(H, k, s, p, d), out_size(W, k, s, p, d))
    return x, plan, f[taps], out_hw, ref


def emulate(x, w, rows, vsteps, out_hw, stride, config, bias=None, res=None, relu=False,
            post_relu=False):
    """Same arguments as implicit_conv.implicit_conv, host arrays -> y (M, K) float64; raises
    AssertionError where a shared-memory value or an output is written twice or never."""
    N, H, W, C = x.shape
    TP, K = w.shape
    OH, OW = out_hw
    sh, sw = stride
    M = N * OH * OW
    BM, BN, WARPS_M, WARPS_N = config.bm, config.bn, config.wm, config.wn
    WARPS, THREADS = WARPS_M * WARPS_N, config.threads
    WTM, WTN = BM // WARPS_M, BN // WARPS_N
    MI, NI = WTM // 16, WTN // 8
    AS, BS = BK + 8, BN + 8
    B_JOBS, B_ROW_STEP = BK * BN // 8 // THREADS, THREADS // (BN // 8)
    A_VEC_JOBS = BM * 4 // THREADS
    xf, wf = x.reshape(-1).astype(np.float64), w.reshape(-1).astype(np.float64)
    y = np.full((M, K), np.nan)
    written = np.zeros((M, K), dtype=int)
    for by in range(-(-M // BM)):
        for bx in range(-(-K // BN)):
            n_block, m_block = bx * BN, by * BM
            pix = pixel_table(m_block, BM, M, (H, W, C), out_hw, stride)
            acc = np.zeros((WARPS, MI, NI, 32, 4))
            for ks in range(TP // BK):
                a_tile = np.full(BM * AS, np.nan)
                b_tile = np.full(BK * BS, np.nan)
                a_count = np.zeros(BM * AS, dtype=int)
                b_count = np.zeros(BK * BS, dtype=int)
                for tid in range(THREADS):
                    warp, lane = tid // 32, tid % 32
                    # the per-thread values the kernel works out before its k-loop
                    b_pack, b_row = tid % (BN // 8), tid // (BN // 8)
                    b_ok = n_block + b_pack * 8 < K
                    b_src = b_row * K + (n_block + b_pack * 8 if b_ok else 0)
                    b_dst = b_row * BS + b_pack * 8
                    pk = tid & 3
                    a_dst = (tid >> 2) * AS + pk * 8
                    d = rows[ks * BK + (pk * 8 if ks < vsteps else lane)]     # descriptor(ks)
                    src = b_src + ks * BK * K                                 # load_b
                    for it in range(B_JOBS):
                        dst = b_dst + it * B_ROW_STEP * BS
                        at = src + it * B_ROW_STEP * K
                        b_tile[dst:dst + 8] = wf[at:at + 8] if b_ok else 0
                        b_count[dst:dst + 8] += 1
                    if ks < vsteps:                                           # load_a_vector
                        for it in range(A_VEC_JOBS):
                            off, ih, iw = pix[(tid >> 2) + it * (THREADS // 4)]
                            ok = 0 <= ih + d[0] < H and 0 <= iw + d[1] < W
                            dst = a_dst + it * (THREADS // 4) * AS
                            a_tile[dst:dst + 8] = xf[off + d[2]:][:8] if ok else 0
                            a_count[dst:dst + 8] += 1
                    else:                                                     # load_a_scalar
                        dy, dx, off = d[:3]
                        for it in range(BM // WARPS):
                            i = warp + it * WARPS
                            ok = 0 <= pix[i, 1] + dy < H and 0 <= pix[i, 2] + dx < W
                            a_tile[i * AS + lane] = xf[pix[i, 0] + off] if ok else 0
                            a_count[i * AS + lane] += 1
                used_a = (np.arange(BM * AS) % AS) < BK
                used_b = (np.arange(BK * BS) % BS) < BN
                assert (a_count[used_a] == 1).all(), f"A of k-step {ks}: copies {a_count}"
                assert (b_count[used_b] == 1).all(), f"B of k-step {ks}"
                for warp in range(WARPS):
                    wm, wn = warp % WARPS_M, warp // WARPS_M
                    for kk in range(0, BK, 16):
                        a = [_ldmatrix(a_tile, (wm * WTM + mi * 16 + (LANES & 15)) * AS + kk
                                       + (LANES >> 4) * 8, trans=False) for mi in range(MI)]
                        b = [None] * NI
                        for nj in range(NI // 2):
                            t = _ldmatrix(b_tile, (kk + (LANES & 15)) * BS + wn * WTN + nj * 16
                                          + (LANES >> 4) * 8, trans=True)
                            b[2 * nj] = (t[:, 0], t[:, 1])
                            b[2 * nj + 1] = (t[:, 2], t[:, 3])
                        for mi in range(MI):
                            for ni in range(NI):
                                _mma(acc[warp, mi, ni], a[mi], *b[ni])
            for warp in range(WARPS):                                          # epilogue
                wm, wn = warp % WARPS_M, warp // WARPS_M
                for lane in range(32):
                    g, t4 = lane >> 2, lane & 3
                    for ni in range(NI):
                        col = n_block + wn * WTN + ni * 8 + t4 * 2
                        if col >= K:
                            continue
                        b2 = (0.0, 0.0) if bias is None else (bias[col], bias[col + 1])
                        for mi in range(MI):
                            for h in range(2):
                                row = m_block + wm * WTM + mi * 16 + g + 8 * h
                                if row >= M:
                                    continue
                                v = acc[warp, mi, ni, lane, 2 * h: 2 * h + 2] + b2
                                v = np.maximum(v, 0) if relu else v
                                v = v + (0 if res is None else res[row, col:col + 2])
                                v = np.maximum(v, 0) if post_relu else v
                                y[row, col:col + 2] = v
                                written[row, col:col + 2] += 1
    assert (written == 1).all(), "an output written twice or never"
    return y
