"""Which kernel runs a fp16, bf16 or TF32 conv on the GPU: an implicit GEMM (gpu/implicit_conv.py,
mma.sync, 16-bit types, compute capability 8.0 on; gpu/implicit_conv_wgmma.py, wgmma, sm_90
only, also TF32 for fp32 models loaded with precision 'tf32'), one of its tile configurations
and row plans, or im2col + cuBLAS, chosen per layer and input shape by timing each candidate
once.

Legend: N batch, H W C input, OH OW output size, M = N*OH*OW, K outputs, T kept rows.

The first call with a new input shape (the graph runner's warm-up call, before any capture)
times the candidates (CUDA events, median of a few runs; every tile with the kept-rows plan, the
other plans with its three fastest tiles and those it could not run: `search`) and keeps the
fastest; the choice is cached on disk (tune_cache.py), keyed by GPU name, layer shape,
precision and kept rows, so the next load of the same model skips the timing. Three row
plans are candidates (PLANS): the kept rows (vector loads where a run of 8 channels is mostly
kept, ops/implicit_plan.py) and, for a pruned layer, runs at least half kept loaded whole, and
the dense plan (every 8-channel run holding a kept row, loaded whole). The choice is never
slower than the im2col path (timed beside them) and on measured grids the best implicit
candidate (`search`).

While timing, each candidate's output is compared with im2col + cuBLAS's on the same input; a
candidate that disagrees by more than the precision allows is never chosen.

CUPYPRUNE_IMPLICIT_CONV: 'auto' times the candidates; 'off' keeps im2col + cuBLAS; a tile name
(TILE_BY_NAME, e.g. 128x128x32s3w8, or wg128x256x32s4 for the wgmma kernel) forces that kernel
with the kept-rows plan where it runs the layer's precision on this GPU (tests and benchmarks).
Unset: DEFAULT_MODE, 'auto'. The kernels' GPU suite (tests/test_implicit_conv_gpu.py) passes on
an H100. With 'auto', on an H100 (docs/DESIGN_NOTES.md, "Wide k-steps in 16-bit" and "'auto' by
default"): the paper benchmark's five CNN files take 3-14% less time than with 'off' and hold
less GPU memory, the first load included (layers the kernel runs write no im2col matrix);
ResNet-18 and VGG-16-BN at 224x224 are up to 32% faster at batch 32. The first call with a new
input shape adds the candidates' timing (0.5-2.6 s a model, then cached); nothing it allocates
stays on the GPU (`_choose`).
"""
import os

import numpy as np

from ..errors import SettingError
from ..gpu import implicit_conv, implicit_conv_wgmma
from ..gpu.implicit_conv_wgmma import WgmmaTile
from ..timing import summary, time_queued
from . import tune_cache
from .implicit_plan import VEC_MIN, build_plan

MODE_ENV = "CUPYPRUNE_IMPLICIT_CONV"
DEFAULT_MODE = "auto"
IM2COL = "im2col"
AGREE = {"fp16": 1e-2, "bf16": 4e-2, "tf32": 1e-2}   # max |candidate - im2col| / max |im2col|
# row plan name -> vec_min: the kept rows (mostly 2-byte loads at random masks), runs of 8
# channels at least half kept loaded whole (at 50% random, about 3/4 of the dense MMA work
# with 15% of its rows scalar), every run with a kept row loaded whole (the dense work)
PLANS = {"kept": VEC_MIN, "half": 4, "dense": 1}
SEARCH_TILES = 3                               # tiles the plans after the first are timed with
_RELU_FORMS = ("none", "relu")


# every tile configuration of both kernels by name: the mma.sync kernel's (gpu/implicit_conv.py,
# 16-bit types, compute capability 8.0 on) and the wgmma kernel's (gpu/implicit_conv_wgmma.py,
# 16-bit types and TF32, sm_90 only; names start with "wg")
TILE_BY_NAME = {**implicit_conv.CONFIG_BY_NAME, **implicit_conv_wgmma.TILE_BY_NAME}


