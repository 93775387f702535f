"""The registry the model modules fill: ``MODELS`` (name -> builder) and :func:`register_model`.

A builder is ``fn(input_shape, num_classes, **args) -> nn.Module``. This module imports no torch and
no model module: the model modules import it to register, and :mod:`reuse.models.build` imports them
all. Register with a literal name: :mod:`reuse.models.catalog` reads the names from the source.
"""

from __future__ import annotations

from typing import Any, Callable

MODELS: dict[str, Callable[..., Any]] = {}


def register_model(name: str):
    def deco(fn):
        if name in MODELS:
            raise ValueError(f"model '{name}' registered twice")
        MODELS[name] = fn
        return fn
    return deco


__all__ = ["MODELS", "register_model"]
