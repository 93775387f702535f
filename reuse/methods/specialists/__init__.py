"""Specialists on a generalist's confusable classes, combined with it (Hinton et al. 2015's JFT
experiment; see README.md in this folder for the method card).

The names below load on first use (:mod:`reuse.lazy`), so importing ``reuse.methods.specialists.spec``
(the config check) imports no torch.
"""

from reuse.lazy import exports

__all__ = ["Enrich", "active_specialists", "cluster_classes", "combine", "coverage", "dustbin_correction",
           "enriched_ids", "label_map", "membership", "objective", "prediction_covariance", "specialist_head"]
__getattr__, __dir__ = exports(__name__, {
    "reuse.methods.specialists.core": __all__,
})
