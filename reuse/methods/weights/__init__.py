"""Reusing past runs' weights: warm starts, shrink and perturb, model soups, SWA and EMA (see
README.md in this folder for the method card).

The names below load on first use (:mod:`reuse.lazy`), so importing ``reuse.methods.weights.spec``
(the config check) imports no torch.
"""

from reuse.lazy import exports

__all__ = ["WeightAveraging", "average_state_dicts", "check_same_architecture", "greedy_soup",
           "has_batchnorm", "recompute_bn", "shrink_perturb"]
__getattr__, __dir__ = exports(__name__, {
    "reuse.methods.weights.weights": ["WeightAveraging", "average_state_dicts", "check_same_architecture",
                                      "greedy_soup", "has_batchnorm", "recompute_bn", "shrink_perturb"],
})
