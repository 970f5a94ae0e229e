"""Loading as plan -> passes -> lower (cupyprune/plan.py, passes.py): the passes decide on the
plan of a model file, from its masks and shapes, before any op exists; the ops built from that
plan then give torch's outputs. References: torch.nn.functional (tiny_models.torch_mlp) and a
float64 NumPy product for the demoted layer."""
import numpy as np
import pytest

import cupyprune
from conftest import rel_err
from cupyprune import passes
from cupyprune.format import read_model_file
from cupyprune.graph import parse_graph
from cupyprune.ops import OPS
from cupyprune.ops.activation import activation_name
from cupyprune.paths.dense import DensePath
from cupyprune.paths.precompacted import Precompacted
from cupyprune.plan import plan_load
from tiny_models import MLP_HIDDEN, MLP_IN, torch_mlp
from test_cli_json import group_ffn


def plan_of(path, requested="auto"):
    f = read_model_file(str(path))
    return plan_load(parse_graph(f.graph, OPS), OPS, f.tensors, f.pruning, requested,
                     activation_name)


def test_the_plan_folds_and_plans_weights_before_any_op(rng, tmp_path, monkeypatch):
    path, t, keep = group_ffn(rng, tmp_path)
    monkeypatch.setattr(OPS["linear"], "__init__", None)     # building an op would fail
    plan = plan_of(path)
    assert [s.name for s in plan.steps] == ["fc1", "fc2"]    # the GELU folds into fc1
    fc1, fc2 = plan.steps
    assert fc1.activation == "gelu" and fc1.residual is None and fc1.inputs == ["x"]
    assert plan.alias == {"a": "h"}
    assert fc1.weight.path_name == "dense" and fc2.weight.path_name == "group"
    assert fc2.weight.pattern == "group" and fc2.weight.kept == pytest.approx(keep.mean())
    assert fc1.weight.keep_outputs is None and not fc2.weight.precompacted


