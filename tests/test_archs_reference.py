"""tools/archs (the PyTorch side of every CNN parity test, and the exporter's source of graph
structure) against torchvision's architectures written out with torch.nn.functional
(reference_cnn.py): same keys, same shapes, same outputs on fresh random weights and images."""
import pytest
import torch

import reference_cnn
from conftest import rel_err
from test_parity_cnn import random_model

CASES = [("vgg16", "cifar", 32), ("vgg16_bn", "cifar", 32), ("resnet18", "cifar", 32),
         ("resnet18", "imagenet", 64), ("vgg16_bn", "imagenet", 64)]


def _reference(arch, sd, x, variant):
    if arch == "resnet18":
        return reference_cnn.resnet18(sd, x, variant)
    return reference_cnn.vgg16(sd, x, arch == "vgg16_bn", variant)


@pytest.mark.parametrize("arch,variant,size", CASES)
def test_archs_equal_torchvision_functional(rng, arch, variant, size):     # rng seeds torch
    classes = 10 if variant == "cifar" else 1000
    model, _ = random_model(arch, variant, None)       # He-scaled, random batch-norm statistics
    sd = model.state_dict()
    x = torch.randn(3, 3, size, size, dtype=torch.float64)
    ref, used = _reference(arch, {k: v.double() for k, v in sd.items()}, x, variant)
    assert used == set(sd), (sorted(set(sd) - used)[:3], sorted(used - set(sd))[:3])
    with torch.no_grad():
        out = model.double()(x)
    assert ref.shape == out.shape == (3, classes)
    assert float((ref.max(0).values - ref.min(0).values).max()) > 1e-2 * float(ref.abs().max())
    assert rel_err(out.numpy(), ref.numpy()) <= 1e-12


def test_reference_sees_a_wrong_stride():
    """The comparison can fail: the same weights with layer2's first stride set to 1."""
    model = random_model("resnet18", "cifar", None)[0].double()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    model.layer2[0].conv1.stride = (1, 1)
    model.layer2[0].downsample[0].stride = (1, 1)
    ref, _ = reference_cnn.resnet18(model.state_dict(), x, "cifar")
    assert rel_err(model(x).detach().numpy(), ref.numpy()) > 1e-3