def mode():
    """$CUPYPRUNE_IMPLICIT_CONV, DEFAULT_MODE where unset or empty; SettingError for a value
    that is none of 'auto', 'off' and the tile names (a typo never silently means the default)."""
    value = os.environ.get(MODE_ENV) or DEFAULT_MODE
    if value in ("auto", "off") or value in TILE_BY_NAME:
        return value
    raise SettingError(f"{MODE_ENV}={value!r} is not a setting: use auto, off or a tile name "
                       f"({', '.join(TILE_BY_NAME)})")


def precision_tag(ctx):
    """The kernels' name for a load's precision: fp16, bf16, tf32, or None (fp32 keeps exact
    float products: no kernel here)."""
    from ..precision import is_bf16
    if is_bf16(ctx.dtype):
        return "bf16"
    if np.dtype(ctx.dtype) == np.float16:
        return "fp16"
    return "tf32" if getattr(ctx.matmul, "tf32", False) else None


def tiles(tag):
    """The tile configurations a layer of this precision times on this GPU: the mma.sync
    kernel's in 16-bit types (compute capability 8.0 on: mma.m16n8k16, ldmatrix, cp.async), the
    wgmma kernel's on sm_90 (the only ones in TF32)."""
    import cupy
    cc = int(cupy.cuda.Device().compute_capability)
    found = implicit_conv.CONFIGS if tag != "tf32" and cc >= 80 else ()
    if implicit_conv_wgmma.supported():
        found = found + implicit_conv_wgmma.tiles_for(_itemsize(tag))
    return found


def _itemsize(tag):
    """Bytes a value of the kernels' precision: fp32 storage for TF32, else 16-bit."""
    return 4 if tag == "tf32" else 2


def applies(ctx, path, K):
    """Whether a conv layer may run an implicit kernel: a GPU run in fp16, bf16 or TF32 with a
    kernel for this GPU, a path holding one weight matrix (dense or group-wise), K a multiple
    of 8 (16-byte rows of W and Y). The setting is read first, so a bad value is refused on
    any device."""
    if mode() == "off" or ctx.xp is np or not hasattr(path, "w") or K % 8:
        return False
    tag = precision_tag(ctx)
    return tag is not None and bool(tiles(tag))


