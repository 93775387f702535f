"""Build a model by name: every model module imported, so :data:`MODELS` holds every builder."""

from __future__ import annotations

import inspect

import torch.nn as nn

# Imported in the order of catalog.MODULES, so MODELS lists the architectures in the catalog's order.
from reuse.models import mlp, cnn1d, resnet_cifar, resnet_imagenet, text  # noqa: F401,I001  (they register)
from reuse.errors import ConfigError
from reuse.models.catalog import DATASET_PARAMS, TREE_ARGS, check
from reuse.models.registry import MODELS, register_model


def arguments(arch: str) -> tuple[str, ...]:
    """The argument names of a registered builder (its parameters but the dataset's)."""
    return tuple(p for p in inspect.signature(MODELS[arch]).parameters if p not in DATASET_PARAMS)


def build_model(arch: str, input_shape, num_classes: int, **args) -> nn.Module:
    check(arch, args, {**{name: arguments(name) for name in MODELS}, **TREE_ARGS})  # the messages of check_arch
    if arch in TREE_ARGS:
        raise ConfigError(f"model arch '{arch}' is gradient-boosted trees (reuse.models.gbdt): trained by LightGBM "
                          "as a baseline, never built as a network")
    return MODELS[arch](tuple(input_shape), num_classes, **args)


__all__ = ["MODELS", "arguments", "build_model", "register_model"]
