"""The implicit-GEMM conv kernel's index math on the CPU: a lane-by-lane emulation of every tile
configuration (tests/implicit_conv_emulator.py) against torch.nn.functional.conv2d in float64,
with several row and column tiles, partial tiles, vector and scalar k-steps, and the fused
epilogue. The kernel itself runs in tests/test_implicit_conv_gpu.py."""
import numpy as np
import pytest

from cupyprune.gpu.implicit_conv import CONFIGS
from implicit_conv_emulator import conv_case, emulate

# N, C, K, kernel, stride, padding, dilation, H, W, kept fraction, vec_min
CASES = [(2, 32, 136, 3, 1, 1, 1, 12, 11, 0.5, 6),      # 3 row tiles, a partial column tile
         (1, 3, 16, 7, 2, 3, 1, 13, 11, 1.0, 6),        # the stem: scalar k-steps only
         (3, 32, 24, 3, 2, 2, 2, 9, 10, 0.6, 1)]        # dense plan of a pruned layer, dilation


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
@pytest.mark.parametrize("case", CASES, ids=["rows-cols-mixed", "stem", "dilated-dense-plan"])
def test_emulated_kernel_matches_torch(rng, case, config):
    x, plan, w_kept, out_hw, ref = conv_case(rng, case, both_kinds=case is CASES[0])
    K, W, s = case[2], case[8], case[4]
    bias, res = rng.standard_normal(K), rng.standard_normal(ref.shape)
    y = emulate(x, plan.weight(w_kept), plan.descriptors(W), plan.vsteps, out_hw, (s, s),
                config, bias=bias, res=res, relu=False, post_relu=True)
    expect = np.maximum(ref + bias + res, 0)
    np.testing.assert_allclose(y, expect, rtol=0, atol=1e-10 * np.abs(expect).max())
