"""What the loader refuses beyond the container: masks on tensors the runtime never prunes,
sample labels outside the model's classes, names that would break the one-line error, an
--output that is the model file itself."""
import numpy as np
import pytest

from test_bad_input import assert_one_line_error, run_cli
from tiny_models import tiny_tensors, write_tiny


@pytest.mark.parametrize("param", ["c.bias", "bn.weight", "bn.running_var", "fc.bias"])
def test_mask_on_a_tensor_that_is_not_a_weight(rng, tmp_path, param):
    """docs/FORMAT.md: the runtime uses param * mask; it does so for conv and linear weights
    only, so a mask anywhere else would be silently ignored."""
    t = tiny_tensors(rng)
    t[param + ".mask"] = np.ones_like(t[param])
    p = tmp_path / "m.safetensors"
    write_tiny(p, rng, tensors=t)
    assert_one_line_error(run_cli("infer", p), f"mask '{param}.mask'",
                          "not the weight of a conv2d or linear node")


def test_mask_on_the_linear_weight_is_accepted(rng, tmp_path):
    t = tiny_tensors(rng)
    t["fc.weight.mask"] = (rng.random(t["fc.weight"].shape) < 0.5).astype(np.float32)
    p = tmp_path / "m.safetensors"
    write_tiny(p, rng, tensors=t)
    result = run_cli("infer", p, "--device", "cpu", "--repeat", 1)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("link", [False, True])
def test_output_that_is_the_model_file(rng, tmp_path, link):
    """A model file named *.npy given as --output (or a hard link to it) would be replaced:
    the files are compared, not their names."""
    model = tmp_path / "model.npy"
    write_tiny(model, rng)
    before = model.read_bytes()
    out = model
    if link:
        out = tmp_path / "other.npy"
        out.hardlink_to(model)
    assert_one_line_error(run_cli("infer", model, "--output", out, "--device", "cpu"),
                          f"--output {out} is the model file")
    assert model.read_bytes() == before


def test_npz_member_that_is_not_an_array(rng, tmp_path):
    import zipfile
    model = tmp_path / "m.safetensors"
    write_tiny(model, rng)
    x = tmp_path / "x.npz"
    with zipfile.ZipFile(x, "w") as z:
        z.writestr("image", b"not an npy array")
    assert_one_line_error(run_cli("infer", model, "--input", x, "--device", "cpu"),
                          "member 'image' is not a .npy array")


@pytest.mark.parametrize("labels, fragment", [
    ([0, 1, 5, 2], "sample label 5 is outside [0, 5)"),
    ([0, -1, 2, 3], "sample label -1 is outside [0, 5)"),
    ([0, 1, 2], "expected (4,) integers"),
])
def test_sample_labels_outside_the_classes(rng, tmp_path, labels, fragment):
    from tiny_models import C_IN, S
    t = tiny_tensors(rng)
    t["cupyprune.sample.inputs.image"] = rng.standard_normal((4, C_IN, S, S)).astype(np.float32)
    t["cupyprune.sample.labels"] = np.array(labels, dtype=np.int64)
    p = tmp_path / "s.safetensors"
    write_tiny(p, rng, tensors=t)
    assert_one_line_error(run_cli("inspect", p), fragment)
    import cupyprune
    with pytest.raises(cupyprune.ModelFileError):
        cupyprune.load(p, device="cpu")


@pytest.mark.parametrize("missing", ["fc.bias", "fc\nbias"])
def test_names_with_a_newline_stay_on_one_line(rng, tmp_path, missing):
    """A node whose param is missing from the file: the error names the node and the tensor,
    quoted, on one line."""
    from tiny_models import tiny_graph
    t = tiny_tensors(rng)
    del t["fc.bias"]
    g = tiny_graph()
    g["nodes"][-1]["params"]["bias"] = missing
    g["nodes"][-1]["name"] = "fc\nsecond line"
    p = tmp_path / "n.safetensors"
    write_tiny(p, rng, tensors=t, graph=g)
    assert_one_line_error(run_cli("infer", p, "--device", "cpu"), "'fc\\nsecond line'",
                          f"tensor {missing!r}")
