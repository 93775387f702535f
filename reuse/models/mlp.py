"""Multi-layer perceptrons on flattened inputs."""

from __future__ import annotations

import math

import torch.nn as nn

from reuse.models.registry import register_model


class MLP(nn.Sequential):
    def __init__(self, in_features: int, hidden: list[int], num_classes: int, dropout: float = 0.0,
                 input_dropout: float = 0.0):
        layers: list[nn.Module] = [nn.Flatten()]
        if input_dropout:
            layers.append(nn.Dropout(input_dropout))
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, num_classes))
        super().__init__(*layers)


@register_model("mlp")
def mlp(input_shape, num_classes, hidden=(256, 256), dropout=0.0, input_dropout=0.0):
    """ReLU MLP with the given hidden widths; optional dropout after each hidden layer and on the input."""
    return MLP(math.prod(input_shape), list(hidden), num_classes, dropout, input_dropout)


@register_model("hinton_mlp")
def hinton_mlp(input_shape, num_classes, hidden=(1200, 1200), dropout=0.5, input_dropout=0.2):
    """Hinton et al. (2015)'s MNIST teacher: 784-1200-1200-10 ReLU with dropout (0.2 on inputs,
    0.5 on hidden units, as in Srivastava et al. 2014). The student is ``mlp`` with hidden [800, 800]."""
    return MLP(math.prod(input_shape), list(hidden), num_classes, dropout, input_dropout)
