"""Every bad input of the runtime core: a one-line error naming the problem, exit code 2 from the
CLI, no traceback, nothing written."""
import json
import struct

import numpy as np
import pytest
from click.testing import CliRunner

from cupyprune.cli.main import cli
from tiny_models import tiny_graph, tiny_spec, tiny_tensors, write_tiny


def run_cli(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    for frag in fragments:
        assert frag in lines[0], (frag, lines[0])


def raw_file(path, header, data=b""):
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)


def valid_header(rng, tmp_path):
    """A valid tiny file's header (parsed) and data bytes, for surgical corruption."""
    p = tmp_path / "ok.safetensors"
    write_tiny(p, rng)
    raw = p.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def test_missing_file(tmp_path):
    assert_one_line_error(run_cli("infer", tmp_path / "nope.safetensors"), "no such file")


def test_not_safetensors(tmp_path):
    p = tmp_path / "x.safetensors"
    p.write_bytes(b"this is plainly not a safetensors file at all")
    assert_one_line_error(run_cli("infer", p), "not a safetensors file")


def test_tiny_file(tmp_path):
    p = tmp_path / "x.safetensors"
    p.write_bytes(b"abc")
    assert_one_line_error(run_cli("inspect", p), "not a safetensors file")


def test_truncated_file(rng, tmp_path):
    p = tmp_path / "m.safetensors"
    write_tiny(p, rng)
    raw = p.read_bytes()
    p.write_bytes(raw[:-100])
    assert_one_line_error(run_cli("infer", p), "truncated")


def test_truncated_header(rng, tmp_path):
    p = tmp_path / "m.safetensors"
    write_tiny(p, rng)
    p.write_bytes(p.read_bytes()[:40])
    assert_one_line_error(run_cli("infer", p), "truncated")


def test_header_too_large(tmp_path):
    p = tmp_path / "m.safetensors"
    p.write_bytes(struct.pack("<Q", 2 ** 40) + b"{}")
    assert_one_line_error(run_cli("infer", p), "header", "limit")


@pytest.mark.parametrize("version, fragment", [("2", "version '2' is not supported"),
                                               (None, "'format_version' is missing")])
def test_format_version(rng, tmp_path, version, fragment):
    header, data = valid_header(rng, tmp_path)
    if version is None:
        del header["__metadata__"]["format_version"]
    else:
        header["__metadata__"]["format_version"] = version
    p = tmp_path / "v.safetensors"
    raw_file(p, header, data)
    assert_one_line_error(run_cli("infer", p), fragment)


def test_plain_safetensors_without_metadata(rng, tmp_path):
    from safetensors.numpy import save_file
    p = tmp_path / "plain.safetensors"
    save_file({"w": rng.standard_normal((2, 2)).astype(np.float32)}, str(p))
    assert_one_line_error(run_cli("infer", p), "not a cupyprune model file")


def test_duplicate_key(rng, tmp_path):
    header, data = valid_header(rng, tmp_path)
    blob = json.dumps(header)
    entry = json.dumps(header["fc.bias"])
    blob = blob[:-1] + f', "fc.bias": {entry}}}'
    p = tmp_path / "d.safetensors"
    p.write_bytes(struct.pack("<Q", len(blob)) + blob.encode() + data)
    assert_one_line_error(run_cli("infer", p), "duplicate key 'fc.bias'")


def test_graph_not_json(rng, tmp_path):
    header, data = valid_header(rng, tmp_path)
    header["__metadata__"]["graph"] = "{nodes: [oops"
    p = tmp_path / "g.safetensors"
    raw_file(p, header, data)
    assert_one_line_error(run_cli("infer", p), "'graph' is not valid JSON")


def test_unknown_op(rng, tmp_path):
    g = tiny_graph()
    g["nodes"][2]["op"] = "swish_deluxe"
    p = tmp_path / "u.safetensors"
    write_tiny(p, rng, graph=g)
    assert_one_line_error(run_cli("infer", p), "unknown op 'swish_deluxe'")


