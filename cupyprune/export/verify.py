"""The exporter checks its own work: the written file, run by the NumPy backend on the example
inputs, against the module's own output."""
import numpy as np

from .torchlib import ExportError, import_torch

TOLERANCE = 1e-4          # largest |ours - torch| / max|torch| accepted by default


def reference_output(module, named_inputs):
    """The module's first output on the example inputs, float64 NumPy."""
    torch = import_torch()
    with torch.no_grad():
        out = module(**named_inputs)
    for attr in ("logits", "last_hidden_state"):
        if hasattr(out, attr):
            out = getattr(out, attr)
            break
    while isinstance(out, (tuple, list)):
        out = out[0]
    return out.detach().double().cpu().numpy()


def relative_error(path, named_inputs, expected):
    """max |file's output - expected| / max |expected|, running the file on the CPU."""
    from ..engine import load
    model = load(path, device="cpu")
    got = model(**{k: v.detach().cpu().numpy() for k, v in named_inputs.items()})
    got = np.asarray(got, np.float64)
    if got.shape != expected.shape:
        raise ExportError(f"the exported file gives shape {got.shape}, the module "
                          f"{expected.shape}")
    return float(np.abs(got - expected).max() / max(np.abs(expected).max(), 1e-30))
