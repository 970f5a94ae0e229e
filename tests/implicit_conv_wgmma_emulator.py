"""A host emulation of gpu/implicit_conv_wgmma.py's kernel, for CPU tests of its index math: the
16-byte copies of A (vector k-steps) and B, the scalar k-steps' stores, each to its swizzled
place in shared memory (every byte of a stage written once per k-step), then the tensor cores'
reads through the kernel's matrix descriptors as the PTX ISA defines them ("Matrix Descriptor
Format", "Shared Memory Matrix Layout": K-major, 8-row groups SBO bytes apart, the swizzle a
function of the address bits), and the accumulators' fragment -> (row, column) map of the
epilogue (each output written once). Values stay float64: this checks addressing, not
rounding. The copy side mirrors the CUDA source expression by expression; the read side is
written from the ISA, not from the kernel, so the two meet only if the layout is right."""
import numpy as np

from implicit_conv_emulator import pixel_table

BK, THREADS = 32, 256
SWIZZLE_BYTES = {1: 128, 2: 64, 3: 32}         # descriptor bits 62-63 -> swizzle width


def _swizzle_hw(address, width):
    """What the tensor cores read for a logical byte address under a `width`-byte swizzle:
    16-byte chunk bits [4, 4 + log2(width / 16)) XOR the same count of bits from bit 7."""
    mask = width // 16 - 1
    return address ^ (((address >> 7) & mask) << 4)


def _descriptor_fields(ROWB):
    """The kernel's DESC_BASE for tile rows of ROWB bytes: (stride byte offset, swizzle mode)."""
    return 8 * ROWB, (2 if ROWB == 64 else 1)


def emulate(x, wt, rows, vsteps, out_hw, stride, tile, EB, bias=None, res=None, relu=False,
            post_relu=False):
    """Same arguments as implicit_conv_wgmma.implicit_conv_wgmma (wt (K, TP)) plus EB, the
    bytes a value (2 or 4), host arrays -> y (M, K) float64; raises AssertionError where a
    shared-memory byte or an output is written twice or never. A wide tile (span 2) takes KW =
    64 plan rows a k-step, the last one's second half past TP copied as zeros where the plan
    has an odd count of k-steps."""
    N, H, W, C = x.shape
    K, TP = wt.shape
    OH, OW = out_hw
    sh, sw = stride
    M = N * OH * OW
    BM, BN, SPAN = tile.bm, tile.bn, tile.span
    assert tile.runs(EB, vsteps, TP), "the host never launches this tile on this plan"
    KW = BK * SPAN
    ROWB = KW * EB
    CH, VPC = ROWB // 16, 16 // EB
    CPP = 8 // VPC
    MT = BM // 128
    A_STAGE, B_STAGE = BM * ROWB, BN * ROWB
    PASS = THREADS // CH
    SW_SHIFT = 1 if ROWB == 64 else 0
    swz = lambda row, c: c ^ ((row >> SW_SHIFT) & (CH - 1))              # noqa: E731
    xf, wf = x.reshape(-1).astype(np.float64), wt.reshape(-1).astype(np.float64)
    y = np.full((M, K), np.nan)
    written = np.zeros((M, K), dtype=int)
    K_INSTR = 32 // EB                                 # k of one wgmma: 32 bytes of a row
    sbo, mode = _descriptor_fields(ROWB)
    width = SWIZZLE_BYTES[mode]
    for by in range(-(-M // BM)):
        for bx in range(-(-K // BN)):
            n_block, m_block = bx * BN, by * BM
            pix = pixel_table(m_block, BM, M, (H, W, C), out_hw, stride)
            D = np.zeros((2 * MT, 64, BN))             # each warpgroup's 64-row tiles
            ksteps = -(-TP // KW)
            for ks in range(ksteps):
                stage = np.full((A_STAGE + B_STAGE) // EB, np.nan)   # values at byte / EB
                count = np.zeros(stage.size, dtype=int)

                def put(byte, values):
                    at = byte // EB + np.arange(len(values))
                    stage[at] = values
                    count[at] += 1

                for tid in range(THREADS):
                    warp, lane = tid // 32, tid % 32
                    c, row0 = tid % CH, tid // CH
                    chunk_dst = row0 * ROWB + swz(row0, c) * 16
                    in_plan = ks * KW + c * VPC < TP          # always, where SPAN is 1
                    for it in range(BN // PASS):                      # B
                        n = n_block + row0 + it * PASS
                        ok = n < K and in_plan
                        src = (n if n < K else 0) * TP + c * VPC + ks * KW
                        put(A_STAGE + chunk_dst + it * PASS * ROWB,
                            wf[src:src + VPC] if ok else np.zeros(VPC))
                    if SPAN == 2 or ks < vsteps:                      # A, vector
                        d = rows[ks * KW + (c // CPP) * 8] if in_plan else (0, 0, 0, 0)
                        for it in range(BM // PASS):
                            off, ih, iw = pix[row0 + it * PASS]
                            off += (c % CPP) * VPC
                            ok = in_plan and 0 <= ih + d[0] < H and 0 <= iw + d[1] < W
                            put(chunk_dst + it * PASS * ROWB,
                                xf[off + d[2]:off + d[2] + VPC] if ok else np.zeros(VPC))
                    else:                                             # A, scalar
                        d = rows[ks * KW + lane]
                        for it in range(BM // 8):
                            p = warp + it * 8
                            off, ih, iw = pix[p]
                            ok = 0 <= ih + d[0] < H and 0 <= iw + d[1] < W
                            put(p * ROWB + swz(p, lane // VPC) * 16 + (lane % VPC) * EB,
                                [xf[off + d[2]] if ok else 0.0])
                assert (count == 1).all(), f"k-step {ks}: shared memory written {count.max()}x"

                def operand(start, rows_):
                    """(rows_, K_INSTR) read through a descriptor at byte `start`."""
                    m = np.arange(rows_)[:, None]
                    k = np.arange(K_INSTR)[None, :]
                    logical = start + (m // 8) * sbo + (m % 8) * width + k * EB
                    return stage[_swizzle_hw(logical, width) // EB]

                for wg in range(2):
                    for j in range(ROWB // 32):
                        b = operand(A_STAGE + j * 32, BN)                   # (BN, k)
                        for mt in range(MT):
                            a = operand((wg * MT + mt) * 64 * ROWB + j * 32, 64)
                            D[wg * MT + mt] += a @ b.T
            for tid in range(THREADS):                  # the epilogue's fragment map
                warp, lane = tid // 32, tid % 32
                wg, g, t4 = warp >> 2, lane >> 2, lane & 3
                for j in range(BN // 8):
                    col = n_block + j * 8 + t4 * 2
                    if col >= K:
                        continue
                    b2 = bias[col:col + 2] if bias is not None else np.zeros(2)
                    for mt in range(MT):
                        for h in range(2):
                            row = m_block + (wg * MT + mt) * 64 + (warp & 3) * 16 + g + 8 * h
                            if row >= M:
                                continue
                            r = (warp & 3) * 16 + g + 8 * h       # acc[mt][4j + 2h + e]
                            v = D[wg * MT + mt, r, j * 8 + t4 * 2: j * 8 + t4 * 2 + 2] + b2
                            if relu:
                                v = np.maximum(v, 0)
                            if res is not None:
                                v = v + res[row, col:col + 2]
                            if post_relu:
                                v = np.maximum(v, 0)
                            y[row, col:col + 2] = v
                            written[row, col:col + 2] += 1
    assert (written == 1).all(), "an output written twice or never"
    return y
