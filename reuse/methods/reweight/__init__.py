"""Loss re-weighting by past runs' scores (see README.md in this folder for the method card).

The names below load on first use (:mod:`reuse.lazy`), so importing ``reuse.methods.reweight.spec``
(the config check) imports no torch.
"""

from reuse.lazy import exports

__all__ = ["Reweight", "rank_weights", "weighted_cross_entropy"]
__getattr__, __dir__ = exports(__name__, {
    "reuse.methods.reweight.reweight": ["Reweight", "rank_weights", "weighted_cross_entropy"],
})
