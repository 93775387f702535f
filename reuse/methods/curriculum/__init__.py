"""Curricula by past runs' scores (see README.md in this folder for the method card)."""

from reuse.methods.curriculum.curriculum import ORDERS, PACINGS, Curriculum, curriculum_order, pacing, step_batches

__all__ = ["ORDERS", "PACINGS", "Curriculum", "curriculum_order", "pacing", "step_batches"]
