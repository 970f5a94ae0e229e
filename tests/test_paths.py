"""Every GEMM path on every pattern it applies to equals the float64 reference x @ (F * mask);
and a one-conv model file run through each --path equals torch.nn.functional.conv2d.

Legend: M rows of activations, R rows of F, K outputs."""
import numpy as np
import pytest
import torch
import torch.nn.functional as tF

import cupyprune
from cupyprune.backend import array_module, to_numpy
from cupyprune.format import write_model_file
from cupyprune.ops import LoadContext
from cupyprune.paths import APPLIES, PATH_CLASSES, block as block_path
from cupyprune.paths.group import GroupPath
from cupyprune.patterns import weight_to_f
from conftest import devices, rel_err
from cupyprune.export.pruning import PATTERNS, make_mask

KEEPS = (0.75, 0.5, 0.25)
PATTERN_ARGS = {"element": {}, "vector": {"n_m": 4}, "block": {"block": (4, 2)}, "group": {}}
DECLARED = {"element": {}, "vector": {"m": 4}, "block": {"block": [4, 2]}, "group": {}}
TOL = 1e-5                                    # fp32


# which patterns each path runs (the pattern issue's table), written out here rather than read
# from the code under test: a wrong entry in cupyprune.paths.APPLIES must fail, not shrink CASES
PATH_PATTERNS = {"dense": {"element", "vector", "block", "group"}, "group": {"group"},
                 "csr": {"element", "vector", "block", "group"}, "block": {"block"}}


def applies(path, pattern):
    return pattern in PATH_PATTERNS[path]


CASES = [(p, pat) for p in PATH_PATTERNS for pat in PATTERNS if applies(p, pat)]


def test_the_runtime_applies_paths_as_specified():
    assert set(PATH_CLASSES) == set(PATH_PATTERNS)
    assert {p: APPLIES.get(p, set(PATTERNS)) for p in PATH_CLASSES} == PATH_PATTERNS


def random_f_and_mask(rng, pattern, keep, R=96, K=40):
    """A random F (R, K) float64 and its bool mask of `pattern`, through a linear weight."""
    w = torch.from_numpy(rng.standard_normal((K, R)))                # (out, in): F = w.T
    mask = make_mask(w, pattern, keep, **PATTERN_ARGS[pattern]).numpy().astype(bool)
    return np.ascontiguousarray(w.numpy().T), np.ascontiguousarray(mask.T)


def ctx_for(device):
    return LoadContext(xp=array_module(device), dtype=np.float32, tensors={}, pruning={})


def run_path(name, f, fm, x, device):
    """Build the path as a layer does, feed it the columns it reads -> output (M, K)."""
    ctx = ctx_for(device)
    path = PATH_CLASSES[name](f, fm, ctx)
    xd = ctx.xp.asarray(x)
    if path.input_rows is not None:
        xd = xd[:, path.input_rows]                                   # (M, T)
    return path(xd), path.nbytes


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("keep", KEEPS)
@pytest.mark.parametrize("name,pattern", CASES)
def test_path_matches_reference(name, pattern, keep, device, rng):
    f, fm = random_f_and_mask(rng, pattern, keep)
    x = rng.standard_normal((37, f.shape[0])).astype(np.float32)     # (M, R)
    ref = x.astype(np.float64) @ (f * fm)                             # (M, K)
    out, nbytes = run_path(name, f, fm, x, device)
    assert nbytes > 0
    assert out.shape == ref.shape
    assert out.dtype == np.float32
    assert rel_err(out, ref) <= TOL


@pytest.mark.parametrize("device", devices())
def test_block_path_chunks_and_uneven_columns(device, rng, monkeypatch):
    """A tiny gather budget forces one column block per chunk; pruned-out column blocks give 0."""
    monkeypatch.setattr(block_path, "GATHER_BUDGET", 1)
    f, fm = random_f_and_mask(rng, "block", 0.25)
    fm[:, :2] = False                                                 # a column block all pruned
    x = rng.standard_normal((11, f.shape[0])).astype(np.float32)
    ref = x.astype(np.float64) @ (f * fm)
    assert rel_err(run_path("block", f, fm, x, device)[0], ref) <= TOL


@pytest.mark.parametrize("device", devices())
def test_block_path_all_pruned(device, rng):
    f = rng.standard_normal((16, 8))
    x = rng.standard_normal((3, 16)).astype(np.float32)
    out, nbytes = run_path("block", f, np.zeros(f.shape, dtype=bool), x, device)
    assert to_numpy(out).shape == (3, 8) and not to_numpy(out).any() and nbytes == 0


