"""Torchvision's VGG-16(-BN) and ResNet-18 written out with torch.nn.functional, reading a state
dict by torchvision's keys: the independent reference for tools/archs (the parity tests compare
the runtime with tools/archs, and the exporter reads its graph from there too, so a wrong stride
or block order in tools/archs would otherwise pass on both sides).

Written from torchvision's model definitions (torchvision cannot be imported beside the CPU
torch build here). 'cifar' is the variant docs/BENCHMARKS.md describes: ResNet-18 with a 3x3
stride-1 stem and no max-pool; VGG with a (1, 1) average pool and a 512-512-N classifier.
Every function records the keys it read in `used`, so a test can check that the state dict holds
exactly torchvision's keys.
"""
import torch.nn.functional as F

VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class StateReader:
    """sd[key], remembering every key read."""

    def __init__(self, sd):
        self.sd, self.used = sd, set()

    def __call__(self, key):
        self.used.add(key)
        return self.sd[key]

    def bn(self, x, prefix):
        """BatchNorm2d in eval mode (its counter is state too, read by nothing)."""
        self.used.add(f"{prefix}.num_batches_tracked")
        return F.batch_norm(x, self(f"{prefix}.running_mean"), self(f"{prefix}.running_var"),
                            self(f"{prefix}.weight"), self(f"{prefix}.bias"), training=False,
                            eps=1e-5)


def vgg16(sd, x, batch_norm, variant):
    """(N, 3, S, S) -> logits. features.i numbering: conv[, bn], relu per layer; pool 'M'."""
    p, i = StateReader(sd), 0
    for v in VGG16:
        if v == "M":
            x, i = F.max_pool2d(x, 2, 2), i + 1
            continue
        x = F.conv2d(x, p(f"features.{i}.weight"), p(f"features.{i}.bias"), padding=1)
        if batch_norm:
            x = p.bn(x, f"features.{i + 1}")
        x, i = F.relu(x), i + (3 if batch_norm else 2)
    x = F.adaptive_avg_pool2d(x, (7, 7) if variant == "imagenet" else (1, 1)).flatten(1)
    for j in (0, 3, 6):                                   # Linear, ReLU, Dropout (x2), Linear
        x = F.linear(x, p(f"classifier.{j}.weight"), p(f"classifier.{j}.bias"))
        x = F.relu(x) if j < 6 else x
    return x, p.used


def _basic_block(p, x, prefix, stride):
    out = F.relu(p.bn(F.conv2d(x, p(f"{prefix}.conv1.weight"), stride=stride, padding=1),
                      f"{prefix}.bn1"))
    out = p.bn(F.conv2d(out, p(f"{prefix}.conv2.weight"), padding=1), f"{prefix}.bn2")
    if f"{prefix}.downsample.0.weight" in p.sd:
        x = p.bn(F.conv2d(x, p(f"{prefix}.downsample.0.weight"), stride=stride),
                 f"{prefix}.downsample.1")
    return F.relu(out + x)


def resnet18(sd, x, variant):
    """(N, 3, S, S) -> logits."""
    p = StateReader(sd)
    if variant == "imagenet":
        x = F.relu(p.bn(F.conv2d(x, p("conv1.weight"), stride=2, padding=3), "bn1"))
        x = F.max_pool2d(x, 3, 2, 1)
    else:
        x = F.relu(p.bn(F.conv2d(x, p("conv1.weight"), padding=1), "bn1"))
    for layer, stride in ((1, 1), (2, 2), (3, 2), (4, 2)):
        x = _basic_block(p, x, f"layer{layer}.0", stride)
        x = _basic_block(p, x, f"layer{layer}.1", 1)
    x = F.adaptive_avg_pool2d(x, 1).flatten(1)
    return F.linear(x, p("fc.weight"), p("fc.bias")), p.used
