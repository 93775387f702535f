"""A small 1-D CNN for MNIST-1D (after the convolutional baseline of Greydanus 2020)."""

from __future__ import annotations

import torch.nn as nn

from reuse.models.registry import register_model


@register_model("cnn1d")
def cnn1d(input_shape, num_classes, channels=32, layers=3, kernel_size=5):
    """``layers`` stride-2 Conv1d+ReLU blocks of ``channels`` channels, then a linear classifier.

    Input (B, C_in, L); with L=40 (MNIST-1D) and 3 layers the feature map is (channels, 5).
    """
    c_in, length = input_shape[0], input_shape[-1]
    blocks: list[nn.Module] = []
    for i in range(layers):
        blocks += [nn.Conv1d(c_in if i == 0 else channels, channels, kernel_size, stride=2,
                             padding=kernel_size // 2), nn.ReLU(inplace=True)]
        length = (length + 2 * (kernel_size // 2) - kernel_size) // 2 + 1
    return nn.Sequential(*blocks, nn.Flatten(), nn.Linear(channels * length, num_classes))
