"""The implicit-GEMM conv kernels (gpu/implicit_conv.py, mma.sync; gpu/implicit_conv_wgmma.py,
wgmma on sm_90) on the GPU, against torch.nn.functional.conv2d in float64 on the same rounded
inputs: every tile configuration, fp16 and bf16 (and TF32 on fp32 values for wgmma), 3x3
stride 1 and 2, 1x1, the 7x7 stride-2 stem, dilation, odd sizes, channels that are not
multiples of 8, 25-100% of rows kept, and the fused epilogue; then through a loaded model with
each configuration forced, and with the timed choice."""
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import rel_err
from cupyprune import bf16
from cupyprune.format import write_model_file
from cupyprune.ops.im2col import out_size
from cupyprune.ops.implicit_plan import build_plan
from cupyprune.patterns import conv_weight_to_f
from cupyprune.precision import PRECISIONS

pytestmark = pytest.mark.gpu

TOL = {"fp16": 4e-3, "bf16": 2e-2, "tf32": 4e-3}   # max |error| / max |reference|
PRECISIONS_TESTED = ["fp16", "bf16", "tf32"]
# N, C, K, kernel, stride, padding, dilation, H, W
SHAPES = [(2, 64, 64, 3, 1, 1, 1, 14, 14), (2, 64, 128, 3, 2, 1, 1, 15, 15),
          (3, 3, 64, 7, 2, 3, 1, 33, 31), (2, 128, 64, 1, 1, 0, 1, 9, 9),
          (2, 64, 128, 1, 2, 0, 1, 13, 13), (2, 20, 24, 3, 1, 1, 1, 11, 10),
          (1, 40, 72, 3, 1, 1, 1, 7, 9), (5, 32, 16, 3, 1, 2, 2, 9, 9)]


def _ids(shapes):
    return [f"n{s[0]}c{s[1]}k{s[2]}f{s[3]}s{s[4]}d{s[6]}h{s[7]}" for s in shapes]


def _rounded(host, precision):
    """host float64 -> (device array in the run's storage, the float64 values it holds)."""
    import cupy
    dev = bf16.to_storage(cupy, host, PRECISIONS[precision])
    back = bf16.from_bits(dev) if precision == "bf16" else dev
    return dev, cupy.asnumpy(back).astype(np.float64)


def _as_float64(y, precision):
    import cupy
    return cupy.asnumpy(bf16.from_bits(y) if precision == "bf16" else y).astype(np.float64)


def _case(rng, shape, keep, precision, vec_min):
    N, C, K, k, s, p, d, H, W = shape
    x, x64 = _rounded(rng.standard_normal((N, H, W, C)), precision)
    f = conv_weight_to_f(rng.standard_normal((K, C, k, k)) / np.sqrt(C * k * k))     # (R, K)
    R = f.shape[0]
    taps = np.sort(rng.permutation(R)[:max(1, int(round(keep * R)))])
    wk, wk64 = _rounded(f[taps], precision)                                          # (T, K)
    plan = build_plan(taps, (k, k, (s, s), (p, p), (d, d)), C, vec_min=vec_min)
    full = np.zeros((R, K))
    full[taps] = wk64
    wt = torch.from_numpy(np.ascontiguousarray(full.reshape(k, k, C, K).transpose(3, 2, 0, 1)))
    ref = F.conv2d(torch.from_numpy(x64.transpose(0, 3, 1, 2).copy()), wt, stride=s,
                   padding=p, dilation=d).permute(0, 2, 3, 1).reshape(-1, K).numpy()  # (M, K)
    out_hw = (out_size(H, k, s, p, d), out_size(W, k, s, p, d))
    return x, plan, plan.weight(wk), ref, out_hw


def _poisoned(M, K, dtype):
    import cupy
    if np.dtype(dtype).itemsize == 4:
        return cupy.full((M, K), np.nan, dtype=dtype)
    return cupy.full((M, K), 0xFFFF, dtype=np.uint16).view(dtype)   # NaN in fp16 and bf16