class ImplicitConv:
    """A conv layer's implicit-GEMM candidates and its choice per input shape.

    taps (T,): the kept rows of F in the path weight's row order; w_kept (T, K) that weight."""

    def __init__(self, taps, w_kept, geometry, C, epilogue, precision_tag):
        self.taps, self.w_kept, self.geometry, self.C = taps, w_kept, geometry, C
        self.epilogue = epilogue
        self.tag = precision_tag
        self.plans = {}                   # plan name -> (ImplicitPlan, {layout: weight}, {W: rows})
        self.choice = {}                  # (N, H, W) -> (plan name, TileConfig) or None
        self.fused = epilogue.activation in _RELU_FORMS and epilogue.post in _RELU_FORMS
        self.row_plans = _distinct_row_plans(taps, geometry, C)     # name -> ImplicitPlan
        self.plan_names = tuple(self.row_plans)
        self.max_rows = max(plan.rows for plan in self.row_plans.values())    # TP at most

    def _plan(self, name, W, config):
        """-> (plan, weight, device descriptors (TP, 4) for width W), built once: the weight
        (TP, K) for the mma.sync kernel, transposed (K, TP) for the wgmma one."""
        import cupy
        if name not in self.plans:
            self.plans[name] = (self.row_plans[name], {}, {})
        plan, weights, tables = self.plans[name]
        layout = _layout(config)
        if layout not in weights:
            weight = plan.weight(self.w_kept)                             # (TP, K)
            weights[layout] = cupy.ascontiguousarray(weight.T) if layout == "kt" else weight
        if W not in tables:
            tables[W] = cupy.asarray(plan.descriptors(W))
        return plan, weights[layout], tables[W]

    def run(self, x, residual, out_hw, plan_name, config):
        """x (N, H, W, C) -> (M, K) through the kernel, epilogue included."""
        plan, weight, rows = self._plan(plan_name, x.shape[2], config)
        kernel = implicit_conv.implicit_conv
        if isinstance(config, WgmmaTile):
            kernel = implicit_conv_wgmma.implicit_conv_wgmma
        e = self.epilogue
        K = self.w_kept.shape[1]
        if residual is not None:
            residual = residual.reshape(-1, K)                        # (M, K)
        if not self.fused:
            y = kernel(x, weight, rows, plan.vsteps, out_hw, self.geometry[2], config)
            return e(y, residual)
        return kernel(x, weight, rows, plan.vsteps, out_hw, self.geometry[2], config,
                      bias=e.bias, residual=residual, relu=e.activation == "relu",
                      post_relu=e.post == "relu")

    def fits(self, x_shape, M, plan_name, config):
        """Whether config's kernel covers this call (32-bit offsets, grid rows) with this row
        plan (a wide wgmma tile: all-vector plans only)."""
        K = self.w_kept.shape[1]
        if isinstance(config, WgmmaTile):
            plan = self.row_plans[plan_name]
            return (config.runs(_itemsize(self.tag), plan.vsteps, plan.rows)
                    and implicit_conv_wgmma.fits(x_shape, M, K, self.max_rows, config))
        return implicit_conv.fits(x_shape, M, K, config)

    def __call__(self, x, residual, out_hw, im2col):
        """y (M, K) from the chosen kernel, or None where im2col + cuBLAS is the choice (then
        the caller runs it). im2col: a callable running that path, for the timing."""
        import cupy
        N, H, W, _ = x.shape
        if not x.flags.c_contiguous or x.data.ptr % 16 or (
                residual is not None and (not residual.flags.c_contiguous
                                          or residual.data.ptr % (2 * x.itemsize))):
            return None
        key = (N, H, W)
        if key not in self.choice:
            if cupy.cuda.get_current_stream().is_capturing():
                return None                     # never time inside a capture; im2col for now
            self.choice[key] = self._choose(x, residual, out_hw, im2col)
        chosen = self.choice[key]
        if chosen is None or not self.fits(x.shape, N * out_hw[0] * out_hw[1], *chosen):
            return None
        return self.run(x, residual, out_hw, *chosen)

    def _candidates(self):
        forced = mode()
        if forced in TILE_BY_NAME:             # forced where this precision and GPU run it
            tile = TILE_BY_NAME[forced]
            return [("kept", tile)] if tile in tiles(self.tag) else []
        return [(p, c) for p in self.plan_names for c in tiles(self.tag)]

    def _choose(self, x, residual, out_hw, im2col):
        candidates = self._candidates()
        if len(candidates) <= 1:
            return candidates[0] if candidates else None
        import cupy
        N, H, W, C = x.shape
        kh, kw, stride, padding, dilation = self.geometry
        K = self.w_kept.shape[1]
        key = tune_cache.key(device=cupy.cuda.runtime.getDeviceProperties(
            cupy.cuda.Device().id)["name"].decode(), precision=self.tag,
            shape=(N, H, W, C, K, kh, kw, *stride, *padding, *dilation),
            kept=len(self.taps), epilogue=(self.epilogue.bias is not None,
                                           residual is not None, self.fused),
            kernels=generation(self.tag))
        cached = tune_cache.lookup(key)
        by_name = {f"{p}/{c.name}": (p, c) for p, c in candidates}
        if cached == IM2COL or cached in by_name:
            return by_name.get(cached)
        # Everything the timing allocates (im2col's matrix, each candidate's output, plan
        # weight and row table) comes from the default pool and goes back to the device after
        # it: the first call runs inside the graph runner's warm-up, whose private pool would
        # keep it for good. The chosen plan's weight is built again by the call that runs it,
        # from the caller's allocator, as a load with a cached choice builds it; kept from the
        # timing, a small array split from a freed large block would pin that block.
        built_before = self._built()
        pool = cupy.get_default_memory_pool()
        with cupy.cuda.using_allocator(pool.malloc):
            best = self._time_candidates(x, residual, out_hw, im2col, key)
        self._drop_built_since(built_before)
        pool.free_all_blocks()
        return by_name.get(best)

    def _time_candidates(self, x, residual, out_hw, im2col, key):
        """-> the fastest candidate's name (or IM2COL), its timings stored under `key`."""
        reference = _as_float(im2col())
        M = x.shape[0] * out_hw[0] * out_hw[1]

        def timed(plan, config):
            if not self.fits(x.shape, M, plan, config):
                return None
            y = _as_float(self.run(x, residual, out_hw, plan, config)).reshape(reference.shape)
            if _disagreement(y, reference) > AGREE[self.tag]:
                return None
            return _median(lambda: self.run(x, residual, out_hw, plan, config))

        timings = {IM2COL: _median(im2col)}
        for (plan, config), ms in search(self.plan_names, tiles(self.tag), timed).items():
            timings[f"{plan}/{config.name}"] = ms
        best = min(timings, key=timings.get)
        tune_cache.store(key, best, timings)
        return best

    def _built(self):
        """-> {plan name: (weight layouts, row-table widths)} built so far."""
        return {name: (set(weights), set(tables))
                for name, (_, weights, tables) in self.plans.items()}

    def _drop_built_since(self, before):
        """Drop the plan weights and row tables built since `before` (a `_built()`)."""
        for name in list(self.plans):
            layouts, widths = before.get(name, ((), ()))
            _, weights, tables = self.plans[name]
            for layout in set(weights) - set(layouts):
                del weights[layout]
            for W in set(tables) - set(widths):
                del tables[W]
            if not weights and not tables:
                del self.plans[name]


