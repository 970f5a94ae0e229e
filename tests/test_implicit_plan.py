"""The implicit-GEMM conv's row plan and its host twin, against torch.nn.functional.conv2d in
float64 (CPU), and the tuning cache. The kernel itself: tests/test_implicit_conv_gpu.py."""
import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cupyprune.errors import SettingError
from cupyprune.ops import tune_cache
from cupyprune.ops.im2col import out_size
from cupyprune.ops.implicit_plan import BK, PACK, build_plan, implicit_conv_numpy
from cupyprune.patterns import conv_weight_to_f

# C, K, kernel, stride, padding, dilation, H, W
SHAPES = [(16, 8, 3, 1, 1, 1, 9, 7), (3, 8, 7, 2, 3, 1, 15, 13), (24, 16, 1, 2, 0, 1, 9, 9),
          (32, 8, 3, 2, 1, 1, 8, 11), (64, 8, 3, 1, 1, 1, 6, 6), (13, 5, 3, 1, 2, 2, 10, 9),
          (40, 8, 5, 1, 2, 1, 7, 7)]


def _kept_taps(rng, R, keep):
    return np.sort(rng.permutation(R)[:max(1, int(round(keep * R)))])


def _torch_reference(x_nhwc, f, taps, shape):
    C, K, k, s, p, d, _, _ = shape
    mask = np.zeros(f.shape[0], bool)
    mask[taps] = True
    w = (f * mask[:, None]).reshape(k, k, C, K).transpose(3, 2, 0, 1)       # (K, C, kh, kw)
    y = F.conv2d(torch.from_numpy(x_nhwc.transpose(0, 3, 1, 2).copy()),
                 torch.from_numpy(np.ascontiguousarray(w)), stride=s, padding=p, dilation=d)
    return y.permute(0, 2, 3, 1).reshape(-1, K).numpy()                       # (M, K)


@pytest.mark.parametrize("shape", SHAPES, ids=[f"c{s[0]}k{s[2]}s{s[3]}d{s[5]}" for s in SHAPES])
@pytest.mark.parametrize("keep", [0.25, 0.5, 0.75, 1.0])
@pytest.mark.parametrize("vec_min", [1, 4, 6, 8])
def test_plan_computes_the_convolution(rng, shape, keep, vec_min):
    C, K, k, s, p, d, H, W = shape
    x = rng.standard_normal((2, H, W, C))
    f = conv_weight_to_f(rng.standard_normal((K, C, k, k)))                 # (R, K)
    taps = _kept_taps(rng, f.shape[0], keep)
    geometry = (k, k, (s, s), (p, p), (d, d))
    plan = build_plan(taps, geometry, C, vec_min=vec_min)
    out_hw = (out_size(H, k, s, p, d), out_size(W, k, s, p, d))
    y = implicit_conv_numpy(x, plan, plan.weight(f[taps]), out_hw, (s, s))
    ref = _torch_reference(x, f, taps, shape)
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-10 * np.abs(ref).max())


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.9, 1.0])
@pytest.mark.parametrize("vec_min", [1, 4, 6])
def test_plan_layout(rng, keep, vec_min):
    """Rows a multiple of BK; every kept row exactly once; vector k-steps first, each pack the
    8 aligned channels of one tap with at least vec_min kept; scalar rows in tap order."""
    C, kh, kw = 64, 3, 3
    taps = _kept_taps(rng, kh * kw * C, keep)
    plan = build_plan(taps, (kh, kw, (1, 1), (1, 1), (1, 1)), C, vec_min=vec_min)
    assert plan.rows % BK == 0 and plan.ksteps == plan.rows // BK
    used = plan.source[plan.source >= 0]
    assert sorted(used.tolist()) == list(range(taps.size))
    vector_rows = plan.vsteps * BK
    for p0 in range(0, vector_rows, PACK):
        pack = slice(p0, p0 + PACK)
        assert len(set(zip(plan.dy[pack], plan.dx[pack]))) == 1                 # one tap
        assert plan.c[p0] % PACK == 0 and (np.diff(plan.c[pack]) == 1).all()     # aligned run
        assert (plan.source[pack] >= 0).sum() >= vec_min
    scalar = plan.source[vector_rows:]
    real = scalar[scalar >= 0]
    assert (np.diff(real) > 0).all()                                            # tap order
    assert (scalar[real.size:] == -1).all() and scalar.size - real.size < BK
    if keep == 1.0:
        assert plan.vsteps * BK == plan.rows == taps.size                       # dense: vectors


