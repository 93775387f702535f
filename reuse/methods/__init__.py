"""Reuse methods. Each is a pure functional core (testable alone) plus a small
:class:`reuse.train.Algorithm` that hooks it into the trainer, with a method card (README.md).

- :mod:`reuse.methods.kd`: knowledge distillation from past runs' logit caches (single, ensemble,
  random teacher per step, early stop, checkpoint MixUp, input MixUp) and from an online teacher.
- :mod:`reuse.methods.prune`: keep a fraction of the data by past runs' scores (Data Diet).
- :mod:`reuse.methods.curriculum`: easy-to-hard, anti and random curricula with pacing functions.
- :mod:`reuse.methods.reweight`: loss weights from past runs' difficulty ranks.
- :mod:`reuse.methods.weights`: warm starts from past checkpoints (shrink and perturb), model soups
  of warm-started runs (uniform, greedy) and weight averaging within a run (SWA, EMA).

The scores themselves come from :mod:`reuse.scores`.
"""
