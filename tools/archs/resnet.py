"""ResNet-18 with torchvision's module layout and state-dict keys.

'imagenet' is torchvision's model exactly: a 7x7 stride-2 stem conv, then a 3x3 stride-2
max-pool. 'cifar' is the usual CIFAR ResNet-18: the stem conv1 is 3x3, stride 1, padding 1, no
bias, and there is no max-pool (an nn.Identity, which has no state), so a 32x32 image reaches
layer4 at 4x4; every key and every other shape is torchvision's.
"""
import torch
from torch import nn


def conv3x3(c_in, c_out, stride=1):
    return nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = conv3x3(c_in, c_out, stride)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(c_out, c_out)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(c_out))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(nn.Module):
    def __init__(self, num_classes, variant):
        super().__init__()
        imagenet = variant == "imagenet"
        self.conv1 = (nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
                      if imagenet else conv3x3(3, 64))
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = (nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
                        if imagenet else nn.Identity())
        self.layer1 = self._layer(64, 64, 1)
        self.layer2 = self._layer(64, 128, 2)
        self.layer3 = self._layer(128, 256, 2)
        self.layer4 = self._layer(256, 512, 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)

    @staticmethod
    def _layer(c_in, c_out, stride):
        return nn.Sequential(BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1))

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))    # (N, 64, S/4, S/4) or (N, 64, S, S)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))   # -> (N, 512, h, w)
        x = torch.flatten(self.avgpool(x), 1)                     # -> (N, 512)
        return self.fc(x)                                         # -> (N, num_classes)


def resnet18(num_classes=1000, variant="imagenet"):
    return ResNet18(num_classes, variant)
