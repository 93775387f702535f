"""The model architectures a config may name, known without importing torch.

The config check (and so every Snakemake start and every SLURM job) validates each model's ``arch``
and argument names. The builders live in modules that import torch, so this catalog reads those
modules' source instead: every function decorated ``@register_model("<name>")`` in the modules of
:data:`MODULES` is an architecture, and its parameters other than ``input_shape`` and
``num_classes`` are its arguments. Nothing is written twice: the builders are the one source, and a
test checks that the catalog equals the registry they fill (:mod:`reuse.models.build`).

A model module must therefore register with a literal name (``@register_model("resnet20")``); the
catalog refuses any other ``register_model`` call, so a computed name cannot slip past it.

The text-model facts the config check needs (:data:`TEXT_MODELS`, :func:`model_vocab`) are here too:
the text models are those of :mod:`reuse.models.text`.
"""

from __future__ import annotations

import ast
import difflib
import functools
from pathlib import Path
from typing import Mapping, Sequence

from reuse.errors import ConfigError

#: the modules of ``reuse.models`` whose builders register themselves, in registration order
MODULES = ("mlp", "cnn1d", "resnet_cifar", "resnet_imagenet", "text")
#: builder parameters every model takes from the dataset, not from the config's ``args``
DATASET_PARAMS = ("input_shape", "num_classes")
#: the default ``vocab_size`` of a text model (that of the text dataset, :mod:`reuse.data.text`)
DEFAULT_VOCAB = 8000

_HERE = Path(__file__).resolve().parent


def _register_name(call: ast.Call, where: str) -> str:
    if len(call.args) != 1 or call.keywords or not isinstance(call.args[0], ast.Constant) \
            or not isinstance(call.args[0].value, str):
        raise SyntaxError(f"{where}: register_model takes one literal name (the model catalog reads it "
                          f"from the source), not {ast.unparse(call)}")
    return call.args[0].value


def _is_register(node: ast.AST) -> bool:
    f = node.func if isinstance(node, ast.Call) else None
    return (isinstance(f, ast.Name) and f.id == "register_model") or \
        (isinstance(f, ast.Attribute) and f.attr == "register_model")


def _params(fn: ast.FunctionDef) -> tuple[str, ...]:
    a = fn.args
    names = [p.arg for p in (*a.posonlyargs, *a.args)]
    names += [a.vararg.arg] if a.vararg else []
    names += [p.arg for p in a.kwonlyargs]
    names += [a.kwarg.arg] if a.kwarg else []
    return tuple(n for n in names if n not in DATASET_PARAMS)


def read_module(path: Path) -> dict[str, tuple[str, ...]]:
    """The architectures a model module's source registers: name -> argument names."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: dict[str, tuple[str, ...]] = {}
    decorators = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for dec in node.decorator_list:
                if _is_register(dec):
                    decorators.add(id(dec))
                    name = _register_name(dec, f"{path}:{node.lineno}")
                    if name in found:
                        raise ValueError(f"{path}: model '{name}' registered twice")
                    found[name] = _params(node)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _is_register(node) and id(node) not in decorators:
            raise SyntaxError(f"{path}:{node.lineno}: register_model must decorate a function "
                              f"(the model catalog reads it from the source), not {ast.unparse(node)}")
    return found


@functools.cache
def _catalog() -> tuple[dict[str, tuple[str, ...]], dict[str, str]]:
    archs: dict[str, tuple[str, ...]] = {}
    modules: dict[str, str] = {}
    for mod in MODULES:
        for name, params in read_module(_HERE / f"{mod}.py").items():
            if name in archs:
                raise ValueError(f"model '{name}' registered twice (reuse.models.{modules[name]} and "
                                 f"reuse.models.{mod})")
            archs[name], modules[name] = params, mod
    return archs, modules


def archs() -> dict[str, tuple[str, ...]]:
    """Every architecture: name -> its argument names (in the builder's order)."""
    return dict(_catalog()[0])


def arch_module(arch: str) -> str:
    """The module of ``reuse.models`` that defines ``arch`` (e.g. ``resnet_cifar``)."""
    return _catalog()[1][arch]


def check(arch: str, args: Mapping, known: Mapping[str, Sequence[str]]) -> None:
    """Raise :class:`ConfigError` unless ``arch`` is one of ``known`` (name -> argument names) and
    every key of ``args`` is one of its arguments; the message names the nearest match."""
    if arch not in known:
        near = difflib.get_close_matches(arch, known, n=1)
        raise ConfigError(f"unknown model arch '{arch}'" + (f" (did you mean '{near[0]}'?)" if near else "")
                          + f"; known: {', '.join(sorted(known))}")
    allowed = list(known[arch])
    for k in args:
        if k not in allowed:
            near = difflib.get_close_matches(k, allowed, n=1)
            raise ConfigError(f"model arch '{arch}' has no argument '{k}'"
                              + (f" (did you mean '{near[0]}'?)" if near else "") + f"; it takes {allowed}")


#: the gradient-boosted tree architectures (:data:`reuse.plan.TREE_ARCHS`, trained by LightGBM in
#: :mod:`reuse.models.gbdt`, not built as networks) and their argument names
TREE_ARGS = {"gbdt": ("n_estimators", "learning_rate", "num_leaves", "max_depth", "min_child_samples",
                      "subsample", "colsample", "reg_lambda")}


def check_arch(arch: str, args: Mapping) -> None:
    """Validate an arch name and its argument names without building the model (or importing torch)."""
    check(arch, args, {**_catalog()[0], **TREE_ARGS})


TEXT_MODELS = tuple(name for name, mod in _catalog()[1].items() if mod == "text")


def model_vocab(arch: str, args: Mapping) -> int | None:
    """The vocabulary size of a text model (its ``vocab_size`` arg or the default); None for others."""
    return int(args.get("vocab_size", DEFAULT_VOCAB)) if arch in TEXT_MODELS else None


__all__ = ["DEFAULT_VOCAB", "MODULES", "TEXT_MODELS", "TREE_ARGS", "arch_module", "archs", "check", "check_arch", "model_vocab",
           "read_module"]
