"""PyTorch for the exporter, imported only when an export runs (the runtime never needs it).

torchvision's model code is pure Python, but importing torchvision also loads its C++ ops, which
fail to load beside a PyTorch build they were not compiled for (a CUDA torchvision wheel next to
a CPU torch). transformers imports torchvision whenever it is installed, so that failure would
break Hugging Face exports too. Where the ops are missing, their two schemas are declared first:
the model code then imports and runs (detection's NMS, the only user of them, would not).
"""
from ..errors import CupyPruneError

INSTALL_HINT = "cupyprune export needs PyTorch: pip install 'cupyprune[export]'"
_TORCHVISION_OPS = ("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
                    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
_declared = []


class ExportError(CupyPruneError):
    """The module, checkpoint or folder cannot be exported as it is."""


def import_torch():
    """torch, with torchvision's C++ op schemas declared where its library could not load them."""
    try:
        import torch
    except ImportError:
        raise ExportError(INSTALL_HINT) from None
    if not _declared:
        if not _torchvision_library_loads(torch):
            _declare_torchvision_ops(torch)
        _declared.append(True)
    return torch


def _torchvision_library_loads(torch):
    """True where torchvision is absent or its C++ library loads into this torch."""
    import glob
    import importlib.util
    import os
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return True
    for lib in glob.glob(os.path.join(spec.submodule_search_locations[0], "_C*.so")):
        try:
            torch.ops.load_library(lib)
            return True
        except (OSError, RuntimeError):
            return False
    return False


def _declare_torchvision_ops(torch):
    lib = torch.library.Library("torchvision", "DEF")
    for schema in _TORCHVISION_OPS:
        lib.define(schema)
    _declared.append(lib)                      # the library object must stay alive
