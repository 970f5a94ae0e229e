"""Format version 2: group-wise weights stored compacted (`<param>` (K, T) + `<param>.groups`).
Exporters write it; the file is smaller than the dense one; it runs exactly as the masked model
(torch.nn.functional reference); other patterns keep their `.mask`; a malformed compacted entry
is a one-line error."""
import numpy as np
import pytest
from click.testing import CliRunner
from safetensors.numpy import load_file, save_file

import cupyprune
from conftest import rel_err
from cupyprune.cli.main import cli
from cupyprune.format.compact import compact_tensors, expand_tensors, group_rows
from tiny_models import tiny_graph, tiny_spec, tiny_tensors, torch_reference
from cupyprune.format import write_model_file


def _group_mask(rng, shape):
    keep = rng.random(shape[1:]) < 0.5
    keep.flat[0], keep.flat[-1] = True, False
    return np.broadcast_to(keep, shape)


@pytest.mark.parametrize("shape", [(6, 4, 3, 3), (5, 12)])          # conv, linear
def test_compact_then_expand_is_the_masked_weight(rng, shape):
    w = rng.standard_normal(shape).astype(np.float32)
    mask = _group_mask(rng, shape).astype(np.float32)
    stored = compact_tensors({"l.weight": w, "l.weight.mask": mask})
    assert set(stored) == {"l.weight", "l.weight.groups"}
    kept = int((mask[0] != 0).sum())
    assert stored["l.weight"].shape == (shape[0], kept)
    back = expand_tensors(stored, "f")
    assert set(back) == {"l.weight", "l.weight.mask"}
    np.testing.assert_array_equal(back["l.weight"], w * mask)
    np.testing.assert_array_equal(back["l.weight.mask"], mask != 0)


def test_only_group_masks_are_compacted(rng):
    w = rng.standard_normal((4, 8)).astype(np.float32)
    element = rng.random((4, 8)) < 0.5
    element[0, 0], element[1, 0] = True, False                   # rows differ: not group-wise
    assert group_rows(element) is None
    assert group_rows(np.ones((4, 8))) is None                   # nothing pruned
    assert group_rows(np.zeros((4, 8))) is None                  # nothing kept
    stored = compact_tensors({"a": w, "a.mask": element})
    assert set(stored) == {"a", "a.mask"} and stored["a"] is w


def test_exported_group_model_is_smaller_and_equals_torch(rng, tmp_path):
    """A tiny conv net with a group mask on its conv, written as an exporter writes it: version
    2, no mask tensor, fewer bytes than the same file at full size, torch's outputs."""
    t = tiny_tensors(rng)
    full, compact = tmp_path / "full.safetensors", tmp_path / "compact.safetensors"
    for path, flag in ((full, False), (compact, True)):
        write_model_file(str(path), t, tiny_graph(), tiny_spec(), compact=flag)
    stored = load_file(str(compact))
    assert "c.weight.groups" in stored and "c.weight.mask" not in stored
    assert compact.stat().st_size < full.stat().st_size
    model = cupyprune.load(compact, device="cpu")
    assert model.file.tensors["c.weight.mask"].shape == t["c.weight"].shape
    (conv,) = [s for s in model.layers() if s.node.name == "c"]
    assert conv.op.describe()["pattern"] == "group" and conv.op.describe()["path"] == "group"
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    assert rel_err(model(x), torch_reference(t, x)) <= 1e-5


def _write_raw(path, tensors, version):
    """A file with these exact tensors and the tiny model's metadata, at `version`."""
    import json
    meta = {"format": "cupyprune", "format_version": version, "graph": json.dumps(tiny_graph()),
            "input_spec": json.dumps(tiny_spec()), "pruning": "{}"}
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path), metadata=meta)


def _compacted(rng):
    t = tiny_tensors(rng)
    return compact_tensors(t)


@pytest.mark.parametrize("change,version,message", [
    (lambda s: s.update({"c.weight.groups": s["c.weight.groups"].astype(np.uint8)}), "2",
     "group flags are BOOL"),
    (lambda s: s.update({"c.weight": s["c.weight"][:, :-1]}), "2", "expected (K, "),
    (lambda s: s.update({"c.weight.mask": np.ones((8, 3, 3, 3), np.float32)}), "2",
     "a compacted weight has no mask"),
    (lambda s: s.update({"x.weight.groups": np.ones(3, bool)}), "2",
     "has no compacted parameter 'x.weight'"),
    (lambda s: None, "1", "need format version 2"),
])
def test_malformed_compacted_entries_are_one_line_errors(rng, tmp_path, change, version, message):
    stored = _compacted(rng)
    change(stored)
    path = tmp_path / "bad.safetensors"
    _write_raw(path, stored, version)
    result = CliRunner().invoke(cli, ["infer", str(path), "--device", "cpu"])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert message in result.stderr, result.stderr
