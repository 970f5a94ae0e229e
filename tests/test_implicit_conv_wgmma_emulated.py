"""The wgmma implicit-GEMM conv kernel's index math on the CPU: a host emulation of its copies
into swizzled shared memory and of the tensor cores' descriptor reads
(tests/implicit_conv_wgmma_emulator.py) against torch.nn.functional.conv2d in float64, for every
tile in 16-bit values and in fp32 (TF32), with several row and column tiles, partial tiles,
vector and scalar k-steps, and the fused epilogue. The kernel itself runs in
tests/test_implicit_conv_gpu.py."""
import numpy as np
import pytest

from cupyprune.gpu.implicit_conv_wgmma import TILES, tiles_for
from cupyprune.ops.implicit_plan import build_plan
from cupyprune.patterns import conv_weight_to_f
from implicit_conv_emulator import conv_case
from implicit_conv_wgmma_emulator import _swizzle_hw, emulate

# N, C, K, kernel, stride, padding, dilation, H, W, kept fraction, vec_min
CASES = {"rows-cols-mixed": (2, 32, 264, 3, 1, 1, 1, 12, 11, 0.5, 6),   # 3 row tiles, a partial
                                                                        # column tile
         "stem": (1, 3, 16, 7, 2, 3, 1, 13, 11, 1.0, 6),        # scalar k-steps only
         "dilated-dense-plan": (3, 32, 24, 3, 2, 2, 2, 9, 10, 0.6, 1),   # of a pruned layer
         "dense-odd-ksteps": (2, 32, 40, 3, 1, 1, 1, 9, 8, 1.0, 6)}  # 9 k-steps of 32 rows
ALL_VECTOR = ("dilated-dense-plan", "dense-odd-ksteps")      # the plans a wide tile runs
RUNS = [(t, eb, case) for eb in (2, 4) for t in tiles_for(eb)
        for case in (CASES if t.span == 1 else ALL_VECTOR)]


@pytest.mark.parametrize("tile,EB,case", RUNS,
                         ids=[f"{t.name}-{8 * eb}bit-{case}" for t, eb, case in RUNS])
def test_emulated_kernel_matches_torch(rng, case, tile, EB):
    case = CASES[case]
    x, plan, w_kept, out_hw, ref = conv_case(rng, case, both_kinds=case[9] == 0.5)
    if tile.span == 2:                      # all vector: the wide tile's whole contract
        assert plan.vsteps == plan.ksteps and tile.runs(EB, plan.vsteps, plan.rows)
    K, W, s = case[2], case[8], case[4]
    bias, res = rng.standard_normal(K), rng.standard_normal(ref.shape)
    w_plan = np.ascontiguousarray(plan.weight(w_kept).T)                          # (K, TP)
    y = emulate(x, w_plan, plan.descriptors(W), plan.vsteps, out_hw, (s, s), tile, EB,
                bias=bias, res=res, relu=True, post_relu=True)
    expect = np.maximum(np.maximum(ref + bias, 0) + res, 0)
    np.testing.assert_allclose(y, expect, rtol=1e-9, atol=1e-9)


def test_a_write_that_ignores_the_swizzle_is_caught(rng, monkeypatch):
    """The emulated reads follow the ISA's swizzle, so copies placed without it land on other
    rows' values: the check can fail."""
    import implicit_conv_wgmma_emulator as emu
    N, C, K, k = 1, 32, 16, 3
    x = rng.standard_normal((N, 6, 6, C))
    f = conv_weight_to_f(rng.standard_normal((K, C, k, k)))
    taps = np.arange(f.shape[0])
    plan = build_plan(taps, (k, k, (1, 1), (1, 1), (1, 1)), C)
    wt = np.ascontiguousarray(plan.weight(f).T)
    good = emu.emulate(x, wt, plan.descriptors(6), plan.vsteps, (6, 6), (1, 1), TILES[0], 2)
    monkeypatch.setattr(emu, "_swizzle_hw", lambda address, width: address)
    bad = emu.emulate(x, wt, plan.descriptors(6), plan.vsteps, (6, 6), (1, 1), TILES[0], 2)
    assert not np.allclose(good, bad)


def test_hardware_swizzle_is_a_permutation_of_each_atom():
    for width in (64, 128):
        atom = np.arange(8 * width // 16) * 16                        # 16-byte chunks, 8 rows
        moved = _swizzle_hw(atom, width)
        assert sorted(moved.tolist()) == atom.tolist() and (moved != atom).any()
