"""VGG-16 and VGG-16-BN with torchvision's module layout and state-dict keys.

'imagenet' is torchvision's model exactly: AdaptiveAvgPool2d((7, 7)), then a 25088-4096-4096-N
classifier with ReLU and Dropout. 'cifar' keeps the same `features` (13 convs, 5 max-pools; a
32x32 image leaves them 1x1) and uses the usual CIFAR head: AdaptiveAvgPool2d((1, 1)), then
Linear(512, 512)-ReLU-Dropout-Linear(512, 512)-ReLU-Dropout-Linear(512, N), so that its keys are
still classifier.0 / .3 / .6 as in torchvision.
"""
import torch
from torch import nn

# channels of each 3x3 conv, "M" a 2x2 max-pool (torchvision's configuration "D")
CFG_16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def make_features(batch_norm):
    layers, channels = [], 3
    for v in CFG_16:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        layers.append(nn.Conv2d(channels, v, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(v))
        layers.append(nn.ReLU(inplace=True))
        channels = v
    return nn.Sequential(*layers)


def make_head(num_classes, variant):
    """-> (avgpool, classifier) of the variant."""
    pool, features, hidden = {"imagenet": ((7, 7), 512 * 7 * 7, 4096),
                              "cifar": ((1, 1), 512, 512)}[variant]
    classifier = nn.Sequential(
        nn.Linear(features, hidden), nn.ReLU(inplace=True), nn.Dropout(),
        nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(),
        nn.Linear(hidden, num_classes))
    return nn.AdaptiveAvgPool2d(pool), classifier


class VGG(nn.Module):
    def __init__(self, batch_norm, num_classes, variant):
        super().__init__()
        self.features = make_features(batch_norm)
        self.avgpool, self.classifier = make_head(num_classes, variant)

    def forward(self, x):
        x = self.features(x)                      # (N, 3, S, S) -> (N, 512, S/32, S/32)
        x = self.avgpool(x)                       # -> (N, 512, 7, 7) or (N, 512, 1, 1)
        x = torch.flatten(x, 1)                   # -> (N, 25088) or (N, 512)
        return self.classifier(x)                 # -> (N, num_classes)


def vgg16(num_classes=1000, variant="imagenet"):
    return VGG(False, num_classes, variant)


def vgg16_bn(num_classes=1000, variant="imagenet"):
    return VGG(True, num_classes, variant)
