"""``FlopCounterMode`` without its first-use cost of importing TorchDynamo.

torch wraps every dispatch mode's ``__torch_dispatch__`` in ``torch._disable_dynamo``, which imports
``torch._dynamo`` on the first call (about 1.5 s on the project's CPUs): every job that counts FLOPs
(every training run, cache and score) paid it once. The wrapper exists so that TorchDynamo does not
trace into the mode; this project counts FLOPs only on eager steps (a recipe with ``compile`` counts
on the eager model), so the mode is marked as already handled and runs as written. When TorchDynamo
is loaded anyway (``compile: true``), the wrapper is left to do its job.

Import ``FlopCounterMode`` from here, not from torch.
"""

from __future__ import annotations

import sys

from torch.utils.flop_counter import FlopCounterMode, _FlopCounterMode

__all__ = ["FlopCounterMode"]


def _skip_dynamo_import() -> None:
    if "torch._dynamo" in sys.modules:
        return
    raw = getattr(_FlopCounterMode.__dict__.get("__torch_dispatch__"), "__wrapped__", None)
    if raw is not None and getattr(raw, "__dynamo_disable", None) is None:
        raw.__dynamo_disable = raw  # what torch._disable_dynamo looks up before importing TorchDynamo


_skip_dynamo_import()
