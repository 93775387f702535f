"""Data pruning by past runs' scores (see README.md in this folder for the method card).

The names below load on first use (:mod:`reuse.lazy`), so importing ``reuse.methods.prune.spec``
(the config check) imports no torch.
"""

from reuse.lazy import exports

__all__ = ["MODES", "Prune", "matched_epochs", "select"]
__getattr__, __dir__ = exports(__name__, {
    "reuse.methods.prune.prune": ["MODES", "Prune", "matched_epochs", "select"],
})