def test_value_used_before_defined(rng, tmp_path):
    g = tiny_graph()
    g["nodes"][2]["inputs"] = ["t9"]
    p = tmp_path / "u.safetensors"
    write_tiny(p, rng, graph=g)
    assert_one_line_error(run_cli("infer", p), "reads 't9' before it is defined")


def infer_tiny(rng, tmp_path, tensors, **write_kw):
    """Write the tiny model with `tensors` (edited by the test) and run `infer` on it."""
    p = tmp_path / "m.safetensors"
    write_tiny(p, rng, tensors=tensors, **write_kw)
    return run_cli("infer", p)


def test_missing_tensor(rng, tmp_path):
    t = tiny_tensors(rng)
    del t["fc.bias"]
    assert_one_line_error(infer_tiny(rng, tmp_path, t), "'fc.bias'", "missing")


def test_extra_tensor(rng, tmp_path):
    t = tiny_tensors(rng)
    t["stowaway.weight"] = rng.standard_normal(3).astype(np.float32)
    assert_one_line_error(infer_tiny(rng, tmp_path, t), "'stowaway.weight'",
                          "no graph node uses it")


def test_mask_shape_mismatch(rng, tmp_path):
    t = tiny_tensors(rng)
    t["c.weight.mask"] = np.ones((8, 3, 3, 2), dtype=np.float32)
    assert_one_line_error(infer_tiny(rng, tmp_path, t), "'c.weight.mask' has shape (8, 3, 3, 2)")


def test_bias_shape_mismatch(rng, tmp_path):
    t = tiny_tensors(rng)
    t["fc.bias"] = rng.standard_normal(7).astype(np.float32)
    assert_one_line_error(infer_tiny(rng, tmp_path, t), "'fc'", "bias has shape (7,)")


def test_weight_dtype_mismatch(rng, tmp_path):
    t = tiny_tensors(rng)
    t["fc.weight"] = rng.integers(0, 5, size=t["fc.weight"].shape).astype(np.int32)
    assert_one_line_error(infer_tiny(rng, tmp_path, t), "'fc.weight' has dtype int32")


def test_graph_weight_shape_mismatch(rng, tmp_path):
    """A linear layer whose input size does not match what the graph feeds it."""
    t = tiny_tensors(rng)
    t["fc.weight"] = rng.standard_normal((5, 31)).astype(np.float32)
    assert_one_line_error(infer_tiny(rng, tmp_path, t), "'fc'", "31 input features", "got 32")


def test_mask_not_binary(rng, tmp_path):
    t = tiny_tensors(rng)
    t["c.weight.mask"] = t["c.weight.mask"] * 0.5
    t["c.weight.mask"][0, 0, 0, 0] = 0.5
    assert_one_line_error(infer_tiny(rng, tmp_path, t), "mask of 'c.weight' holds 0.5")


def test_declared_pattern_violated(rng, tmp_path):
    t = tiny_tensors(rng)
    t["c.weight.mask"] = np.ascontiguousarray(t["c.weight.mask"])
    kept = np.argwhere(t["c.weight.mask"][0] > 0)[0]
    t["c.weight.mask"][3, kept[0], kept[1], kept[2]] = 0       # one output skips a kept tap
    result = infer_tiny(rng, tmp_path, t, pruning={"c.weight": {"pattern": "group"}})
    assert_one_line_error(result, "layer 'c'", "declared 'group' pattern")


@pytest.fixture
def model_path(rng, tmp_path):
    p = tmp_path / "tiny.safetensors"
    write_tiny(p, rng)
    return p


@pytest.mark.parametrize("shape, fragment", [
    ((2, 3, 8, 8), "has shape (2, 3, 8, 8), expected (N, 3, 9, 9) NCHW"),
    ((2, 9, 9, 3), "has shape (2, 9, 9, 3), expected (N, 3, 9, 9) NCHW"),
    ((3, 9, 9), "has shape (3, 9, 9)"),
])
def test_input_wrong_shape_or_layout(rng, tmp_path, model_path, shape, fragment):
    x = tmp_path / "x.npy"
    np.save(x, rng.standard_normal(shape).astype(np.float32))
    assert_one_line_error(run_cli("infer", model_path, "--input", x), fragment)