def generation(tag):
    """The kernels' code generations a choice was timed against (part of its cache key)."""
    names = [implicit_conv.GENERATION] if tag != "tf32" else []
    if implicit_conv_wgmma.supported():
        names.append(implicit_conv_wgmma.GENERATION)
    return "+".join(names)


def search(plans, configs, timed):
    """The candidates a layer times: every tile configuration with the first row plan, then the
    other plans with that plan's SEARCH_TILES fastest tiles, and the tiles it could not run
    (a wide wgmma tile takes only all-vector plans, which the kept rows of a pruned layer
    seldom are): 6 + 2 x 3 = 12 timings for a pruned layer of the mma.sync tiles, not 18.
    timed(plan, config) -> median ms, or None where the candidate cannot run this shape or
    plan, or disagrees with im2col. -> {(plan, config): ms} of those that ran.

    On the H100's full grids (bench/results/h100/implicit-conv-v2.json: the paper's conv and
    ResNet-18's, 35 layer and kept-fraction cells) this finds the fastest candidate in every
    cell; with the one fastest tile it would miss by up to 5.5%, with two by 1.1%
    (tests/test_implicit_plan.py)."""
    first, rest = plans[0], plans[1:]
    times = {}
    for config in configs:
        ms = timed(first, config)
        if ms is not None:
            times[(first, config)] = ms
    ranked = [c for _, c in sorted(times, key=times.get)]
    tiles = ranked[:SEARCH_TILES] + [c for c in configs if c not in ranked]
    for plan in rest:
        for config in tiles:
            ms = timed(plan, config)
            if ms is not None:
                times[(plan, config)] = ms
    return times


def _distinct_row_plans(taps, geometry, C):
    """PLANS' row plans of a layer (host arrays, cheap), each kept only where it differs from the
    ones before it: a dense layer has one, and so has a layer whose channels come in no runs of
    8 (the 3-channel stem: every plan all scalar), so no candidate is timed twice."""
    plans, seen = {}, set()
    for name, vec_min in PLANS.items():
        plan = build_plan(taps, geometry, C, vec_min=vec_min)
        rows = (plan.vsteps, plan.source.tobytes(), plan.c.tobytes(), plan.dy.tobytes(),
                plan.dx.tobytes())
        if rows not in seen:
            seen.add(rows)
            plans[name] = plan
    return plans


def _layout(config):
    """The plan weight's layout a kernel reads: (K, TP) for wgmma ('kt'), else (TP, K)."""
    return "kt" if isinstance(config, WgmmaTile) else "tk"


def _as_float(y):
    """A fp16 or bf16-bits output -> float32 values."""
    from .. import bf16
    from ..precision import is_bf16
    return bf16.from_bits(y) if is_bf16(y.dtype) else y.astype(np.float32)


def _disagreement(y, reference):
    """max |y - reference| / max |reference|; inf where y holds NaN or Inf."""
    import cupy
    scale = float(cupy.abs(reference).max()) or 1.0
    return float(cupy.nan_to_num(cupy.abs(y - reference), nan=np.inf).max()) / scale


def _median(fn):
    """fn's GPU time per call as a CUDA-graph replay would run it (no launch gaps)."""
    import cupy
    return summary(time_queued(fn, cupy, warmup=2, repeat=7, rounds=3))["median_ms"]
