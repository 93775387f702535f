"""Knowledge distillation from past runs (see README.md in this folder for the method card)."""

from reuse.methods.kd.algorithm import Distill
from reuse.methods.kd.functional import beta_draws, ensemble_probs, mix, mixup_permutation, pick_teacher, tempered_probs
from reuse.methods.kd.teachers import CachedTeacher, CheckpointMixupTeacher, OnlineTeacher

__all__ = ["CachedTeacher", "CheckpointMixupTeacher", "Distill", "OnlineTeacher", "beta_draws", "ensemble_probs",
           "mix", "mixup_permutation", "pick_teacher", "tempered_probs"]
