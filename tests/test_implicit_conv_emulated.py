"""The implicit-GEMM conv kernel's index math on the CPU: a lane-by-lane emulation of every tile
configuration (tests/implicit_conv_emulator.py) against torch.nn.functional.conv2d in float64,
with several row and column tiles, partial tiles, vector and scalar k-steps, and the fused
epilogue. The kernel itself runs in tests/test_implicit_conv_gpu.py."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cupyprune.gpu.implicit_conv import CONFIGS
from cupyprune.ops.im2col import out_size
from cupyprune.ops.implicit_plan import build_plan
from cupyprune.patterns import conv_weight_to_f
from implicit_conv_emulator import emulate

# N, C, K, kernel, stride, padding, dilation, H, W, kept fraction, vec_min
CASES = [(2, 32, 136, 3, 1, 1, 1, 12, 11, 0.5, 6),      # 3 row tiles, a partial column tile
         (1, 3, 16, 7, 2, 3, 1, 13, 11, 1.0, 6),        # the stem: scalar k-steps only
         (3, 32, 24, 3, 2, 2, 2, 9, 10, 0.6, 1)]        # dense plan of a pruned layer, dilation


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
@pytest.mark.parametrize("case", CASES, ids=["rows-cols-mixed", "stem", "dilated-dense-plan"])
def test_emulated_kernel_matches_torch(rng, case, config):
    N, C, K, k, s, p, d, H, W, keep, vec_min = case
    x = rng.standard_normal((N, H, W, C))
    f = conv_weight_to_f(rng.standard_normal((K, C, k, k)))                     # (R, K)
    R = f.shape[0]
    taps = np.sort(rng.permutation(R)[:max(1, int(round(keep * R)))])
    if case is CASES[0]:                      # channels 0-15 of every tap whole: vector packs
        taps = np.union1d(taps, np.flatnonzero(np.arange(R) % C < 16))
    plan = build_plan(taps, (k, k, (s, s), (p, p), (d, d)), C, vec_min=vec_min)
    if case is CASES[0]:
        assert 0 < plan.vsteps < plan.ksteps                     # both kinds of k-step
    full = np.zeros((R, K))
    full[taps] = f[taps]
    wt = torch.from_numpy(np.ascontiguousarray(full.reshape(k, k, C, K).transpose(3, 2, 0, 1)))
    ref = F.conv2d(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), wt, stride=s, padding=p,
                   dilation=d).permute(0, 2, 3, 1).reshape(-1, K).numpy()        # (M, K)
    bias, res = rng.standard_normal(K), rng.standard_normal(ref.shape)
    out_hw = (out_size(H, k, s, p, d), out_size(W, k, s, p, d))
    y = emulate(x, plan.weight(f[taps]), plan.descriptors(W), plan.vsteps, out_hw, (s, s),
                config, bias=bias, res=res, relu=False, post_relu=True)
    expect = np.maximum(ref + bias + res, 0)
    np.testing.assert_allclose(y, expect, rtol=0, atol=1e-10 * np.abs(expect).max())
