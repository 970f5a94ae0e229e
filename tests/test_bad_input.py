"""Every bad input of the runtime core: a one-line error naming the problem, exit code 2 from the
CLI, no traceback, nothing written."""
import io
import json
import struct
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import rel_err
from cupyprune.cli.main import cli
from tiny_models import tiny_graph, tiny_spec, tiny_tensors, torch_reference, write_tiny


def run_cli(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    assert result.stderr.splitlines() == lines, result.stderr     # nothing else on stderr
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


@pytest.mark.parametrize("version, fragment", [("4", "version '4' is not supported"),
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


# -- model files: malformed containers, metadata, graphs and input specs ------------------------

def test_model_path_is_a_pipe(tmp_path):
    """A FIFO would block the reader forever; it is refused before it is opened."""
    import os
    fifo = tmp_path / "m.safetensors"
    os.mkfifo(fifo)
    assert_one_line_error(run_cli("inspect", fifo), "not a regular file")


def test_model_path_empty():
    assert_one_line_error(run_cli("infer", ""), "model path is empty")


@pytest.mark.parametrize("field, value, fragment", [
    ("shape", [-1, 4], "has shape [-1, 4]: not a list of non-negative integers"),
    ("shape", "8", "has shape '8'"),
    ("data_offsets", ["a", "b"], "data_offsets ['a', 'b']: not two non-negative integers"),
    ("dtype", ["F32"], "has dtype ['F32']: not a dtype name"),
])
def test_malformed_tensor_entry(rng, tmp_path, field, value, fragment):
    header, data = valid_header(rng, tmp_path)
    header["fc.weight"][field] = value
    p = tmp_path / "t.safetensors"
    raw_file(p, header, data)
    assert_one_line_error(run_cli("infer", p), "tensor 'fc.weight'", fragment)


def test_metadata_value_not_a_string(rng, tmp_path):
    header, data = valid_header(rng, tmp_path)
    header["__metadata__"]["format_version"] = 1
    p = tmp_path / "m.safetensors"
    raw_file(p, header, data)
    assert_one_line_error(run_cli("infer", p), "'format_version' is a JSON int", "strings")


def test_pruning_entry_not_an_object(rng, tmp_path):
    header, data = valid_header(rng, tmp_path)
    header["__metadata__"]["pruning"] = json.dumps({"c.weight": int(rng.integers(1, 9))})
    p = tmp_path / "m.safetensors"
    raw_file(p, header, data)
    assert_one_line_error(run_cli("infer", p), "'pruning' entry for 'c.weight'", "JSON object")


def _edit_node(index, key, value):
    def edit(g):
        g["nodes"][index][key] = value
    return edit


@pytest.mark.parametrize("edit, fragment", [
    (_edit_node(0, "name", 5), "graph node #0: 'name' must be a string"),
    (_edit_node(0, "op", ["conv2d"]), "graph node #0: 'op' must be a string"),
    (_edit_node(0, "inputs", []), "'c' (conv2d) reads 0 values, the op takes 1"),
    (_edit_node(2, "inputs", ["t1", "t0"]), "'r' (relu) reads 2 values, the op takes 1"),
    (_edit_node(6, "outputs", []), "'fc' (linear) has no outputs"),
    (_edit_node(0, "params", {"weight": 7}), "'params' must map roles to tensor names"),
    (lambda g: g.__setitem__("outputs", []), "graph 'outputs' must be a non-empty list"),
    (lambda g: g.__setitem__("inputs", "image"), "graph 'inputs' must be a non-empty list"),
])
def test_malformed_graph_structure(rng, tmp_path, edit, fragment):
    g = tiny_graph()
    edit(g)
    p = tmp_path / "g.safetensors"
    write_tiny(p, rng, graph=g)
    assert_one_line_error(run_cli("infer", p), fragment)


@pytest.mark.parametrize("node, attr, value, fragment", [
    (0, "stride", [0, 0], "'stride' is [0, 0], expected an integer or 2 integers each >= 1"),
    (0, "stride", "2", "'stride' is '2'"),
    (0, "padding", [-1, 1], "'padding' is [-1, 1], expected an integer or 2 integers each >= 0"),
    (0, "dilation", [1.5, 1], "'dilation' is [1.5, 1]"),
    (3, "kernel", None, "'kernel' is missing"),
    (4, "output_size", [0, 2], "'output_size' is [0, 2]"),
])
def test_bad_op_attribute(rng, tmp_path, node, attr, value, fragment):
    g = tiny_graph()
    if value is None:
        del g["nodes"][node]["attrs"][attr]
    else:
        g["nodes"][node]["attrs"][attr] = value
    p = tmp_path / "a.safetensors"
    write_tiny(p, rng, graph=g)
    assert_one_line_error(run_cli("infer", p), f"node {g['nodes'][node]['name']!r}", fragment)


@pytest.mark.parametrize("spec, fragment", [
    ([], "input_spec names nothing, but the graph's inputs are image"),
    (["image"], "entry #0 must be a JSON object with a string 'name'"),
    ([{"name": "image"}], "input 'image' has shape None"),
    ([{"name": "image", "shape": [None, 3, 0, 9]}], "has shape [None, 3, 0, 9]"),
    ([{"name": "image", "shape": [None, 3, 9, 9], "kind": "audio"}], "unknown kind 'audio'"),
    ([{"name": "image", "shape": [None, 3, 9, 9], "dtype": "float99"}],
     "dtype 'float99': expected the name of a numeric dtype"),
    ([{"name": "pic", "shape": [None, 3, 9, 9]}], "input_spec names pic, but the graph's inputs"),
])
def test_malformed_input_spec(rng, tmp_path, spec, fragment):
    header, data = valid_header(rng, tmp_path)
    header["__metadata__"]["input_spec"] = json.dumps(spec)
    p = tmp_path / "s.safetensors"
    raw_file(p, header, data)
    assert_one_line_error(run_cli("infer", p), fragment)


# -- --input files -----------------------------------------------------------------------------

def test_input_is_directory(tmp_path, model_path):
    assert_one_line_error(run_cli("infer", model_path, "--input", tmp_path),
                          f"--input {tmp_path}: is a directory")


def test_input_empty_path_is_not_ignored(model_path):
    """--input '' used to fall back to synthetic inputs silently."""
    assert_one_line_error(run_cli("infer", model_path, "--input", ""), "--input: empty path")


def test_input_random_bytes(rng, tmp_path, model_path):
    x = tmp_path / "x.npy"
    x.write_bytes(b"\x01" + rng.bytes(200))
    assert_one_line_error(run_cli("infer", model_path, "--input", x), "not a readable",
                          "numpy.save")


@pytest.mark.parametrize("how", ["object_npy", "raw_pickle", "object_npz"])
def test_input_needs_pickle(rng, tmp_path, model_path, how):
    import pickle
    x = tmp_path / ("x.npz" if how == "object_npz" else "x.npy")
    obj = np.array([rng.standard_normal((1, 3, 9, 9)), None], dtype=object)
    if how == "object_npy":
        np.save(x, obj, allow_pickle=True)
    elif how == "raw_pickle":
        x.write_bytes(pickle.dumps(rng.standard_normal((1, 3, 9, 9))))
    else:
        np.savez(x, image=obj)
    result = run_cli("infer", model_path, "--input", x)
    assert_one_line_error(result, f"--input {x}")
    assert "Object arrays cannot be loaded" in result.output or "not a readable" in result.output


def test_input_corrupt_npy_header(tmp_path, model_path):
    """A header that numpy's literal parser chokes on (tokenize.TokenError, not ValueError)."""
    x = tmp_path / "x.npy"
    x.write_bytes(b"\x93NUMPY\x01\x00\x10\x00{'descr': <garbage")
    assert_one_line_error(run_cli("infer", model_path, "--input", x), "not a readable")


def test_input_header_claims_huge_array(rng, tmp_path, model_path):
    """A .npy whose header declares 10**9 images but holds 2: refused before any allocation."""
    x = tmp_path / "x.npy"
    a = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    header = np.lib.format.header_data_from_array_1_0(a)
    header["shape"] = (10 ** 9, 3, 9, 9)
    with open(x, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(a.tobytes())
    assert_one_line_error(run_cli("infer", model_path, "--input", x), "truncated or corrupt",
                          "(1000000000, 3, 9, 9)")


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_input_npz_member_claims_huge_array(rng, tmp_path, model_path, compression):
    """The same for a member of a .npz (stored or compressed): named, refused before np.load
    allocates it."""
    x = tmp_path / "x.npz"
    a = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    header = np.lib.format.header_data_from_array_1_0(a)
    header["shape"] = (10 ** 9, 3, 9, 9)
    member = io.BytesIO()
    np.lib.format.write_array_header_1_0(member, header)
    member.write(a.tobytes())
    with zipfile.ZipFile(x, "w", compression=compression) as archive:
        archive.writestr("image.npy", member.getvalue())
    assert_one_line_error(run_cli("infer", model_path, "--input", x), "('image.npy')",
                          "truncated or corrupt", "(1000000000, 3, 9, 9)")


def test_input_empty_batch(tmp_path, model_path):
    x = tmp_path / "x.npy"
    np.save(x, np.empty((0, 3, 9, 9), dtype=np.float32))
    out = tmp_path / "y.npy"
    assert_one_line_error(run_cli("infer", model_path, "--input", x, "--output", out),
                          "input 'image' is empty: shape (0, 3, 9, 9)")
    assert not out.exists()


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_input_non_finite(rng, tmp_path, model_path, value):
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    where = tuple(int(rng.integers(0, d)) for d in x.shape)
    x[where] = value
    np.save(tmp_path / "x.npy", x)
    assert_one_line_error(run_cli("infer", model_path, "--input", tmp_path / "x.npy"),
                          "1 NaN/Inf value(s)", f"at index {where}")


@pytest.mark.parametrize("dtype", [np.complex64, np.bool_])
def test_input_non_float_dtype(rng, tmp_path, model_path, dtype):
    x = tmp_path / "x.npy"
    np.save(x, (rng.standard_normal((2, 3, 9, 9)) * 3).astype(dtype))
    assert_one_line_error(run_cli("infer", model_path, "--input", x), "must be floating point",
                          np.dtype(dtype).name)


@pytest.mark.parametrize("convert", [
    lambda x: x.astype(np.float64), lambda x: np.asfortranarray(x),
    lambda x: x.astype(">f4"), lambda x: x.transpose(0, 1, 3, 2).copy().transpose(0, 1, 3, 2)])
def test_input_other_float_layouts_match_float32(rng, tmp_path, model_path, convert):
    """float64, Fortran-ordered, big-endian and non-contiguous images are accepted and give the
    float32 C-ordered input's logits (docs: images are NCHW float arrays)."""
    x = rng.standard_normal((3, 3, 9, 9)).astype(np.float32)
    np.save(tmp_path / "ref.npy", x)
    np.save(tmp_path / "alt.npy", convert(x))
    for name in ("ref", "alt"):
        result = run_cli("infer", model_path, "--input", tmp_path / f"{name}.npy", "--output",
                         tmp_path / f"y_{name}.npy", "--device", "cpu")
        assert result.exit_code == 0, result.output
    assert np.array_equal(np.load(tmp_path / "y_ref.npy"), np.load(tmp_path / "y_alt.npy"))


def test_input_npz_without_any_array(tmp_path, model_path):
    x = tmp_path / "x.npz"
    np.savez(x)
    assert_one_line_error(run_cli("infer", model_path, "--input", x), "missing input 'image'")


def test_batch_with_input_is_refused(rng, tmp_path, model_path):
    np.save(tmp_path / "x.npy", rng.standard_normal((3, 3, 9, 9)).astype(np.float32))
    assert_one_line_error(run_cli("infer", model_path, "--input", tmp_path / "x.npy",
                                  "--batch", 2), "--batch 2 applies to the sample inputs")


# -- --output, --top-k and device options of infer ----------------------------------------------

@pytest.mark.parametrize("name, fragment", [
    ("y.txt", "must end in .npy"),
    ("y", "must end in .npy"),
    ("newdir/", "is a directory"),
    ("", "--output: empty path"),
])
def test_output_bad_name(tmp_path, model_path, name, fragment, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert_one_line_error(run_cli("infer", model_path, "--output", name), fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_output_under_a_regular_file(model_path):
    """/etc/hostname is a file: no directory can be under it (a path that fails even for root)."""
    import os
    assert os.path.isfile("/etc/hostname")
    assert_one_line_error(run_cli("infer", model_path, "--output", "/etc/hostname/y.npy"),
                          "/etc/hostname is a file, not a directory")


def test_output_onto_a_device_is_refused(tmp_path, model_path):
    """The atomic rename would replace a device node (or FIFO) with a regular file."""
    import os
    import stat
    fifo = tmp_path / "y.npy"
    os.mkfifo(fifo)
    assert_one_line_error(run_cli("infer", model_path, "--output", fifo), "not a regular file")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_output_file_mode_follows_umask(tmp_path, model_path):
    """The output is data, readable as any file the user writes (mkstemp alone makes it 0600)."""
    import os
    umask = os.umask(0o022)
    try:
        result = run_cli("infer", model_path, "--output", tmp_path / "y.npy", "--device", "cpu")
    finally:
        os.umask(umask)
    assert result.exit_code == 0, result.output
    assert os.stat(tmp_path / "y.npy").st_mode & 0o777 == 0o644


def test_top_k_larger_than_classes(tmp_path, model_path):
    out = tmp_path / "y.npy"
    assert_one_line_error(run_cli("infer", model_path, "--top-k", 6, "--output", out),
                          "--top-k 6: the model has only 5 classes")
    assert not out.exists()


def test_synthetic_batch_too_large_for_memory(model_path):
    assert_one_line_error(run_cli("infer", model_path, "--batch", 10 ** 12, "--device", "cpu"),
                          "batch 1000000000000", "does not fit in memory")


@pytest.mark.parametrize("args, fragment", [
    (["--precision", "fp16"], "precision fp16 needs the GPU (device is cpu)"),
    (["--precision", "tf32"], "precision tf32 needs the GPU (device is cpu)"),
    (["--cuda-graph"], "CUDA graph replay needs the GPU (device is cpu)"),
])
def test_gpu_only_options_without_gpu(model_path, monkeypatch, args, fragment):
    from cupyprune import backend
    monkeypatch.setattr(backend, "gpu_available", lambda: False)
    assert_one_line_error(run_cli("infer", model_path, *args), fragment)


def test_inspect_honours_device_env(model_path, monkeypatch):
    """inspect ignored $CUPYPRUNE_DEVICE although its --help says it is the default."""
    monkeypatch.setenv("CUPYPRUNE_DEVICE", "bogus")
    assert_one_line_error(run_cli("inspect", model_path), "unknown device 'bogus'")


# -- bench: nothing written, nothing timed, when any part of the request is bad ----------------

def bench_outputs(tmp_path):
    return ["--json", tmp_path / "r.json", "--csv", tmp_path / "r.csv"]


def assert_nothing_written(tmp_path):
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "r.csv").exists()
    assert not list(tmp_path.glob(".cupyprune-*"))


def test_bench_second_model_bad(rng, tmp_path, model_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(rng.bytes(64))
    result = run_cli("bench", model_path, bad, "--repeat", 1, "--warmup", 0, "--device", "cpu",
                     *bench_outputs(tmp_path))
    assert_one_line_error(result, str(bad))
    assert "median ms" not in result.output
    assert_nothing_written(tmp_path)


@pytest.mark.parametrize("args, fragment", [
    (["--batch", 10 ** 12], "does not fit in memory"),
    (["--precision", "fp32", "--precision", "fp16"], "precision fp16 needs the GPU"),
    (["--cuda-graph"], "CUDA graph replay needs the GPU"),
])
def test_bench_refuses_before_timing(tmp_path, model_path, monkeypatch, args, fragment):
    from cupyprune import backend
    monkeypatch.setattr(backend, "gpu_available", lambda: False)
    result = run_cli("bench", model_path, "--repeat", 1, "--warmup", 0, *args,
                     *bench_outputs(tmp_path))
    assert_one_line_error(result, fragment)
    assert_nothing_written(tmp_path)


@pytest.mark.parametrize("option", ["--json", "--csv"])
def test_bench_output_errors_name_the_option(tmp_path, model_path, option):
    out = tmp_path / "missing" / f"r.{option[2:]}"
    assert_one_line_error(run_cli("bench", model_path, option, out), f"{option} {out}",
                          "does not exist")


@pytest.mark.parametrize("option", ["--json", "--csv"])
def test_bench_outputs_never_replace_a_model(tmp_path, model_path, option):
    """`bench w/*.safetensors` after --csv makes the first model the CSV's name: refused by its
    suffix; a model whose own name has the output's suffix is refused by name."""
    before = model_path.read_bytes()
    same = tmp_path / "r.out"
    assert_one_line_error(run_cli("bench", option, model_path, same), f"{option} {model_path}",
                          f"must end in .{option[2:]}")
    assert_one_line_error(run_cli("bench", model_path, "--json", same, "--csv", same),
                          "must end in .")
    renamed = tmp_path / f"model.{option[2:]}"
    renamed.write_bytes(before)
    assert_one_line_error(run_cli("bench", renamed, option, renamed),
                          f"{option} {renamed} is the model file")
    assert model_path.read_bytes() == before == renamed.read_bytes()
    assert not same.exists()


# -- found by a fuzzing pass over the CLI (2026-11-27) -------------------------------------------
@pytest.mark.parametrize("where", ["header", "graph"])
def test_json_nested_too_deeply(rng, tmp_path, where):
    deep = "[" * 100_000 + "]" * 100_000
    p = tmp_path / "deep.safetensors"
    if where == "header":
        p.write_bytes(struct.pack("<Q", len(deep)) + deep.encode())
        fragment = "header JSON nested too deeply"
    else:
        header, data = valid_header(rng, tmp_path)
        header["__metadata__"]["graph"] = deep
        raw_file(p, header, data)
        fragment = "'graph' is JSON nested too deeply"
    assert_one_line_error(run_cli("inspect", p), fragment)


def test_overlapping_data_offsets(rng, tmp_path):
    """Two tensors of one size made to share their bytes (docs/FORMAT.md: refused)."""
    header, data = valid_header(rng, tmp_path)
    header["c.weight.mask"]["data_offsets"] = header["c.weight"]["data_offsets"]
    p = tmp_path / "o.safetensors"
    raw_file(p, header, data)
    assert_one_line_error(run_cli("infer", p), "overlapping data offsets")


def test_bytes_after_the_last_tensor(rng, tmp_path):
    """The safetensors format has no room for data no tensor owns: a file with bytes appended
    (a corrupt copy, two files joined) is refused, not read as if whole."""
    header, data = valid_header(rng, tmp_path)
    p = tmp_path / "t.safetensors"
    raw_file(p, header, data + b"\x00" * 24)
    assert_one_line_error(run_cli("infer", p), "24 bytes after the last tensor's data")


def test_a_gap_between_tensors(rng, tmp_path):
    """Every tensor moved 8 bytes on, leaving the data section's first 8 bytes to no tensor."""
    header, data = valid_header(rng, tmp_path)
    for name, entry in header.items():
        if name != "__metadata__":
            entry["data_offsets"] = [entry["data_offsets"][0] + 8, entry["data_offsets"][1] + 8]
    p = tmp_path / "g.safetensors"
    raw_file(p, header, b"\x00" * 8 + data)
    assert_one_line_error(run_cli("infer", p), "bytes 0-8 of the data section")


@pytest.mark.parametrize("labels", [np.arange(3), np.zeros((4, 2), np.int64),
                                    np.array(2), np.linspace(0, 1, 4)])
def test_shipped_sample_labels_that_do_not_match_the_inputs(rng, tmp_path, labels):
    from cupyprune.format import keys
    from tiny_models import C_IN, S
    t = tiny_tensors(rng)
    t[keys.SAMPLE_INPUT_PREFIX + "image"] = rng.standard_normal((4, C_IN, S, S)).astype(
        np.float32)
    t[keys.SAMPLE_LABELS] = labels
    p = tmp_path / "s.safetensors"
    write_tiny(p, rng, tensors=t)
    assert_one_line_error(run_cli("infer", p, "--device", "cpu"), "the file's sample labels",
                          "expected (4,) integers")


def test_infer_refuses_a_graph_of_two_outputs(rng, tmp_path):
    g = tiny_graph()
    g["outputs"] = ["logits", "t5"]
    p = tmp_path / "two.safetensors"
    write_tiny(p, rng, graph=g)
    out = tmp_path / "y.npy"
    assert_one_line_error(run_cli("infer", p, "--device", "cpu", "--output", out),
                          "the graph has 2 outputs (logits, t5)")
    assert not out.exists()


@pytest.mark.parametrize("batch", [2 ** 63 - 1, 10 ** 20])
def test_infer_batch_beyond_numpy(tmp_path, model_path, batch):
    assert_one_line_error(run_cli("infer", model_path, "--device", "cpu", "--batch", batch),
                          "does not fit in memory")


@pytest.mark.parametrize("role, value, fragment", [
    ("bn.running_var", np.ones(3, np.float32), "running_var has shape (3,), expected (8,)"),
    ("bn.weight", np.ones(16, np.float32), "weight has shape (16,), expected (8,)"),
    ("bn.bias", np.ones((8, 1), np.float32), "bias has shape (8, 1), expected (8,)"),
    ("bn.running_var", -np.ones(8, np.float32), "running_var + eps is -0.99999 for some channel"),
])
def test_batch_norm_params_checked_at_load(rng, tmp_path, role, value, fragment):
    t = tiny_tensors(rng)
    t[role] = value
    assert_one_line_error(infer_tiny(rng, tmp_path, t), "node 'bn' (batch_norm)", fragment)


@pytest.mark.parametrize("eps", ["x", -1.0, True])
def test_batch_norm_eps_checked_at_load(rng, tmp_path, eps):
    g = tiny_graph()
    g["nodes"][1]["attrs"]["eps"] = eps
    p = tmp_path / "e.safetensors"
    write_tiny(p, rng, graph=g)
    assert_one_line_error(run_cli("infer", p),
                          f"attribute 'eps' is {eps!r}, expected a finite number >= 0")


def test_empty_conv_weight(rng, tmp_path):
    t = tiny_tensors(rng)
    t["c.weight"] = np.zeros((0, 3, 3, 3), np.float32)
    del t["c.weight.mask"]
    assert_one_line_error(infer_tiny(rng, tmp_path, t), "node 'c' (conv2d)", "not empty")


def test_residual_of_another_shape(rng, tmp_path):
    """An add of the classifier's output and a value of as many elements but another shape:
    folded into the linear's epilogue, it must fail as the add would."""
    g = tiny_graph()
    g["nodes"][-1]["outputs"] = ["y"]
    g["nodes"] += [{"name": "sum", "op": "add", "inputs": ["y", "other"], "outputs": ["logits"]}]
    g["inputs"] = ["image", "other"]
    spec = tiny_spec() + [{"name": "other", "shape": [None, None], "dtype": "float32",
                           "kind": "features"}]
    p = tmp_path / "r.safetensors"
    write_tiny(p, rng, graph=g, spec=spec)
    import cupyprune
    from tiny_models import C_IN, S
    model = cupyprune.load(p, device="cpu")
    assert model.residual == {"fc": "other"}
    x = rng.standard_normal((4, C_IN, S, S)).astype(np.float32)
    other = rng.standard_normal((4, 5)).astype(np.float32)
    assert rel_err(model(x, other=other), torch_reference(model.file.tensors, x) + other) <= 1e-5
    with pytest.raises(cupyprune.InputError, match=r"cannot add (its output of )?shapes? "
                                                   r"\(4, 5\) and (a residual of shape )?"
                                                   r"\(2, 10\)"):
        model(x, other=rng.standard_normal((2, 10)).astype(np.float32))


def _cli_process(*args, stdout):
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-c", "from cupyprune.cli.main import cli; cli()",
                           *map(str, args)], stdout=stdout, stderr=subprocess.PIPE, text=True,
                          timeout=120)


def test_infer_into_a_closed_pipe_still_writes_its_output(tmp_path, model_path):
    """`cupyprune infer ... --output y.npy | head -1`: the output is saved before any printing,
    and the closed pipe ends the run quietly (exit 141, as SIGPIPE would)."""
    import subprocess
    import sys
    out = tmp_path / "y.npy"
    gone = subprocess.Popen([sys.executable, "-c", "pass"], stdin=subprocess.PIPE)
    gone.wait(timeout=60)                          # a reader that has already left
    proc = _cli_process("infer", model_path, "--device", "cpu", "--output", out,
                        stdout=gone.stdin)
    gone.stdin.close()
    assert (proc.returncode, proc.stderr) == (141, "")
    assert np.load(out).shape == (4, 5)


def test_stdout_on_a_full_disk_is_one_line(model_path):
    with open("/dev/full", "w") as full:
        proc = _cli_process("inspect", model_path, stdout=full)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == ["error: cannot write the output: No space left on device"]


@pytest.mark.parametrize("node, attrs, fragment", [
    (5, {"start_dim": "x"}, "attribute 'start_dim' is 'x', expected an integer"),
    (5, {"start_dim": 9}, "attribute 'start_dim' is 9, expected an integer >= -8 and <= 7"),
    (5, {"start_dim": 2, "end": 3}, "unknown attribute 'end'"),
])
def test_flatten_of_another_range(rng, tmp_path, node, attrs, fragment):
    g = tiny_graph()
    g["nodes"][node]["attrs"] = attrs
    p = tmp_path / "f.safetensors"
    write_tiny(p, rng, graph=g)
    assert_one_line_error(run_cli("infer", p), "node 'f' (flatten)", fragment)


@pytest.mark.parametrize("fused", [True, False])
def test_gelu_of_an_unknown_form(rng, tmp_path, fused):
    """Folded into the conv's epilogue or run on its own, a GELU's form is checked."""
    g = tiny_graph()
    g["nodes"][2].update(op="gelu", attrs={"approximate": "bogus"})
    if not fused:                           # the pool before it: nothing to fold into
        g["nodes"][2:4] = [dict(g["nodes"][3], inputs=["t1"], outputs=["t2"]),
                           dict(g["nodes"][2], inputs=["t2"], outputs=["t3"])]
    p = tmp_path / "g.safetensors"
    write_tiny(p, rng, graph=g)
    assert_one_line_error(run_cli("infer", p), "node 'r' (gelu)",
                          "attribute 'approximate' is 'bogus', expected one of 'none', 'tanh'")


@pytest.mark.parametrize("labels", [[1, 2, 3, 4, 5], ["a", None, "c", "d", "e"]])
def test_labels_that_are_not_names(rng, tmp_path, labels):
    p = tmp_path / "l.safetensors"
    write_tiny(p, rng, labels=labels)
    assert_one_line_error(run_cli("infer", p), "'labels' must be a JSON list of strings")


@pytest.mark.parametrize("key", ["nothing.weight", "bn.weight"])
def test_pruning_declared_for_a_weight_no_layer_prunes(rng, tmp_path, key):
    result = infer_tiny(rng, tmp_path, tiny_tensors(rng), pruning={key: {"pattern": "group"}})
    assert_one_line_error(result, f"'pruning' declares {key!r}",
                          "not the weight of a conv or linear layer")