def test_block_shape_is_the_largest_tiling():
    checker = (np.add.outer(np.arange(6), np.arange(5)) % 2).astype(bool)      # (6, 5)
    fm = np.kron(checker, np.ones((4, 2), dtype=bool))                         # (24, 10)
    assert block_path.block_shape(fm) == (4, 2)
    assert block_path.block_shape(np.kron(checker, np.ones((8, 6), bool))) == (8, 6)
    assert block_path.block_shape(np.ones((12, 6), dtype=bool)) == (12, 6)


# -- one conv2d model file through each --path -------------------------------------------------
GEOMETRIES = {"3x3": ((16, 8, 3, 3), 1, 1), "1x1-stride2": ((16, 8, 1, 1), 2, 0)}


def declared(pattern, mask):
    if pattern == "vector":
        fm = weight_to_f(mask.numpy()).astype(bool)
        return {"pattern": "vector", "n": int(fm[:4, 0].sum()), "m": 4}
    return {"pattern": pattern, **DECLARED[pattern]}


def write_conv(path, w, b, mask, pattern, stride, padding, image):
    graph = {"inputs": ["image"], "outputs": ["y"], "nodes": [
        {"name": "conv", "op": "conv2d", "inputs": ["image"], "outputs": ["y"],
         "params": {"weight": "conv.weight", "bias": "conv.bias"},
         "attrs": {"stride": [stride] * 2, "padding": [padding] * 2, "dilation": [1, 1]}}]}
    spec = [{"name": "image", "shape": [None, w.shape[1], image, image], "dtype": "float32",
             "layout": "NCHW", "kind": "image"}]
    tensors = {"conv.weight": w.numpy(), "conv.bias": b.numpy(), "conv.weight.mask": mask.numpy()}
    write_model_file(str(path), tensors, graph, spec,
                     pruning={"conv.weight": declared(pattern, mask)},
                     exporter="tests/test_paths.py")


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("path_name", tuple(PATH_PATTERNS))
@pytest.mark.parametrize("pattern", PATTERNS)
def test_conv_model_file_matches_torch(pattern, path_name, geometry, device, rng, tmp_path):
    shape, stride, padding = GEOMETRIES[geometry]
    w = torch.from_numpy(rng.standard_normal(shape).astype(np.float32))
    b = torch.from_numpy(rng.standard_normal(shape[0]).astype(np.float32))
    mask = make_mask(w, pattern, 0.5, **PATTERN_ARGS[pattern])
    write_conv(tmp_path / "conv.safetensors", w, b, mask, pattern, stride, padding, image=9)
    model = cupyprune.load(str(tmp_path / "conv.safetensors"), device=device, path_choice=path_name)
    (layer,) = model.layers()
    assert layer.op.layer.pattern == pattern
    assert layer.op.layer.path_name == (path_name if applies(path_name, pattern) else "dense")
    x = rng.standard_normal((2, shape[1], 9, 9)).astype(np.float32)
    ref = tF.conv2d(torch.from_numpy(x).double(), (w * mask).double(), b.double(),
                    stride=stride, padding=padding).numpy()
    out = model(model.xp.asarray(x))
    assert out.shape == ref.shape
    assert out.dtype == np.float32
    assert rel_err(out, ref) <= TOL


@pytest.mark.parametrize("keep_count", [1, 7, 8, 9, 461, 767, 768])
def test_group_rows_are_aligned_with_pruned_rows(rng, keep_count):
    """The compacted GEMM gets T rounded up to a multiple of 8 with pruned rows (zero weights):
    every kept row is there, the extra rows are pruned ones, and the product is unchanged."""
    from cupyprune.paths.group import ALIGN_ROWS, kept_rows
    R, K = 768, 16
    kept = np.zeros(R, dtype=bool)
    kept[rng.permutation(R)[:keep_count]] = True
    fm = np.broadcast_to(kept[:, None], (R, K))
    rows = kept_rows(fm)
    assert rows.size % ALIGN_ROWS == 0 or rows.size == R
    assert set(np.flatnonzero(kept)) <= set(rows.tolist())
    assert rows.size - keep_count < ALIGN_ROWS
    assert np.all(np.diff(rows) > 0)
    f = rng.standard_normal((R, K))
    x = rng.standard_normal((5, R)).astype(np.float32)
    ctx = LoadContext(xp=np, dtype=np.float32, tensors={}, pruning={})
    path = GroupPath(f, fm, ctx)
    assert rel_err(path(x[:, path.rows_host]), x.astype(np.float64) @ (f * fm)) <= 1e-5


