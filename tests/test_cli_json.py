"""`inspect` and `infer` for scripts (--json), and what inspect reports: the file's own format
version, and the model's shapes where the runtime computes fewer features (a group-wise linear
reading another linear through GELU, as in a transformer's FFN). References: torch.nn.functional
for shapes and predictions, the file's metadata for the version."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from safetensors import safe_open

from cupyprune.cli.main import cli
from cupyprune.format import write_model_file
from tiny_models import (MLP_CLASSES, MLP_HIDDEN, MLP_IN, mlp_graph, mlp_spec, mlp_tensors,
                         torch_mlp)


def invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.stdout


def group_ffn(rng, tmp_path, compact=True):
    """The MLP with its second linear group-wise at half its inputs: (path, tensors, kept)."""
    t = mlp_tensors(rng)
    keep = rng.permutation(MLP_HIDDEN) < MLP_HIDDEN // 2              # (MLP_HIDDEN,) inputs
    t["fc2.weight"] = t["fc2.weight"] * keep
    t["fc2.weight.mask"] = np.broadcast_to(keep, t["fc2.weight"].shape)
    path = tmp_path / "ffn.safetensors"
    write_model_file(str(path), t, mlp_graph(), mlp_spec(), compact=compact)
    return path, t, keep


def test_inspect_shows_the_models_shapes_not_the_computed_width(rng, tmp_path):
    path, t, keep = group_ffn(rng, tmp_path)
    x = torch.from_numpy(rng.standard_normal((1, MLP_IN)).astype(np.float32))
    h = F.linear(x, torch.from_numpy(t["fc1.weight"]))                 # torch's shapes
    y = F.linear(F.gelu(h), torch.from_numpy(t["fc2.weight"]))
    out = json.loads(invoke("inspect", path, "--all-ops", "--json"))
    layers = {r["name"]: r for r in out["layers"]}
    assert layers["fc1"]["detail"] == f"{MLP_IN}->{MLP_HIDDEN}"
    assert layers["fc1"]["output_shape"] == list(h.shape)
    assert "act" not in layers and layers["fc1"]["fused"] == ["gelu"]     # GELU in its epilogue
    assert layers["fc2"]["detail"] == f"{MLP_HIDDEN}->{MLP_CLASSES}"
    assert layers["fc2"]["output_shape"] == list(y.shape)
    assert "outputs compacted: 64/128 computed" in layers["fc1"]["note"]   # the runtime's width
    assert layers["fc2"]["pattern"] == "group" and layers["fc2"]["path"] == "group"
    assert layers["fc2"]["kept"] == pytest.approx(keep.mean())
    assert layers["fc1"]["kept"] == 1.0
    assert out["prunable_params"] == MLP_HIDDEN * MLP_IN + MLP_CLASSES * MLP_HIDDEN
    assert out["kept_params"] == MLP_HIDDEN * MLP_IN + MLP_CLASSES * int(keep.sum())
    text = invoke("inspect", path, "--all-ops")
    assert f"{MLP_IN}->{MLP_HIDDEN}" in text and f"1x{MLP_HIDDEN}" in text and "1x64 " not in text


def test_inspect_widens_an_unfused_op_between_producer_and_reader(rng, tmp_path):
    """fc1 -> GELU (fused) -> tanh (its own op) -> group-wise fc2: tanh's output is the model's
    (1, MLP_HIDDEN), though the runtime computes only fc2's kept features there."""
    t = mlp_tensors(rng)
    keep = rng.permutation(MLP_HIDDEN) < MLP_HIDDEN // 2
    t["fc2.weight"] = t["fc2.weight"] * keep
    t["fc2.weight.mask"] = np.broadcast_to(keep, t["fc2.weight"].shape)
    graph = mlp_graph()
    graph["nodes"].insert(2, {"name": "act2", "op": "tanh", "inputs": ["a"], "outputs": ["a2"]})
    graph["nodes"][3]["inputs"] = ["a2"]
    path = tmp_path / "ffn.safetensors"
    write_model_file(str(path), t, graph, mlp_spec(), compact=True)
    x = torch.from_numpy(rng.standard_normal((1, MLP_IN)).astype(np.float32))
    a2 = torch.tanh(F.gelu(F.linear(x, torch.from_numpy(t["fc1.weight"]))))
    layers = {r["name"]: r for r in json.loads(invoke("inspect", path, "--all-ops",
                                                      "--json"))["layers"]}
    assert layers["act2"]["output_shape"] == list(a2.shape)
    assert "outputs compacted" in layers["fc1"]["note"]


@pytest.mark.parametrize("pattern,version", [("none", "1"), ("group", "2"), ("element", "3")])
def test_inspect_reports_the_files_format_version(rng, tmp_path, pattern, version):
    t = mlp_tensors(rng)
    if pattern == "group":
        path, _, _ = group_ffn(rng, tmp_path)
    else:
        if pattern == "element":
            mask = rng.random(t["fc1.weight"].shape) < 0.5
            t["fc1.weight"], t["fc1.weight.mask"] = t["fc1.weight"] * mask, mask
        path = tmp_path / "m.safetensors"
        write_model_file(str(path), t, mlp_graph(), mlp_spec(), compact=True)
    with safe_open(str(path), "np") as f:
        assert f.metadata()["format_version"] == version
    assert json.loads(invoke("inspect", path, "--json"))["format_version"] == version
    assert invoke("inspect", path).splitlines()[0].startswith(f"{path}: format v{version},")


def test_infer_json_predictions_equal_torchs(rng, tmp_path):
    path, t, _ = group_ffn(rng, tmp_path)
    x = rng.standard_normal((5, MLP_IN)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = json.loads(invoke("infer", path, "--input", tmp_path / "x.npy", "--top-k", "3",
                            "--repeat", "2", "--json"))
    probs = torch.softmax(torch.from_numpy(torch_mlp(t, x)).double(), -1).numpy()
    assert out["output_shape"] == [5, MLP_CLASSES] and out["batch"] == 5
    assert [p["index"] for p in out["predictions"]] == list(range(5))
    for rec, p in zip(out["predictions"], probs):
        assert [c["class"] for c in rec["top"]] == list(np.argsort(-p)[:3])
        np.testing.assert_allclose([c["probability"] for c in rec["top"]],
                                   np.sort(p)[::-1][:3], rtol=1e-4, atol=1e-6)
        assert "true" not in rec
    assert "accuracy" not in out
    assert out["latency_ms"]["runs"] == 2 and out["latency_ms"]["median"] > 0


def test_infer_json_with_the_files_labels(rng, tmp_path):
    """The shipped digits model: true labels and the accuracy, consistent with each other."""
    from conftest import ROOT
    out = json.loads(invoke("infer", f"{ROOT}/weights/digits_group50.safetensors", "--json",
                            "--repeat", "1"))
    preds = out["predictions"]
    right = sum(p["top"][0]["class"] == p["true"]["class"] for p in preds)
    assert out["accuracy"] == pytest.approx(right / len(preds)) and out["accuracy"] > 0.9
    assert all(p["true"]["label"] == str(p["true"]["class"]) for p in preds)