def _kernels(precision):
    """(tile, launch(x, w (TP, K), rows, vsteps, out_hw, stride, **epilogue)) for every tile
    of both kernels that runs this precision on this GPU."""
    import cupy
    from cupyprune.gpu import implicit_conv, implicit_conv_wgmma as wg
    found = []
    if precision != "tf32":
        found += [(c, lambda x, w, *a, c=c, **k: implicit_conv.implicit_conv(x, w, *a, c, **k))
                  for c in implicit_conv.CONFIGS]
    if wg.supported():
        found += [(t, lambda x, w, *a, t=t, **k: wg.implicit_conv_wgmma(
            x, cupy.ascontiguousarray(w.T), *a, t, **k))
            for t in wg.tiles_for(4 if precision == "tf32" else 2)]
    if not found:
        pytest.skip(f"no implicit kernel runs {precision} on this GPU")
    return found


def _is_wide(config):
    """A wgmma tile of two plan k-steps a k-step: it runs all-vector plans only."""
    return getattr(config, "span", 1) == 2


def _all_vector(plan):
    return plan.vsteps == plan.ksteps


@pytest.mark.parametrize("precision", PRECISIONS_TESTED)
@pytest.mark.parametrize("keep", [0.25, 0.5, 0.75, 1.0])
@pytest.mark.parametrize("shape", SHAPES, ids=_ids(SHAPES))
def test_kernel_matches_torch(rng, shape, keep, precision):
    """Every tile on the plans of vec_min 6, 4 and 1; a wide tile on the all-vector ones (with
    C a multiple of 8, at least the dense plan of vec_min 1), refused on the others."""
    import cupy
    kernels = _kernels(precision)
    wide_runs = 0
    for vec_min in (6, 4, 1):
        x, plan, w, ref, out_hw = _case(rng, shape, keep, precision, vec_min)
        rows = cupy.asarray(plan.descriptors(shape[8]))
        for config, launch in kernels:
            y = _poisoned(*ref.shape, x.dtype)
            if _is_wide(config) and not _all_vector(plan):
                with pytest.raises(ValueError, match="does not run"):
                    launch(x, w, rows, plan.vsteps, out_hw, (shape[4],) * 2, out=y)
                continue
            wide_runs += _is_wide(config)
            launch(x, w, rows, plan.vsteps, out_hw, (shape[4],) * 2, out=y)
            err = rel_err(_as_float64(y, precision), ref)
            assert err < TOL[precision], f"{config.name} vec_min {vec_min}: error {err:.2e}"
    wide = [c for c, _ in kernels if _is_wide(c)]
    N, C, K, k = shape[:4]
    if wide and keep == 1.0 and (k * k * C) % 32 == 0:     # a dense plan of whole k-steps
        assert wide_runs >= len(wide)


EPILOGUE_SHAPES = [SHAPES[0], SHAPES[2], SHAPES[6]]


@pytest.mark.parametrize("precision", PRECISIONS_TESTED)
@pytest.mark.parametrize("relu,residual,post", [(True, False, False), (False, True, True),
                                                (True, True, False), (False, False, False)])
@pytest.mark.parametrize("shape", EPILOGUE_SHAPES, ids=_ids(EPILOGUE_SHAPES))
def test_fused_epilogue_matches_torch(rng, shape, relu, residual, post, precision):
    kernels = _kernels(precision)
    for vec_min in (6, 1):          # the kept rows; the dense plan, which a wide tile runs
        _check_epilogue(rng, shape, relu, residual, post, precision, vec_min, [
            (c, launch) for c, launch in kernels if (vec_min == 1) == _is_wide(c)])


