"""Loss re-weighting by past runs' scores (see README.md in this folder for the method card)."""

from reuse.methods.reweight.reweight import Reweight, rank_weights, weighted_cross_entropy

__all__ = ["Reweight", "rank_weights", "weighted_cross_entropy"]
