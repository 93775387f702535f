"""Curricula by past runs' scores (see README.md in this folder for the method card).

The names below load on first use (:mod:`reuse.lazy`), so importing ``reuse.methods.curriculum.spec``
(the config check) imports no torch.
"""

from reuse.lazy import exports

__all__ = ["ORDERS", "PACINGS", "Curriculum", "curriculum_order", "pacing", "step_batches"]
__getattr__, __dir__ = exports(__name__, {
    "reuse.methods.curriculum.curriculum": ["ORDERS", "PACINGS", "Curriculum", "curriculum_order", "pacing",
                                            "step_batches"],
})