def test_input_wrong_dtype(rng, tmp_path, model_path):
    x = tmp_path / "x.npy"
    np.save(x, rng.integers(0, 255, size=(2, 3, 9, 9)).astype(np.uint8))
    assert_one_line_error(run_cli("infer", model_path, "--input", x), "floating point", "uint8")


def test_input_not_npy(tmp_path, model_path):
    x = tmp_path / "x.npy"
    x.write_text("1,2,3")
    assert_one_line_error(run_cli("infer", model_path, "--input", x), "not a readable")


def test_input_npz_unknown_key(rng, tmp_path, model_path):
    x = tmp_path / "x.npz"
    np.savez(x, pictures=rng.standard_normal((1, 3, 9, 9)).astype(np.float32))
    assert_one_line_error(run_cli("infer", model_path, "--input", x), "unknown input 'pictures'")


def test_unwritable_output(rng, tmp_path, model_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    out = ro / "y.npy"
    try:
        result = run_cli("infer", model_path, "--output", out)
        import os
        if os.access(ro, os.W_OK):          # running as root: permissions do not bind
            out = tmp_path / "missing_dir" / "y.npy"
            result = run_cli("infer", model_path, "--output", out)
        assert_one_line_error(result, "--output")
        assert not out.exists()
    finally:
        ro.chmod(0o700)


def test_output_is_directory(tmp_path, model_path):
    assert_one_line_error(run_cli("infer", model_path, "--output", tmp_path), "is a directory")


def test_nan_weights_load_with_warning(rng, tmp_path):
    t = tiny_tensors(rng)
    t["fc.weight"][0, 0] = np.nan
    p = tmp_path / "nan.safetensors"
    write_tiny(p, rng, tensors=t)
    result = run_cli("infer", p)
    assert result.exit_code == 0, result.output
    assert "warning: tensor 'fc.weight' holds NaN or Inf" in result.output


def test_gpu_requested_without_gpu(model_path, monkeypatch):
    from cupyprune import backend
    monkeypatch.setattr(backend, "gpu_available", lambda: False)
    assert_one_line_error(run_cli("infer", model_path, "--device", "gpu"), "no usable CUDA GPU")


def test_device_env_variable(model_path, monkeypatch):
    monkeypatch.setenv("CUPYPRUNE_DEVICE", "tpu")
    assert_one_line_error(run_cli("infer", model_path), "unknown device 'tpu'")


def test_bad_spec_shape_error_in_library(rng, model_path):
    import cupyprune
    model = cupyprune.load(model_path, device="cpu")
    with pytest.raises(cupyprune.InputError, match="expected"):
        model(rng.standard_normal((1, 3, 10, 10)).astype(np.float32))
    assert tiny_spec()[0]["shape"][1:] == [3, 9, 9]


def test_model_is_directory(tmp_path):
    assert_one_line_error(run_cli("infer", tmp_path), "is a directory")


@pytest.mark.parametrize("args, fragment", [
    (["infer"], "Missing argument 'MODEL'"),
    (["infer", "m.safetensors", "--top-k", "0"], "--top-k"),
    (["infer", "m.safetensors", "--path", "warp"], "--path"),
    (["frobnicate"], "No such command"),
])
def test_usage_errors_are_one_line(args, fragment):
    assert_one_line_error(run_cli(*args), fragment)


@pytest.mark.parametrize("decl, fragment", [
    ({"pattern": "block", "block": [4]}, "two positive integers"),
    ({"pattern": "block", "block": "4x4"}, "two positive integers"),
    ({"pattern": "vector", "n": "2", "m": 4}, "vector pattern"),
    ({"pattern": "hexagonal"}, "unknown pruning pattern 'hexagonal'"),
])
def test_malformed_pruning_declaration(rng, tmp_path, decl, fragment):
    p = tmp_path / "d.safetensors"
    write_tiny(p, rng, pruning={"c.weight": decl})
    assert_one_line_error(run_cli("infer", p), "layer 'c'", fragment)
