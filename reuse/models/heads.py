"""A model's classifier head, found and swapped generically: the encoder/head split that transfer
(a new head on a source model's features) and shared-encoder training (one head per task) need.

Every architecture of :mod:`reuse.models` ends in one ``nn.Linear`` whose output is the model's output
(``Sequential`` models: their last layer; the ResNets and text models: ``fc``); the head is the last
``nn.Linear`` registered in the model. :func:`split_head` checks that the model's output really is that
layer's (on a probe input), so an architecture where it is not fails loudly instead of training the
wrong layer.
"""

from __future__ import annotations

import torch
import torch.nn as nn


def head_name(model: nn.Module) -> str:
    """The qualified name of the model's classifier: its last registered ``nn.Linear``."""
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer: no classifier head to split off")
    return names[-1]


def split_head(model: nn.Module, probe: torch.Tensor | None = None) -> tuple[nn.Module, nn.Linear]:
    """``(encoder, head)`` of ``model``, with ``head(encoder(x)) == model(x)``: the head is removed from
    ``model`` itself (replaced by ``nn.Identity``, so the returned encoder *is* ``model``, sharing its
    parameters) and returned. With ``probe`` (a batch of inputs), the split is checked on it first."""
    name = head_name(model)
    head = model.get_submodule(name)
    before = None
    if probe is not None:
        was = model.training
        model.eval()
        with torch.no_grad():
            before = model(probe)
    model.set_submodule(name, nn.Identity())
    if probe is not None:
        with torch.no_grad():
            after = head(model(probe))
        model.train(was)
        if after.shape != before.shape or not torch.allclose(after, before, rtol=1e-4, atol=1e-5):
            model.set_submodule(name, head)
            raise ValueError(f"{type(model).__name__}: its output is not its last linear layer's ({name}); "
                             "it cannot be split into an encoder and a classifier head")
    return model, head


def feature_dim(model: nn.Module) -> int:
    """The width of the features the classifier head reads."""
    return model.get_submodule(head_name(model)).in_features
