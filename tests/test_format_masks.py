"""Format version 3: masks bit-packed (`<param>.maskbits`) or implied by the weight's zeros.

A pruned file, written as the exporters write it, is never larger than the dense model's file
(one test per pattern), loads back to exactly the masked weights and runs as
torch.nn.functional does; files of versions 1 and 2 still load; a malformed packed mask is a
one-line error."""
import json
import struct

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.numpy import load_file, save_file

import cupyprune
from conftest import ROOT, rel_err
from cupyprune.cli.main import cli
from cupyprune.format import read_model_file, write_model_file
from cupyprune.format.keys import PRUNING_PATTERNS
from cupyprune.format.masks import pack_masks
from cupyprune.export.pruning import make_mask
from tiny_models import MLP_HIDDEN, MLP_IN, mlp_graph, mlp_spec, mlp_tensors, torch_mlp



def pruned(dense, pattern, keep, n_m=(2, 4)):
    """Both weights pruned as tools/prune.py prunes them: (tensors with zeros and `.mask`, the
    `pruning` metadata)."""
    kwargs = {"vector": {"n_m": n_m}, "block": {"block": (4, 4)}}.get(pattern, {})
    decl = {"vector": {"n": n_m[0], "m": n_m[1]}, "block": {"block": [4, 4]}}.get(pattern, {})
    out, pruning = dict(dense), {}
    for key in ("fc1.weight", "fc2.weight"):
        mask = make_mask(torch.from_numpy(dense[key]), pattern, keep, **kwargs).numpy() != 0
        out[key] = dense[key] * mask
        out[key + ".mask"] = mask
        pruning[key] = {"pattern": pattern, **decl}
    return out, pruning


def write(path, tensors, pruning=None, compact=True):
    write_model_file(str(path), tensors, mlp_graph(), mlp_spec(), pruning=pruning,
                     compact=compact)
    return path.stat().st_size


def load_file_metadata(path):
    """The raw `__metadata__` of a safetensors file, as JSON text."""
    from safetensors import safe_open
    with safe_open(str(path), "np") as f:
        return json.dumps(f.metadata())


def data_bytes(path):
    """The tensor bytes of a safetensors file (its size less the header)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
    return path.stat().st_size - 8 - n


@pytest.mark.parametrize("pattern", PRUNING_PATTERNS)
def test_pruned_file_is_no_larger_than_the_dense_one(rng, tmp_path, pattern):
    dense = mlp_tensors(rng)
    t, pruning = pruned(dense, pattern, 0.5)
    dense_size = write(tmp_path / "dense.safetensors", dense)
    size = write(tmp_path / "pruned.safetensors", t, pruning)
    assert size <= dense_size
    assert data_bytes(tmp_path / "pruned.safetensors") <= 0.6 * dense_size   # half, plus bits
    meta = read_model_file(tmp_path / "pruned.safetensors")
    for key in ("fc1.weight", "fc2.weight"):                  # the reader gives back every bit
        np.testing.assert_array_equal(meta.tensors[key], t[key])
        np.testing.assert_array_equal(meta.tensors[key + ".mask"] != 0, t[key + ".mask"])
    model = cupyprune.load(tmp_path / "pruned.safetensors", device="cpu")
    assert {s.op.describe()["pattern"] for s in model.layers()} == {pattern}
    x = rng.standard_normal((5, MLP_IN)).astype(np.float32)
    assert rel_err(model(x), torch_mlp(t, x)) <= 1e-5


@pytest.mark.parametrize("pattern", PRUNING_PATTERNS)
def test_lightly_pruned_file_holds_no_more_tensor_bytes_than_the_dense_one(rng, tmp_path,
                                                                           pattern):
    """At 63/64 kept (vector 63:64, one weight, 4x4 block or group in 64 pruned) packed bits
    would cost more than they save: the weight's zeros say the same, so the mask is left out,
    and only the header's pruning declarations are added."""
    dense = mlp_tensors(rng)
    t, pruning = pruned(dense, pattern, 63 / 64, n_m=(63, 64))
    write(tmp_path / "dense.safetensors", dense)
    write(tmp_path / "pruned.safetensors", t, pruning)
    assert data_bytes(tmp_path / "pruned.safetensors") <= data_bytes(tmp_path /
                                                                      "dense.safetensors")
    model = cupyprune.load(tmp_path / "pruned.safetensors", device="cpu")
    for s in model.layers():
        assert s.op.describe()["kept"] == float(t[s.node.params["weight"] + ".mask"].mean())


