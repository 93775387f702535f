"""Models by name: a registry of builders ``fn(input_shape, num_classes, **args) -> nn.Module``.

The config names a model's architecture (``arch``) and its keyword arguments (``args``); every
builder takes the dataset's input shape and class count so the same name works on any dataset whose
inputs it can consume.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Callable

import torch.nn as nn

from reuse.errors import ConfigError

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str):
    def deco(fn):
        if name in MODELS:
            raise ValueError(f"model '{name}' registered twice")
        MODELS[name] = fn
        return fn
    return deco


def build_model(arch: str, input_shape, num_classes: int, **args) -> nn.Module:
    if arch not in MODELS:
        near = difflib.get_close_matches(arch, MODELS, n=1)
        raise ConfigError(f"unknown model arch '{arch}'" + (f" (did you mean '{near[0]}'?)" if near else "")
                          + f"; known: {', '.join(sorted(MODELS))}")
    fn = MODELS[arch]
    _check_args(arch, args)
    return fn(tuple(input_shape), num_classes, **args)


def check_arch(arch: str, args: dict) -> None:
    """Validate an arch name and its argument names without building the model."""
    if arch not in MODELS:
        build_model(arch, (1,), 2, **args)
    _check_args(arch, args)


def _check_args(arch: str, args: dict) -> None:
    allowed = [p for p in inspect.signature(MODELS[arch]).parameters if p not in ("input_shape", "num_classes")]
    for k in args:
        if k not in allowed:
            near = difflib.get_close_matches(k, allowed, n=1)
            raise ConfigError(f"model arch '{arch}' has no argument '{k}'"
                              + (f" (did you mean '{near[0]}'?)" if near else "") + f"; it takes {allowed}")


from reuse.models import mlp, cnn1d, resnet_cifar, resnet_imagenet, text  # noqa: E402,F401  (register)

__all__ = ["MODELS", "build_model", "check_arch", "register_model"]
