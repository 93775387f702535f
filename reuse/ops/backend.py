"""Which implementation the ops use: the compiled extension ``reuse._C`` (loading it registers
``torch.ops.reuse.*``) or, when it is missing, fails to load or ``REUSE_FORCE_REFERENCE=1`` is set,
the pure-PyTorch references (a warning is issued once in the failure case). A leaf: the op modules
read :data:`BACKEND` from here."""

from __future__ import annotations

import os
import warnings
from typing import Any

import torch

_C: Any = None
_LOAD_ERROR: str | None = None
_FORCED_REFERENCE = os.environ.get("REUSE_FORCE_REFERENCE", "") not in ("", "0")

if _FORCED_REFERENCE:
    _LOAD_ERROR = "REUSE_FORCE_REFERENCE is set"
else:
    try:
        from reuse import _C  # loading the library registers torch.ops.reuse.*
    except (ImportError, OSError) as exc:
        _LOAD_ERROR = f"{type(exc).__name__}: {exc}"
        warnings.warn(
            f"reuse._C is not built ({_LOAD_ERROR}); using the pure-PyTorch reference "
            f"ops, which are slower. Build it with `pip install --no-build-isolation -e .`",
            RuntimeWarning,
            stacklevel=2,
        )

BACKEND: str = "compiled" if _C is not None else "reference"


def _has_kernel(op: str, dispatch_key: str) -> bool:
    """Whether the compiled extension registers a kernel of ``op`` for ``dispatch_key``."""
    if BACKEND != "compiled":
        return False
    return bool(torch._C._dispatch_has_kernel_for_dispatch_key(op, dispatch_key))
