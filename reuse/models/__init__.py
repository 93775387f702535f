"""Models by name: a registry of builders ``fn(input_shape, num_classes, **args) -> nn.Module``.

The config names a model's architecture (``arch``) and its keyword arguments (``args``); every
builder takes the dataset's input shape and class count so the same name works on any dataset whose
inputs it can consume.

- :mod:`reuse.models.catalog`: the architectures and their argument names, read from the model
  modules' source, and :func:`check_arch`; imports no torch (the config check uses it).
- :mod:`reuse.models.registry`: ``MODELS`` and :func:`register_model`, which the model modules use.
- :mod:`reuse.models.build`: :func:`build_model`, with every model module imported.

The names below load on first use (:mod:`reuse.lazy`), so importing a submodule imports no torch.
"""

from reuse.lazy import exports

__all__ = ["MODELS", "build_model", "check_arch", "register_model"]
__getattr__, __dir__ = exports(__name__, {
    "reuse.models.build": ["MODELS", "build_model"],  # MODELS through build: filled by every model module
    "reuse.models.catalog": ["check_arch"],
    "reuse.models.registry": ["register_model"],
})