def _check_epilogue(rng, shape, relu, residual, post, precision, vec_min, kernels):
    import cupy
    x, plan, w, ref, out_hw = _case(rng, shape, 0.5, precision, vec_min)
    if not _all_vector(plan):
        kernels = [(c, launch) for c, launch in kernels if not _is_wide(c)]
    K = ref.shape[1]
    bias, bias64 = _rounded(rng.standard_normal(K), precision)
    res, res64 = _rounded(rng.standard_normal(ref.shape), precision) if residual else (None, 0)
    expect = ref + bias64
    expect = np.maximum(expect, 0) if relu else expect
    expect = expect + res64
    expect = np.maximum(expect, 0) if post else expect
    rows = cupy.asarray(plan.descriptors(shape[8]))
    for config, launch in kernels:
        y = _poisoned(*ref.shape, x.dtype)
        launch(x, w, rows, plan.vsteps, out_hw, (shape[4],) * 2, bias=bias, residual=res,
               relu=relu, post_relu=post, out=y)
        err = rel_err(_as_float64(y, precision), expect)
        assert err < TOL[precision], f"{config.name}: error {err:.2e}"


def _conv_relu_file(tmp_path, rng, shape, keep):
    """A model file of conv (+bias) -> relu, the conv group-pruned to `keep`; -> (path, torch
    weight of the masked conv, bias)."""
    _, C, K, k, s, p, d, _, _ = shape
    w = (rng.standard_normal((K, C, k, k)) / np.sqrt(C * k * k)).astype(np.float32)
    keep_taps = (rng.random((C, k, k)) < keep)
    keep_taps.flat[0] = True
    mask = np.broadcast_to(keep_taps, w.shape).astype(np.float32)
    b = rng.standard_normal(K).astype(np.float32)
    graph = {"inputs": ["x"], "outputs": ["y"], "nodes": [
        {"name": "c", "op": "conv2d", "inputs": ["x"], "outputs": ["t"],
         "params": {"weight": "c.weight", "bias": "c.bias"},
         "attrs": {"stride": [s, s], "padding": [p, p], "dilation": [d, d]}},
        {"name": "r", "op": "relu", "inputs": ["t"], "outputs": ["y"]}]}
    spec = [{"name": "x", "shape": [None, C, None, None], "dtype": "float32", "layout": "NCHW",
             "kind": "image"}]
    path = os.path.join(tmp_path, "conv.safetensors")
    tensors = {"c.weight": w, "c.bias": b}
    if keep < 1:
        tensors["c.weight.mask"] = mask
    write_model_file(path, tensors, graph, spec, exporter="test")
    return path, w * mask, b


@pytest.mark.parametrize("precision,mode", [
    (p, m) for p in ("fp16", "bf16") for m in ("128x128x32s3w8", "128x128x32s3w4",
                                                "wg128x256x32s4", "wg256x128x32s4",
                                                "wg128x256x64s4", "auto")]
    + [("tf32", "wg128x128x32s3"), ("tf32", "auto")])
@pytest.mark.parametrize("keep", [0.5, 1.0])
@pytest.mark.parametrize("shape", [SHAPES[1], SHAPES[2]], ids=_ids([SHAPES[1], SHAPES[2]]))
def test_loaded_model_matches_torch(tmp_path, rng, monkeypatch, shape, keep, mode, precision):
    """Through cupyprune.load: the conv op builds the plan, fuses bias and ReLU, and (auto)
    times its candidates; the tuning cache goes to tmp_path."""
    import cupyprune
    from cupyprune.ops import conv_implicit, tune_cache
    if mode.startswith("wg") or precision == "tf32":
        _kernels("tf32")                     # wgmma: skipped where the GPU is not sm_90
    monkeypatch.setenv(conv_implicit.MODE_ENV, mode)
    monkeypatch.setenv(tune_cache.CACHE_ENV, str(tmp_path))
    path, w, b = _conv_relu_file(tmp_path, rng, shape, keep)
    N, C, _, _, s, p, d, H, W = shape
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    model = cupyprune.load(path, device="gpu", precision=precision, cuda_graph=False)
    conv = model.steps[0].op
    assert conv.implicit is not None
    y = model(x)
    ref = F.relu(F.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(),
                          torch.from_numpy(b).double(), stride=s, padding=p, dilation=d))
    assert rel_err(y, ref.numpy()) < 2 * TOL[precision]
    chosen = conv.implicit.choice[(N, H, W)]
    if mode != "auto":
        assert chosen[1].name == mode
    else:
        assert (tmp_path / tune_cache.FILE_NAME).exists()


