"""Plain torch.nn reference modules whose state-dict keys and shapes are exactly torchvision's.

They are the exporter's source of truth for a checkpoint's expected keys and for the graph's
structure and layer attributes; tests use them as the PyTorch reference. Build them on the meta
device (`with torch.device("meta"): build(...)`) when only keys, shapes and attributes are needed.
"""
from .resnet import resnet18
from .vgg import vgg16, vgg16_bn

ARCHS = {"vgg16": vgg16, "vgg16_bn": vgg16_bn, "resnet18": resnet18}
VARIANTS = ("imagenet", "cifar")


def build(arch, num_classes, variant):
    """arch name -> a fresh torch.nn.Module (default PyTorch init)."""
    return ARCHS[arch](num_classes, variant)


__all__ = ["ARCHS", "VARIANTS", "build", "resnet18", "vgg16", "vgg16_bn"]
