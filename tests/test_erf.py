"""The CPU's erf and erfc (NumPy, no SciPy) against math.erf / math.erfc in float64 and float32
over a wide range, the GELU built on them against float64 and torch.nn.functional.gelu, and the
csr path's one-line hint without SciPy."""
import math
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from conftest import rel_err
from cupyprune.cli.main import cli
from cupyprune.ops.epilogue import _numpy_activation
from cupyprune.ops.erf import erf, erfc
from tiny_models import MLP_IN, mlp_graph, mlp_spec, mlp_tensors, torch_mlp, write_tiny


def _points(rng):
    """Both signs over [1e-40, 30], every range boundary, and random draws."""
    tiny = np.logspace(-40, np.log10(30), 4001)
    edges = np.array([0.0, 1.0, np.nextafter(1.0, 2), np.nextafter(1.0, 0), 6.0, 8.0, 26.0])
    mags = np.concatenate([tiny, edges, np.abs(rng.standard_normal(20000)) * 4])
    return np.concatenate([mags, -mags])


def test_erf_float64_against_math_erf(rng):
    x = _points(rng)
    ref = np.array([math.erf(v) for v in x])
    got = erf(x)
    assert got.dtype == np.float64 and got.shape == x.shape
    scale = np.maximum(np.abs(ref), np.finfo(np.float64).tiny)
    assert (np.abs(got - ref) / scale).max() <= 4 * np.finfo(np.float64).eps


def test_erf_float32_is_math_erf_rounded_to_float32(rng):
    x = _points(rng).astype(np.float32)
    ref = np.array([math.erf(float(v)) for v in x]).astype(np.float32)
    got = erf(x)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, ref)


def test_erf_special_values():
    got = erf(np.array([np.inf, -np.inf, np.nan, 0.0, -0.0]))
    assert got[0] == 1.0 and got[1] == -1.0 and np.isnan(got[2])
    assert got[3] == 0.0 and np.signbit(got[4])


def test_erfc_float64_against_math_erfc_in_its_tail(rng):
    x = _points(rng)
    ref = np.array([math.erfc(v) for v in x])
    got = erfc(x)
    ok = ref > 1e-300                                   # past 26.5 math.erfc underflows too
    assert (np.abs(got[ok] - ref[ok]) / ref[ok]).max() <= 1e-13


@pytest.mark.parametrize("scale", [1.0, 10.0])
def test_cpu_gelu_is_float32_rounding_of_the_float64_gelu(rng, scale):
    """The epilogue's GELU (what a linear or conv with a fused GELU runs on the CPU) and the
    gelu op, against x Phi(x) in float64 (math.erfc) and against torch."""
    x = (scale * rng.standard_normal(20000)).astype(np.float32)
    exact = np.array([0.5 * v * math.erfc(-v / math.sqrt(2)) for v in x.astype(np.float64)])
    got = _numpy_activation("gelu", x.copy())
    assert got.dtype == np.float32
    ulps = np.abs(got - exact) / np.spacing(np.abs(exact.astype(np.float32)))
    assert ulps.max() <= 0.5 + 1e-6                     # correctly rounded to float32
    # torch's float32 1 + erf loses digits in the negative tail: an absolute tolerance
    np.testing.assert_allclose(got, F.gelu(torch.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-6)


def test_gelu_model_on_the_cpu_equals_torch(rng, tmp_path):
    import cupyprune
    from cupyprune.format import write_model_file
    t = mlp_tensors(rng)
    write_model_file(str(tmp_path / "m.safetensors"), t, mlp_graph(), mlp_spec())
    x = rng.standard_normal((7, MLP_IN)).astype(np.float32)
    assert rel_err(cupyprune.load(tmp_path / "m.safetensors", device="cpu")(x),
                   torch_mlp(t, x)) <= 1e-5


def test_csr_path_without_scipy_is_a_one_line_hint(rng, tmp_path, monkeypatch):
    write_tiny(tmp_path / "m.safetensors", rng)
    for name in [m for m in sys.modules if m == "scipy" or m.startswith("scipy.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "scipy", None)          # import scipy raises ImportError
    result = CliRunner().invoke(cli, ["infer", str(tmp_path / "m.safetensors"), "--device",
                                      "cpu", "--path", "csr"])
    assert result.exit_code == 2, result.output
    assert result.stderr == "error: the csr path needs SciPy: pip install 'cupyprune[csr]'\n"