@pytest.mark.parametrize("keep", [1.0, 0.5])
def test_the_first_load_holds_what_a_cached_load_holds(tmp_path, rng, monkeypatch, keep):
    """The first call of an 'auto' load times the candidates inside the graph runner's warm-up;
    none of the timing's memory stays: the model then holds the same GPU bytes (default pool
    and graph pools, as `cupyprune bench` counts them) as a later load that reads the cached
    choice, and both give torch's output."""
    import gc

    import cupy

    import cupyprune
    from cupyprune.bench import peak_bytes
    from cupyprune.ops import conv_implicit, tune_cache
    monkeypatch.setenv(conv_implicit.MODE_ENV, "auto")
    monkeypatch.setenv(tune_cache.CACHE_ENV, str(tmp_path))
    shape = (8, 64, 128, 3, 1, 1, 1, 28, 28)      # im2col's matrix: 7 MB in fp16
    path, w, b = _conv_relu_file(tmp_path, rng, shape, keep)
    N, C, _, _, s, p, d, H, W = shape
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    ref = F.relu(F.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(),
                          torch.from_numpy(b).double(), stride=s, padding=p, dilation=d))

    def held_after_two_calls():
        gc.collect()
        cupy.get_default_memory_pool().free_all_blocks()
        model = cupyprune.load(path, device="gpu", precision="fp16")
        for _ in range(2):                                  # warm-up (and capture), replay
            assert rel_err(model(x), ref.numpy()) < 2 * TOL["fp16"]
        assert model.graph_runner is not None
        held, choice = peak_bytes(model), model.steps[0].op.implicit.choice[(N, H, W)]
        del model
        return held, choice

    first, chosen = held_after_two_calls()
    assert (tmp_path / tune_cache.FILE_NAME).exists()
    cached, chosen_again = held_after_two_calls()
    assert chosen_again == chosen
    # the timing's temporaries are megabytes (im2col's matrix alone 7 MB); a few small tables
    # the im2col path builds in its first call land in the default pool instead of the graph's
    assert first - cached < 64 * 1024, f"first load {first} bytes, cached {cached} ({chosen})"


def test_a_candidate_that_disagrees_is_never_chosen(tmp_path, rng, monkeypatch):
    """The timed choice checks each candidate's output against im2col + cuBLAS: a kernel that
    returned wrong values (here: every output doubled) loses to the im2col path."""
    import cupyprune
    from cupyprune.ops import conv_implicit, tune_cache
    monkeypatch.setenv(conv_implicit.MODE_ENV, "auto")
    monkeypatch.setenv(tune_cache.CACHE_ENV, str(tmp_path))
    shape = SHAPES[0]
    path, w, b = _conv_relu_file(tmp_path, rng, shape, 0.5)
    N, C, _, _, s, p, d, H, W = shape
    model = cupyprune.load(path, device="gpu", precision="fp16", cuda_graph=False)
    conv = model.steps[0].op
    right = conv.implicit.run
    monkeypatch.setattr(conv.implicit, "run", lambda *a: right(*a) * 2)
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    y = model(x)
    assert conv.implicit.choice[(N, H, W)] is None
    ref = F.relu(F.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(),
                          torch.from_numpy(b).double(), stride=s, padding=p, dilation=d))
    assert rel_err(y, ref.numpy()) < 2 * TOL["fp16"]
