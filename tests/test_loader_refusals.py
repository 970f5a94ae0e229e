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
