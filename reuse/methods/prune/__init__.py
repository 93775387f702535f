"""Data pruning by past runs' scores (see README.md in this folder for the method card)."""

from reuse.methods.prune.prune import MODES, Prune, matched_epochs, select

__all__ = ["MODES", "Prune", "matched_epochs", "select"]
