"""Knowledge distillation from past runs (see README.md in this folder for the method card).

The names below load on first use (:mod:`reuse.lazy`), so importing ``reuse.methods.kd.spec``
(the config check) imports no torch.
"""

from reuse.lazy import exports

__all__ = ["CachedTeacher", "CheckpointMixupTeacher", "Distill", "OnlineTeacher", "beta_draws",
           "ensemble_probs", "mix", "mixup_permutation", "pick_teacher", "tempered_probs"]
__getattr__, __dir__ = exports(__name__, {
    "reuse.methods.kd.algorithm": ["Distill"],
    "reuse.methods.kd.functional": ["beta_draws", "ensemble_probs", "mix", "mixup_permutation", "pick_teacher",
                                    "tempered_probs"],
    "reuse.methods.kd.teachers": ["CachedTeacher", "CheckpointMixupTeacher", "OnlineTeacher"],
})
