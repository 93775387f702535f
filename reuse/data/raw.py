"""What a dataset reader returns (:class:`RawData`) and the readers by dataset kind (:data:`READERS`).

A leaf of :mod:`reuse.data`: the readers (:mod:`reuse.data.sources`, :mod:`reuse.data.text`)
register here, and :func:`reuse.data.sources.read` looks them up, so neither reader module imports
the other's dependants.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

READERS: dict[str, Callable[[str, dict], "RawData"]] = {}


def register_reader(kind: str):
    def deco(fn):
        READERS[kind] = fn
        return fn
    return deco


@dataclass
class RawData:
    num_classes: int
    x_train: np.ndarray          # (N, C, ...) uint8 or float32; for imagefolder: relative paths (str)
    y_train: np.ndarray          # (N,) int64
    x_test: np.ndarray
    y_test: np.ndarray
    x_val: np.ndarray | None = None   # examples held out of the training split (dataset key `holdout`)
    y_val: np.ndarray | None = None
    mean: list[float] | None = None   # per-channel normalisation, measured on the training split
    std: list[float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


__all__ = ["READERS", "RawData", "register_reader"]
