"""The ``curriculum`` block: easy-to-hard, anti and random curricula by past runs' scores, with a
pacing function, under a step ``budget``."""

from reuse.methods.registry import register
from reuse.methods.scored import ScoredMethod


class Curriculum(ScoredMethod):
    name = "curriculum"
    title = "curricula by past runs' scores"
    stage = "reuse.methods.curriculum.stage:train"
    study_keys = ("cfg_score", "cfg_epoch", "cfg_order", "cfg_pacing", "cfg_start", "cfg_full_at", "cfg_budget")


register(Curriculum())
