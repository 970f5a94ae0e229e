"""Export any PyTorch module to a cupyprune model file (needs PyTorch; the runtime does not).

    from cupyprune.export import export_module
    export_module(model, torch.randn(1, 3, 224, 224), "model.safetensors")

The module is traced with torch.export (trace.py), its ATen calls become the runtime's graph
(lower.py, aten_ops.py), masks come from torch.nn.utils.prune re-parametrisations or are left to
the zeros of the weights, and the written file is run with NumPy against the module before it is
kept (verify.py).
"""
from .torchlib import ExportError, INSTALL_HINT

__all__ = ["export_module", "prune_module", "ExportError", "INSTALL_HINT"]


def prune_module(module, pattern, keep=0.5, **options):
    """Prune module in place (torch.nn.utils.prune masks; prune.py); returns {key: mask}."""
    from .prune import prune_module as prune
    return prune(module, pattern, keep, **options)


def export_module(module, example_inputs, out, labels=None, pattern=None, verify=True,
                  tolerance=None, description="", exporter="cupyprune.export",
                  max_length=None, normalization=None, report=None):
    """Trace `module` on `example_inputs` (a tensor, a tuple of tensors, or a dict of keyword
    tensors) and write the model file `out`. pattern: a pruning pattern declared for every
    masked weight (checked at load), else each layer's is inferred. Returns the relative error
    of the verification (None with verify=False); above `tolerance` (1e-4) nothing is left at
    `out` and ExportError is raised. report(text) receives progress lines."""
    from .write import export_to_file
    return export_to_file(module, example_inputs, out, labels=labels, pattern=pattern,
                          verify=verify, tolerance=tolerance, description=description,
                          exporter=exporter, max_length=max_length,
                          normalization=normalization, report=report or (lambda text: None))
