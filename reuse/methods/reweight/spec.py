"""The ``reweight`` block: per-example loss weights from past runs' difficulty ranks."""

from reuse.methods.registry import register
from reuse.methods.scored import ScoredMethod


class Reweight(ScoredMethod):
    name = "reweight"
    title = "loss re-weighting by past runs' scores"
    stage = "reuse.methods.reweight.stage:train"
    study_keys = ("cfg_score", "cfg_epoch", "cfg_strength", "cfg_budget")


register(Reweight())
