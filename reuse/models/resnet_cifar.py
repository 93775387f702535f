"""CIFAR ResNets of He et al. (2016, section 4.2): ResNet-20/32/44/56/110.

Depth 6n+2: a 3x3 conv with 16 filters, three stages of n basic blocks with 16/32/64 filters (the
first block of stages 2 and 3 halves the resolution), global average pooling and a linear layer.
Shortcuts follow the paper's option A (identity; when shapes change, stride-2 subsampling and zero
channels); option B (1x1 conv + BatchNorm projection) is available as ``shortcut="B"``.
Parameter counts match the paper: 0.27M / 0.46M / 0.66M / 0.85M / 1.7M.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from reuse.models.registry import register_model


class PadShortcut(nn.Module):
    """Option A: subsample by ``stride`` and append zero channels."""

    def __init__(self, stride: int, extra_channels: int):
        super().__init__()
        self.stride, self.extra = stride, extra_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, shortcut: str):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        if stride == 1 and c_in == c_out:
            self.shortcut: nn.Module = nn.Identity()
        elif shortcut == "A":
            self.shortcut = PadShortcut(stride, c_out - c_in)
        else:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, depth: int, num_classes: int, in_channels: int = 3, width: int = 16, shortcut: str = "A"):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' or 'B', got {shortcut!r}")
        n = (depth - 2) // 6
        self.conv = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        blocks, c = [], width
        for stage, c_out in enumerate((width, 2 * width, 4 * width)):
            for i in range(n):
                blocks.append(BasicBlock(c, c_out, 2 if (stage > 0 and i == 0) else 1, shortcut))
                c = c_out
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(c, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out" if isinstance(m, nn.Conv2d) else "fan_in",
                                        nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(x)))
        x = self.blocks(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def _cifar_resnet(depth: int, input_shape, num_classes: int, width: int, shortcut: str) -> CifarResNet:
    return CifarResNet(depth, num_classes, in_channels=input_shape[0], width=width, shortcut=shortcut)


# One builder per depth, each registered under a literal name (reuse.models.catalog reads the names).
@register_model("resnet20")
def resnet20(input_shape, num_classes, width=16, shortcut="A"):
    """CIFAR ResNet-20 (He et al. 2016)."""
    return _cifar_resnet(20, input_shape, num_classes, width, shortcut)


@register_model("resnet32")
def resnet32(input_shape, num_classes, width=16, shortcut="A"):
    """CIFAR ResNet-32 (He et al. 2016)."""
    return _cifar_resnet(32, input_shape, num_classes, width, shortcut)


@register_model("resnet44")
def resnet44(input_shape, num_classes, width=16, shortcut="A"):
    """CIFAR ResNet-44 (He et al. 2016)."""
    return _cifar_resnet(44, input_shape, num_classes, width, shortcut)


@register_model("resnet56")
def resnet56(input_shape, num_classes, width=16, shortcut="A"):
    """CIFAR ResNet-56 (He et al. 2016)."""
    return _cifar_resnet(56, input_shape, num_classes, width, shortcut)


@register_model("resnet110")
def resnet110(input_shape, num_classes, width=16, shortcut="A"):
    """CIFAR ResNet-110 (He et al. 2016)."""
    return _cifar_resnet(110, input_shape, num_classes, width, shortcut)