def test_plan_without_aligned_channels_is_all_scalar(rng):
    taps = _kept_taps(rng, 7 * 7 * 3, 1.0)
    plan = build_plan(taps, (7, 7, (2, 2), (3, 3), (1, 1)), 3)
    assert plan.vsteps == 0 and plan.rows == 160


def test_descriptors_are_the_offsets(rng):
    taps = _kept_taps(rng, 9 * 16, 0.5)
    plan = build_plan(taps, (3, 3, (1, 1), (1, 1), (1, 1)), 16)
    table = plan.descriptors(W=11)
    assert table.dtype == np.int32 and table.shape == (plan.rows, 4)
    padding = plan.source[plan.vsteps * BK:] == -1                     # rows past the kept ones
    expect = (plan.dy * 11 + plan.dx) * 16 + plan.c
    tail = table[plan.vsteps * BK:]
    np.testing.assert_array_equal(tail[~padding, 2], expect[plan.vsteps * BK:][~padding])
    np.testing.assert_array_equal(table[:plan.vsteps * BK, 2], expect[:plan.vsteps * BK])
    assert (tail[padding, 2] == 0).all() and (tail[padding, 0] < -1000).all()


def test_tune_cache_round_trip_and_corrupt_file(tmp_path, monkeypatch):
    monkeypatch.setenv(tune_cache.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(tune_cache, "_memory", {})
    k = tune_cache.key("GPU X", "fp16", (1, 2, 3), 17, (True, False, True), "implicit-v2")
    assert k == "GPU X|fp16|1x2x3|kept17|101|implicit-v2"
    assert tune_cache.lookup(k) is None
    tune_cache.store(k, "kept/128x64x32s3w4", {"im2col": 0.5, "kept/128x64x32s3w4": 0.25})
    monkeypatch.setattr(tune_cache, "_memory", {})                        # a new process
    assert tune_cache.lookup(k) == "kept/128x64x32s3w4"
    saved = json.loads((tmp_path / tune_cache.FILE_NAME).read_text())
    assert saved[k]["ms"]["im2col"] == 0.5
    (tmp_path / tune_cache.FILE_NAME).write_text("{not json")
    monkeypatch.setattr(tune_cache, "_memory", {})
    assert tune_cache.lookup(k) is None


def test_mode_reads_the_environment(monkeypatch):
    from cupyprune.ops import conv_implicit
    monkeypatch.delenv(conv_implicit.MODE_ENV, raising=False)
    assert conv_implicit.mode() == conv_implicit.DEFAULT_MODE
    for value in ("auto", "off", "128x64x32s3w4"):
        monkeypatch.setenv(conv_implicit.MODE_ENV, value)
        assert conv_implicit.mode() == value
    monkeypatch.setenv(conv_implicit.MODE_ENV, "")
    assert conv_implicit.mode() == conv_implicit.DEFAULT_MODE
    monkeypatch.setenv(conv_implicit.MODE_ENV, "fastest please")
    with pytest.raises(SettingError, match=r"CUPYPRUNE_IMPLICIT_CONV='fastest please' is not a "
                                           r"setting: use auto, off or a tile name \(128x128"):
        conv_implicit.mode()


def test_cpu_convolutions_never_take_the_kernel(rng, monkeypatch):
    from cupyprune.ops import conv_implicit
    from cupyprune.ops.registry import LoadContext
    monkeypatch.setenv(conv_implicit.MODE_ENV, "auto")
    ctx = LoadContext(xp=np, dtype=np.dtype(np.float16), tensors={}, pruning={})
    path = type("Path", (), {"w": np.zeros((9, 8), np.float16)})()
    assert not conv_implicit.applies(ctx, path, 8)


def test_a_bad_setting_is_one_line_on_any_device(rng, tmp_path, monkeypatch):
    """`cupyprune infer` of a conv model with CUPYPRUNE_IMPLICIT_CONV misspelt: one line naming
    the setting, exit code 2, on the CPU too (the setting is read before the device is)."""
    from cupyprune.ops import conv_implicit
    from test_bad_input import assert_one_line_error, run_cli
    from tiny_models import write_tiny
    path = tmp_path / "tiny.safetensors"
    write_tiny(path, rng)
    monkeypatch.setenv(conv_implicit.MODE_ENV, "atuo")
    assert_one_line_error(run_cli("infer", path, "--device", "cpu"),
                          "CUPYPRUNE_IMPLICIT_CONV='atuo' is not a setting")
    monkeypatch.setenv(conv_implicit.MODE_ENV, "off")
    assert run_cli("infer", path, "--device", "cpu").exit_code == 0


@pytest.mark.parametrize("C,kernel,keep,expect", [
    (64, 3, 1.0, ("kept",)),                   # dense: every plan is all vector packs
    (3, 7, 0.5, ("kept",)),                    # the stem: no runs of 8, every plan all scalar
    (64, 3, 0.5, ("kept", "half", "dense"))])  # random half: three different plans
def test_each_distinct_row_plan_is_a_candidate_once(rng, monkeypatch, C, kernel, keep, expect):
    from types import SimpleNamespace

    from cupyprune.gpu import implicit_conv, implicit_conv_wgmma
    from cupyprune.ops import conv_implicit
    both = implicit_conv.CONFIGS + implicit_conv_wgmma.TILES            # an sm_90 GPU's tiles
    monkeypatch.setattr(conv_implicit, "tiles", lambda tag: both)
    taps = _kept_taps(rng, kernel * kernel * C, keep)
    geometry = (kernel, kernel, (1, 1), (kernel // 2,) * 2, (1, 1))
    op = conv_implicit.ImplicitConv(taps, np.zeros((taps.size, 8), np.float32), geometry, C,
                                    SimpleNamespace(activation="relu", post="none"), "fp16")
    assert op.plan_names == expect
    sources = [op.row_plans[name].source.tolist() for name in op.plan_names]
    assert all(a != b for i, a in enumerate(sources) for b in sources[i + 1:])
    for name in op.plan_names:             # each plan still holds every kept row exactly once
        used = op.row_plans[name].source
        assert sorted(used[used >= 0].tolist()) == list(range(taps.size))
    assert sorted((p, c.name) for p, c in op._candidates()) == sorted(
        (p, c.name) for p in expect for c in both)


def _measured_rows(name="implicit-conv-v2.json"):
    """The implicit kernels' rows of a tools/implicit_conv_bench.py results file on an H100:
    every row plan x tile configuration timed, per layer and kept fraction."""
    path = os.path.join(os.path.dirname(__file__), "..", "bench", "results", "h100", name)
    with open(path) as f:
        return [r for r in json.load(f) if r.get("impl", "").startswith("implicit/")]


def _measured_grids():
    """{(layer, keep): {(plan, tile name): median ms}} of the measured rows whose tile is among
    CONFIGS."""
    from cupyprune.gpu import implicit_conv
    grids = {}
    for r in _measured_rows():
        _, plan, tile = r["impl"].split("/")
        if tile in implicit_conv.CONFIG_BY_NAME:                   # the tiles still candidates
            grids.setdefault((r["layer"], r["keep"]), {})[(plan, tile)] = r["median_ms"]
    return grids


@pytest.mark.parametrize("tiles,worst", [(1, 0.056), (2, 0.011), (3, 0.0)])
def test_search_on_measured_grids(monkeypatch, tiles, worst):
    """With `tiles` tiles for the later plans, the fastest candidate found is within `worst` of
    the fastest of the whole grid in every measured cell; with the shipped SEARCH_TILES, the
    fastest itself."""
    from cupyprune.gpu import implicit_conv
    from cupyprune.ops import conv_implicit
    setting = conv_implicit.SEARCH_TILES
    monkeypatch.setattr(conv_implicit, "SEARCH_TILES", tiles)
    grids = _measured_grids()
    assert len(grids) == 35
    misses = []
    for cell, grid in grids.items():
        plans = tuple(p for p in conv_implicit.PLANS if any(p == q for q, _ in grid))
        asked = []

        def timed(plan, config):
            asked.append((plan, config.name))
            return grid[(plan, config.name)]

        found = conv_implicit.search(plans, implicit_conv.CONFIGS, timed)
        timings = len(implicit_conv.CONFIGS) + (len(plans) - 1) * tiles
        assert len(asked) == len(set(asked)) == timings
        assert set(found) == {(p, implicit_conv.CONFIG_BY_NAME[t]) for p, t in asked}
        misses.append(min(found.values()) / min(grid.values()) - 1)
    assert max(misses) <= worst
    if tiles == setting:
        assert max(misses) == 0.0


def test_search_with_both_kernels_on_the_measured_grid():
    """On the grid measured with the wgmma tiles beside the mma.sync ones (the paper's conv and
    two ResNet-18 layers, 10 cells), the shipped search finds the fastest candidate in every
    cell, timing every tile once with the first plan and SEARCH_TILES with each other plan.
    (The grid holds the tiles of one k-step a plan k-step, as measured then.)"""
    from cupyprune.gpu import implicit_conv, implicit_conv_wgmma
    from cupyprune.ops import conv_implicit
    tiles = implicit_conv.CONFIGS + tuple(t for t in implicit_conv_wgmma.tiles_for(2)
                                          if t.span == 1)                  # fp16 on sm_90
    grids = {}
    for r in _measured_rows("implicit-conv-wgmma.json"):
        _, plan, tile = r["impl"].split("/")
        grids.setdefault((r["layer"], r["keep"]), {})[(plan, tile)] = r["median_ms"]
    assert len(grids) == 10
    for cell, grid in grids.items():
        assert {t for _, t in grid} == {t.name for t in tiles}, cell      # every tile timed
        plans = tuple(p for p in conv_implicit.PLANS if any(p == q for q, _ in grid))
        found = conv_implicit.search(plans, tiles, lambda p, c: grid[(p, c.name)])
        assert len(found) == len(tiles) + (len(plans) - 1) * conv_implicit.SEARCH_TILES
        assert min(found.values()) == min(grid.values()), cell


def test_search_skips_what_cannot_run_and_falls_back_to_every_tile():
    from cupyprune.gpu import implicit_conv
    from cupyprune.ops import conv_implicit
    configs = implicit_conv.CONFIGS
    slow = {c: 1.0 + i for i, c in enumerate(configs)}

    def first_plan_never_runs(plan, config):
        return None if plan == "kept" else slow[config]

    found = conv_implicit.search(("kept", "half"), configs, first_plan_never_runs)
    assert set(found) == {("half", c) for c in configs}           # no tile known: all tried

    def one_tile_runs(plan, config):
        return slow[config] if config is configs[3] else None

    found = conv_implicit.search(("kept", "half", "dense"), configs, one_tile_runs)
    assert found == {(p, configs[3]): slow[configs[3]] for p in ("kept", "half", "dense")}

    asked = []

    def every_tile_runs(plan, config):
        asked.append((plan, config))
        return slow[config] * (0.5 if plan == "dense" else 1.0)

    found = conv_implicit.search(("kept", "dense"), configs, every_tile_runs)
    fastest = configs[:conv_implicit.SEARCH_TILES]                  # slow[] grows with the index
    assert [c for p, c in asked if p == "dense"] == list(fastest)
    assert min(found, key=found.get) == ("dense", configs[0])


def test_search_gives_the_later_plans_the_tiles_the_first_could_not_run():
    """A wide wgmma tile runs all-vector plans only: skipped on a pruned layer's kept rows, it is
    still timed with the dense plan, and wins there when fastest."""
    from cupyprune.gpu import implicit_conv, implicit_conv_wgmma
    from cupyprune.ops import conv_implicit
    wide = [t for t in implicit_conv_wgmma.TILES if t.span == 2]
    assert wide
    configs = implicit_conv.CONFIGS + implicit_conv_wgmma.TILES
    asked = []

    def timed(plan, config):
        asked.append((plan, config))
        if getattr(config, "span", 1) == 2:
            return None if plan == "kept" else 0.5
        return 1.0 + configs.index(config)

    found = conv_implicit.search(("kept", "dense"), configs, timed)
    dense_tiles = [c for p, c in asked if p == "dense"]
    assert dense_tiles == list(configs[:conv_implicit.SEARCH_TILES]) + wide
    assert min(found, key=found.get) == ("dense", wide[0])
    assert not any(p == "kept" and c in wide for p, c in found)


def test_no_tile_left_out_of_configs_won_a_measured_layer():
    """The tiles timed on the H100 but not among CONFIGS were never the fastest of a cell."""
    from cupyprune.gpu import implicit_conv
    rows = _measured_rows()
    cells = {}
    for r in rows:
        cells.setdefault((r["layer"], r["keep"]), []).append(r)
    left_out = {r["impl"].split("/")[2] for r in rows} - set(implicit_conv.CONFIG_BY_NAME)
    assert left_out == {"128x256x32s3w8", "256x128x32s3w8", "128x128x32s4w4"}
    for cell, timed in cells.items():
        fastest = min(timed, key=lambda r: r["median_ms"])
        assert fastest["impl"].split("/")[2] in implicit_conv.CONFIG_BY_NAME, cell
