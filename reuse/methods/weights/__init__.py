"""Reusing past runs' weights: warm starts, shrink and perturb, model soups, SWA and EMA (see
README.md in this folder for the method card)."""

from reuse.methods.weights.weights import (
    WeightAveraging,
    average_state_dicts,
    check_same_architecture,
    greedy_soup,
    has_batchnorm,
    recompute_bn,
    shrink_perturb,
)

__all__ = ["WeightAveraging", "average_state_dicts", "check_same_architecture", "greedy_soup", "has_batchnorm",
           "recompute_bn", "shrink_perturb"]