@pytest.mark.parametrize("device", devices())
def test_a_layer_with_every_row_pruned_keeps_a_few_zero_rows(rng, tmp_path, device):
    """T = 0 would hand im2col and cuBLAS an empty reduction (on the GPU the im2col launch
    divides by it): the group path keeps ALIGN_ROWS pruned, zero rows instead, and the model
    still equals torch's masked-dense one (its conv gives the bias alone)."""
    from cupyprune.paths.group import ALIGN_ROWS, kept_rows
    from tiny_models import tiny_tensors, torch_reference, write_tiny
    assert kept_rows(np.zeros((20, 4), dtype=bool)).tolist() == list(range(ALIGN_ROWS))
    assert kept_rows(np.zeros((3, 4), dtype=bool)).tolist() == [0, 1, 2]     # R < ALIGN_ROWS
    t = tiny_tensors(rng)
    t["c.weight.mask"] = np.zeros_like(t["c.weight"])
    path = tmp_path / "m.safetensors"
    write_tiny(path, rng, tensors=t, pruning={"c.weight": {"pattern": "group"}})
    model = cupyprune.load(path, device=device, path_choice="group")
    w = to_numpy(model.steps[0].op.path.w)
    assert w.shape[0] == ALIGN_ROWS and not w.any()
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    assert rel_err(model(x), torch_reference(t, x)) <= 1e-5


def test_gather_rule_follows_the_measured_crossovers():
    """paths.gather_pays against the H100 sweep's crossovers with the runtime's gather kernel
    (bench/results/h100/linears.json, graph replay: dense ms / group-wise ms)."""
    from cupyprune.paths import gather_pays
    assert gather_pays(768, 384, 3072, "fp32")               # FFN1 fp32 at 50%: 1.84x
    assert gather_pays(768, 696, 3072, "fp32")               # ... still 1.09x at 90%
    assert gather_pays(768, 384, 3072, "fp16")               # FFN1 fp16 at 50%: 1.20x
    assert not gather_pays(768, 544, 3072, "fp16")           # ... 0.97x at 70%
    assert gather_pays(3072, 312, 768, "fp16")               # FFN2 fp16 at 10%: 1.29x
    assert not gather_pays(3072, 1536, 768, "fp16")          # ... 0.91x at 50%
    assert not gather_pays(4096, 3688, 4096, "fp16")         # fc4096 fp16 at 90%: 0.70x
    assert gather_pays(768, 384, 3072, "tf32")               # FFN1 tf32 at 50%: 1.31x
    assert not gather_pays(3072, 2152, 768, "tf32")          # FFN2 tf32 at 70%: 0.85x


def test_demoted_linear_gives_the_same_outputs(rng, tmp_path, monkeypatch):
    """The demotion pass (GPU `auto`) marks the plan's layer dense before the op is built: the
    op holds the masked dense weight and gives the group-wise load's outputs."""
    from cupyprune import passes
    from cupyprune.paths.dense import DensePath
    w = rng.standard_normal((6, 40)).astype(np.float32)
    keep = rng.random(40) < 0.5
    keep[0] = True
    mask = np.broadcast_to(keep, w.shape).astype(np.float32)
    graph = {"inputs": ["x"], "outputs": ["y"], "nodes": [
        {"name": "fc", "op": "linear", "inputs": ["x"], "outputs": ["y"],
         "params": {"weight": "fc.weight"}}]}
    spec = [{"name": "x", "shape": [None, 40], "dtype": "float32", "kind": "features"}]
    path = str(tmp_path / "fc.safetensors")
    write_model_file(path, {"fc.weight": w, "fc.weight.mask": mask}, graph, spec)
    grouped = cupyprune.load(path, device="cpu")
    assert grouped.layers()[0].op.describe()["path"] == "group"
    x = rng.standard_normal((3, 40)).astype(np.float32)
    before = grouped(x)

    def demote_all(plan, device, path, precision):
        passes.demote_gathering_linears(plan, precision, pays=lambda *a: False)
        assert plan.layers()[0].weight.path_name == "dense"          # decided on the plan

    monkeypatch.setattr(passes, "run", demote_all)
    model = cupyprune.load(path, device="cpu")
    op = model.layers()[0].op
    assert isinstance(op.path, DensePath) and op.describe()["path"] == "dense"
    assert "auto: dense" in op.describe()["note"]
    assert rel_err(model(x), before.astype(np.float64)) <= 1e-6
    assert rel_err(model(x), x.astype(np.float64) @ (w * mask).T) <= 1e-5
