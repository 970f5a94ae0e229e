"""docs/FORMAT.md's tensor dtypes: masks stored as F32, F16, U8 or BOOL and parameters as F32, F16
or F64 all run, and equal torch.nn.functional's float64 output of the same values (the runtime
computes in fp32 whatever the stored dtype)."""
import numpy as np
import pytest

import cupyprune
from conftest import devices, rel_err
from tiny_models import tiny_tensors, torch_reference, write_tiny


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("param_dtype", ["float32", "float16", "float64"])
@pytest.mark.parametrize("mask_dtype", ["float32", "float16", "uint8", "bool"])
def test_stored_dtypes(rng, tmp_path, device, mask_dtype, param_dtype):
    t = tiny_tensors(rng)
    stored = {k: v.astype(mask_dtype if k.endswith(".mask") else param_dtype)
              for k, v in t.items()}
    path = tmp_path / "m.safetensors"
    write_tiny(path, rng, tensors=stored)
    model = cupyprune.load(path, device=device)
    (conv,) = [s for s in model.layers() if s.node.name == "c"]
    assert conv.op.describe()["pattern"] == "group"
    x = rng.standard_normal((2, 3, 9, 9))
    ref = torch_reference({k: v.astype(np.float64) for k, v in stored.items()}, x)
    out = model(model.xp.asarray(x.astype(np.float32)))
    assert out.dtype == np.float32
    assert rel_err(out, ref) <= 1e-5
