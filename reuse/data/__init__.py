"""Data: readers for every dataset kind, prepared splits of ``(x, y, idx)``, deterministic
augmentation and dataset fingerprints.

The names below load on first use (:mod:`reuse.lazy`): importing a submodule that needs no torch
(:mod:`reuse.data.sources`, :mod:`reuse.data.text`, which the config check reads) imports none.
"""

from reuse.lazy import exports

__all__ = ["Augment", "DatasetPair", "ImageFolderData", "TensorData", "READERS", "check_fingerprint",
           "check_root", "epoch_order", "keyed_bits", "keyed_seed", "load", "make_fingerprint", "prepare"]
__getattr__, __dir__ = exports(__name__, {
    "reuse.data.augment": ["Augment", "keyed_bits", "keyed_seed"],
    "reuse.data.datasets": ["DatasetPair", "ImageFolderData", "TensorData", "epoch_order", "load", "prepare"],
    "reuse.data.fingerprint": ["check_fingerprint", "make_fingerprint"],
    "reuse.data.sources": ["READERS", "check_root"],  # READERS through sources: every reader registered
})
