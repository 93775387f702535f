"""Reuse methods. Each is a pure functional core (testable alone) plus a small
:class:`reuse.train.Algorithm` that hooks it into the trainer, with a method card (README.md).

- :mod:`reuse.methods.kd`: knowledge distillation from past runs' logit caches (single, ensemble,
  random teacher per step, early stop, checkpoint MixUp, input MixUp) and from an online teacher.
"""