def test_compaction_is_decided_on_the_plan(rng, tmp_path, monkeypatch):
    path, t, keep = group_ffn(rng, tmp_path)
    monkeypatch.setattr(OPS["linear"], "__init__", None)
    plan = plan_of(path)
    passes.compact_producers(plan)
    fc1, fc2 = (s.weight for s in plan.steps)
    assert fc1.keep_outputs.tolist() == np.flatnonzero(keep).tolist()   # 64 of 128: aligned
    assert fc1.computed_widths() == (MLP_IN, MLP_HIDDEN // 2)
    assert fc1.notes == [f"outputs compacted: {MLP_HIDDEN // 2}/{MLP_HIDDEN} computed"]
    assert fc2.precompacted and fc2.notes == ["input pre-compacted (no gather)"]
    assert fc2.computed_widths()[0] == MLP_HIDDEN // 2


@pytest.mark.parametrize("requested", ["auto", "group", "dense"])
def test_lowered_plan_gives_torchs_outputs(rng, tmp_path, requested):
    path, t, keep = group_ffn(rng, tmp_path)
    model = cupyprune.load(path, device="cpu", path_choice=requested)
    fc1, fc2 = (s.op for s in model.steps)
    compacted = requested != "dense"
    assert fc1.out_features == (MLP_HIDDEN // 2 if compacted else MLP_HIDDEN)
    assert isinstance(fc2.path, Precompacted) == compacted
    assert fc1.describe().get("note", "") == (f"outputs compacted: {MLP_HIDDEN // 2}/"
                                              f"{MLP_HIDDEN} computed" if compacted else "")
    x = rng.standard_normal((5, MLP_IN)).astype(np.float32)
    assert rel_err(model(x), torch_mlp(t, x)) <= 1e-5


def test_a_pass_that_narrows_nothing_changes_no_op(rng, tmp_path, monkeypatch):
    """With no passes, the same file lowers to gathering ops of the file's widths."""
    path, t, keep = group_ffn(rng, tmp_path)
    monkeypatch.setattr(passes, "run", lambda *a, **k: None)
    model = cupyprune.load(path, device="cpu")
    fc1, fc2 = (s.op for s in model.steps)
    assert fc1.out_features == MLP_HIDDEN and "note" not in fc1.describe()
    assert fc2.path.input_rows is not None and not isinstance(fc2.path, Precompacted)
    x = rng.standard_normal((5, MLP_IN)).astype(np.float32)
    assert rel_err(model(x), torch_mlp(t, x)) <= 1e-5


def test_demotion_on_the_plan_after_compaction(rng, tmp_path, monkeypatch):
    """demote_gathering_linears leaves a pre-compacted layer group-wise and turns a gathering
    one dense, on the plan; the lowered dense layer multiplies by the masked weight."""
    path, t, keep = group_ffn(rng, tmp_path)

    def passes_on_the_gpu(plan, device, requested, precision):
        passes.compact_producers(plan)
        passes.demote_gathering_linears(plan, precision, pays=lambda *a: False)

    monkeypatch.setattr(passes, "run", passes_on_the_gpu)
    model = cupyprune.load(path, device="cpu")
    assert isinstance(model.steps[1].op.path, Precompacted)          # nothing to gather
    monkeypatch.setattr(passes, "run", lambda plan, device, requested, precision:
                        passes.demote_gathering_linears(plan, precision, pays=lambda *a: False))
    model = cupyprune.load(path, device="cpu")
    fc2 = model.steps[1].op
    assert isinstance(fc2.path, DensePath) and fc2.describe()["path"] == "dense"
    assert fc2.describe()["note"] == (f"auto: dense, gathering {int(keep.sum())}/{MLP_HIDDEN} "
                                      f"inputs would cost more than it saves")
    x = rng.standard_normal((5, MLP_IN)).astype(np.float32)
    assert rel_err(model(x), torch_mlp(t, x)) <= 1e-5
    h = model.steps[0].op(x)                           # fc1 with its GELU: what fc2 reads
    ref = h.astype(np.float64) @ (t["fc2.weight"].astype(np.float64) * keep).T + t["fc2.bias"]
    assert rel_err(fc2(h), ref) <= 1e-5


def test_a_conv_producer_computes_the_channels_a_1x1_conv_keeps(rng, tmp_path):
    """3x3 conv -> ReLU (fused) -> group-wise 1x1 conv: the plan keeps the 3x3 conv's kept
    channels only, and the lowered model still equals torch's masked one."""
    import torch
    import torch.nn.functional as F
    from cupyprune.format import write_model_file
    C, K1, K2 = 3, 16, 8
    keep = rng.permutation(K1) < K1 // 2
    t = {"a.weight": rng.standard_normal((K1, C, 3, 3)).astype(np.float32),
         "a.bias": rng.standard_normal(K1).astype(np.float32),
         "b.weight": (rng.standard_normal((K2, K1, 1, 1)) * keep[:, None, None]
                      ).astype(np.float32)}
    graph = {"inputs": ["image"], "outputs": ["y"], "nodes": [
        {"name": "a", "op": "conv2d", "inputs": ["image"], "outputs": ["h"],
         "params": {"weight": "a.weight", "bias": "a.bias"}, "attrs": {"padding": [1, 1]}},
        {"name": "r", "op": "relu", "inputs": ["h"], "outputs": ["hr"]},
        {"name": "b", "op": "conv2d", "inputs": ["hr"], "outputs": ["y"],
         "params": {"weight": "b.weight"}}]}
    spec = [{"name": "image", "shape": [None, C, 6, 6], "dtype": "float32", "kind": "image"}]
    path = tmp_path / "convs.safetensors"
    write_model_file(str(path), t, graph, spec)
    plan = plan_of(path)
    passes.compact_producers(plan)
    a, b = (s.weight for s in plan.steps)
    assert a.keep_outputs.tolist() == np.flatnonzero(keep).tolist() and b.precompacted
    model = cupyprune.load(path, device="cpu")
    assert (model.steps[0].op.K, model.steps[1].op.C) == (K1 // 2, K1 // 2)
    assert model.steps[0].op.describe()["detail"].startswith(f"{C}->{K1 // 2} 3x3")
    x = rng.standard_normal((2, C, 6, 6)).astype(np.float32)
    T = {k: torch.from_numpy(v) for k, v in t.items()}
    ref = F.conv2d(F.relu(F.conv2d(torch.from_numpy(x), T["a.weight"], T["a.bias"], padding=1)),
                   T["b.weight"]).numpy()
    assert rel_err(model(x), ref) <= 1e-5


@pytest.mark.parametrize("vocab, checked", [(10, True), (11, False)])
def test_an_id_lookup_bounded_by_the_spec_is_marked_on_the_plan(rng, tmp_path, vocab, checked):
    """An embedding whose input spec bounds the ids within its table leaves the range check to
    input binding (and can be captured); the plan says so before the op is built."""
    from cupyprune.format import write_model_file
    from cupyprune.errors import InputError
    table = rng.standard_normal((10, 4)).astype(np.float32)
    graph = {"inputs": ["ids"], "outputs": ["y"], "nodes": [
        {"name": "emb", "op": "embedding", "inputs": ["ids"], "outputs": ["y"],
         "params": {"weight": "emb.weight"}}]}
    spec = [{"name": "ids", "shape": [None, None], "dtype": "int64", "kind": "token_ids",
             "vocab_size": vocab}]
    path = str(tmp_path / "emb.safetensors")
    write_model_file(path, {"emb.weight": table}, graph, spec)
    model = cupyprune.load(path, device="cpu")
    assert model.plan.steps[0].ids_checked == checked
    assert model.steps[0].op.checked_upstream == checked
    ids = np.array([[0, 9, 3]])
    assert np.array_equal(model(ids), table[ids])
    with pytest.raises(InputError, match="token id 10 is outside"):
        model(np.array([[10]]))
