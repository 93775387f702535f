"""Reuse methods, one folder each, registered in :mod:`reuse.methods.registry` (docs/methods.md).

A folder holds the method's spec (``spec.py``: config checks, variants, the files a run reads; no
torch), its config schema fragment (``schema.yaml``), its workflow stage (``stage.py``), a pure
functional core (testable alone) plus a small :class:`reuse.train.Algorithm` that hooks it into the
trainer, and its method card (README.md).

- :mod:`reuse.methods.kd`: knowledge distillation from past runs' logit caches (single, ensemble,
  random teacher per step, early stop, checkpoint MixUp, input MixUp) and from an online teacher.
- :mod:`reuse.methods.prune`: keep a fraction of the data by past runs' scores (Data Diet).
- :mod:`reuse.methods.curriculum`: easy-to-hard, anti and random curricula with pacing functions.
- :mod:`reuse.methods.reweight`: loss weights from past runs' difficulty ranks.
- :mod:`reuse.methods.adversarial`: adversarial examples generated once against past runs, recycled.
- :mod:`reuse.methods.weights`: warm starts from past checkpoints (shrink and perturb), model soups
  of warm-started runs (uniform, greedy) and weight averaging within a run (SWA, EMA).

The scores themselves come from :mod:`reuse.scores`; what the score-reading methods share is in
:mod:`reuse.methods.scored`.
"""
