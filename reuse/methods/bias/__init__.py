"""Bias shifts of a past run's classifier, chosen on the validation split (Hinton et al. 2015's
omitted-class experiment; see README.md in this folder for the method card).

The names below load on first use (:mod:`reuse.lazy`), so importing ``reuse.methods.bias.spec`` (the
config check) imports no torch.
"""

from reuse.lazy import exports

__all__ = ["accuracy_with_shift", "search_shift", "shift_vector"]
__getattr__, __dir__ = exports(__name__, {
    "reuse.methods.bias.search": ["accuracy_with_shift", "search_shift", "shift_vector"],
})
