"""Class influence on transfer learning (see README.md in this folder for the method card): source
runs on random subsets of the source classes, each transferred to a target; which source classes
help or hurt it, and source runs without them.

The names below load on first use (:mod:`reuse.lazy`), so importing ``reuse.methods.transfer.spec``
(the config check) imports no torch.
"""

from reuse.lazy import exports

__all__ = ["KINDS", "METRICS", "bootstrap_influence", "group_sums", "influences", "per_example", "removed_classes",
           "subset_classes", "subset_masks"]
__getattr__, __dir__ = exports(__name__, {
    "reuse.methods.transfer.influence": ["KINDS", "METRICS", "bootstrap_influence", "group_sums", "influences",
                                         "per_example", "removed_classes", "subset_classes", "subset_masks"],
})