def test_pack_chooses_the_smallest_lossless_form(rng):
    w = rng.standard_normal((16, 40)).astype(np.float32)
    half = rng.random(w.shape) < 0.5
    most = rng.random(w.shape) < 0.99
    stored, entries = pack_masks({"a": w * half, "a.mask": half,          # kept values + bits
                                  "b": w * most, "b.mask": most,          # zeros say it all
                                  "c": w, "c.mask": half.astype(np.float32)})  # values kept
    assert entries == {"a": {"mask": "bits", "shape": [16, 40]}, "b": {"mask": "zeros"},
                       "c": {"mask": "bits", "shape": [16, 40]}}
    assert stored["a"].shape == (int(half.sum()),) and stored["a.maskbits"].shape == (80,)
    assert "b.mask" not in stored and "b.maskbits" not in stored
    assert stored["c"] is w                       # nonzero values under the mask are not lost
    np.testing.assert_array_equal(
        np.unpackbits(stored["a.maskbits"], bitorder="little").reshape(w.shape), half)


def test_masks_that_are_not_0_1_are_left_for_the_reader(rng):
    w = rng.standard_normal((4, 8)).astype(np.float32)
    bad = np.full(w.shape, 0.5, np.float32)
    stored, entries = pack_masks({"a": w, "a.mask": bad})
    assert entries == {} and stored["a.mask"] is bad


def test_version_1_and_2_files_still_load(rng, tmp_path):
    """A version-1 file (a byte per weight of mask), the shipped digits model (version 1) and a
    version-2 file (group-wise weights compacted, no other mask)."""
    t, pruning = pruned(mlp_tensors(rng), "element", 0.5)
    write(tmp_path / "v1.safetensors", t, pruning, compact=False)
    v1 = read_model_file(tmp_path / "v1.safetensors")
    assert load_file(str(tmp_path / "v1.safetensors"))["fc1.weight.mask"].dtype == np.bool_
    x = rng.standard_normal((3, MLP_IN)).astype(np.float32)
    assert rel_err(cupyprune.load(tmp_path / "v1.safetensors", device="cpu")(x),
                   torch_mlp(t, x)) <= 1e-5
    assert v1.tensors["fc1.weight.mask"].shape == (MLP_HIDDEN, MLP_IN)
    shipped = f"{ROOT}/weights/digits_group50.safetensors"
    with open(shipped, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        assert json.loads(f.read(n))["__metadata__"]["format_version"] == "1"
    result = CliRunner().invoke(cli, ["infer", shipped, "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["accuracy"] > 0.9
    group, _ = pruned(mlp_tensors(rng), "group", 0.5)
    write(tmp_path / "v2.safetensors", group)
    assert json.loads(load_file_metadata(tmp_path / "v2.safetensors"))["format_version"] == "2"
    assert rel_err(cupyprune.load(tmp_path / "v2.safetensors", device="cpu")(x),
                   torch_mlp(group, x)) <= 1e-5


def _write_raw(path, tensors, meta_extra, version="3"):
    meta = {"format": "cupyprune", "format_version": version,
            "graph": json.dumps(mlp_graph()), "input_spec": json.dumps(mlp_spec()),
            "pruning": "{}", **meta_extra}
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path), metadata=meta)


@pytest.mark.parametrize("change,message", [
    (lambda s, m: s.update({"fc1.weight.maskbits": s["fc1.weight.maskbits"][:-1]}),
     "packs into uint8 (1024,)"),
    (lambda s, m: s.update({"fc1.weight": s["fc1.weight"][:-1]}), "kept values"),
    (lambda s, m: m.update({"fc1.weight": {"mask": "runs"}}), "expected 'zeros' or 'bits'"),
    (lambda s, m: m.update({"fc1.weight": {"mask": "bits", "shape": [128, -64]}}),
     "non-negative integers"),
    (lambda s, m: m.update({"nothing.weight": {"mask": "zeros"}}), "not in the file"),
    (lambda s, m: m.pop("fc1.weight") and None, "has no 'masks' entry"),
    (lambda s, m: s.update({"fc1.weight.mask": np.ones((MLP_HIDDEN, MLP_IN), bool)}), "has both"),
    (lambda s, m: "2", "need format version 3"),
])
def test_malformed_packed_masks_are_one_line_errors(rng, tmp_path, change, message):
    t, _ = pruned(mlp_tensors(rng), "element", 0.5)
    stored, entries = pack_masks(t)
    version = change(stored, entries) or "3"
    path = tmp_path / "bad.safetensors"
    _write_raw(path, stored, {"masks": json.dumps(entries)}, version)
    result = CliRunner().invoke(cli, ["infer", str(path), "--device", "cpu"])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert message in result.stderr, result.stderr
