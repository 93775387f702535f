"""The ``prune`` block: train on the fraction of the data that past runs' scores choose (Data Diet),
for the same number of optimisation steps as full data (``budget`` times it)."""

from reuse.methods.registry import register
from reuse.methods.scored import ScoredMethod


class Prune(ScoredMethod):
    name = "prune"
    title = "data pruning by past runs' scores"
    stage = "reuse.methods.prune.stage:train"
    study_keys = ("cfg_score", "cfg_epoch", "cfg_mode", "cfg_keep", "cfg_drop", "cfg_class_balanced", "cfg_budget")


register(Prune())
