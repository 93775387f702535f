"""A search space: what each hyperparameter name sets, how a config's space is checked, and how a
trial's chosen values become its model and recipe. Imports no torch and no Optuna (the config check
uses it); :mod:`reuse.methods.sequences.search` turns the space into Optuna distributions.

A space maps names to ranges ``{low, high, log?, step?}`` (integers if both bounds are) or to
``{choices: [...]}``. A name is an alias (``lr``, ``weight_decay``, ``momentum``, ``epochs``,
``batch_size``, ``label_smoothing``, ``warmup_epochs``, ``augment``, ``width``, ``model``), a recipe
path ``train.<key>.<key>`` that the model's recipe has, or a model argument ``args.<name>`` of the
searched architecture.
"""

from __future__ import annotations

import copy
import difflib
import json
from typing import Any

from reuse.plan import deep_merge, recipe_for

#: aliases of recipe paths
RECIPE_ALIASES = {
    "lr": ("optimizer", "lr"),
    "weight_decay": ("optimizer", "weight_decay"),
    "momentum": ("optimizer", "momentum"),
    "epochs": ("epochs",),
    "batch_size": ("batch_size",),
    "label_smoothing": ("label_smoothing",),
    "warmup_epochs": ("schedule", "warmup_epochs"),
    "augment": ("augment",),
}
#: recipe keys a recipe may lack (defaults elsewhere) that a space may still set
OPTIONAL_RECIPE = {("label_smoothing",), ("augment",)}
#: the model argument ``width`` sets, per architecture (a list argument gets the width in every entry)
WIDTH_ARGS = {"mlp": "hidden", "hinton_mlp": "hidden", "cnn1d": "channels", "text_cnn": "channels",
              "embed_bag": "embed_dim", **{f"resnet{d}": "width" for d in (20, 32, 44, 56, 110)}}
KNOWN = (*RECIPE_ALIASES, "width", "model")


def is_range(spec: dict) -> bool:
    return "choices" not in spec


def encode_choice(v: Any) -> Any:
    """A choice as Optuna stores categorical values (None, bool, int, float, str): dicts and lists as
    their JSON text."""
    return json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v


def decode_choice(spec: dict, v: Any) -> Any:
    """The config's choice that Optuna's stored value ``v`` stands for."""
    for c in spec["choices"]:
        if encode_choice(c) == v:
            return copy.deepcopy(c)
    raise ValueError(f"{v!r} is none of the choices {spec['choices']}")


def problems(space: dict, config: dict, model: str, where: str) -> list[str]:
    """What is wrong with ``space`` for a search of ``model``; each names the key and the fix."""
    from reuse.models import catalog

    out = []
    if not space:
        return [f"{where}: the search space is empty; declare at least one hyperparameter (e.g. lr)"]
    arch = config["models"][model]["arch"]
    recipe = recipe_for(config, model)
    for name, spec in space.items():
        at = f"{where}.{name}"
        if name.startswith("train."):
            path = tuple(name.split(".")[1:])
            if not _has(recipe, path) and path not in OPTIONAL_RECIPE:
                out.append(f"{at}: the recipe of '{model}' has no key {'.'.join(path)}; name a recipe key "
                           "(e.g. train.optimizer.lr)")
        elif name.startswith("args."):
            args = catalog.archs().get(arch, ())
            if name[5:] not in args:
                out.append(f"{at}: architecture '{arch}' takes no argument '{name[5:]}' (it takes "
                           f"{', '.join(args) or 'none'})")
        elif name == "width" and arch not in WIDTH_ARGS:
            out.append(f"{at}: 'width' has no meaning for architecture '{arch}'; search args.<name> instead")
        elif name not in KNOWN:
            near = difflib.get_close_matches(name, KNOWN, n=1)
            out.append(f"{at}: unknown hyperparameter '{name}'" + (f" (did you mean '{near[0]}'?)" if near else "")
                       + f"; known: {', '.join(KNOWN)}, train.<recipe key>, args.<model argument>")
        if is_range(spec) and ("low" not in spec or "high" not in spec):
            out.append(f"{at}: give a range (low and high) or choices")
        elif not is_range(spec) and set(spec) - {"choices"}:
            out.append(f"{at}: choices do not combine with {', '.join(sorted(set(spec) - {'choices'}))}; give one form")
        elif is_range(spec):
            lo, hi = spec["low"], spec["high"]
            if lo > hi:
                out.append(f"{at}: empty range, low {lo} > high {hi}; swap them")
            elif lo == hi:
                out.append(f"{at}: the range holds one value ({lo}); fix it in the recipe, or use choices")
            if spec.get("log") and lo <= 0:
                out.append(f"{at}: a log range needs positive bounds (low is {lo}); raise low or set log: false")
            if spec.get("log") and spec.get("step") is not None:
                out.append(f"{at}: log and step do not combine (Optuna); drop one")
            if name in ("epochs", "batch_size", "width", "train.epochs") and not (
                    isinstance(lo, int) and isinstance(hi, int)):
                out.append(f"{at}: {name} is an integer; give integer bounds")
        else:
            if len({encode_choice(c) for c in spec["choices"]}) != len(spec["choices"]):
                out.append(f"{at}: the choices repeat a value; list each once")
    return out


def epoch_bounds(space: dict, config: dict, model: str) -> tuple[int, int]:
    """The fewest and the most epochs a trial can have (the recipe's when the space leaves epochs)."""
    for key in ("epochs", "train.epochs"):
        if key in space:
            s = space[key]
            vals = [s["low"], s["high"]] if is_range(s) else list(s["choices"])
            return int(min(vals)), int(max(vals))
    e = recipe_for(config, model)["epochs"]
    return e, e


def apply(params: dict, space: dict, config: dict, model: str, train: dict | None = None) -> tuple[str, dict, dict]:
    """The model key, model config and recipe of a trial with ``params`` (decoded values), starting
    from ``model``'s config with the search's ``train`` overrides."""
    if "model" in params:
        model = params["model"]
    model_cfg = copy.deepcopy(config["models"][model])
    recipe = deep_merge(recipe_for(config, model), train or {})
    args = model_cfg.setdefault("args", {})
    for name, v in sorted(params.items()):
        if name == "model":
            continue
        if name == "width":
            arg = WIDTH_ARGS[model_cfg["arch"]]
            cur = args.get(arg)
            args[arg] = [int(v)] * len(cur) if isinstance(cur, list) else int(v)
        elif name.startswith("args."):
            args[name[5:]] = v
        else:
            path = RECIPE_ALIASES.get(name) or tuple(name.split(".")[1:])
            _set(recipe, path, v)
    return model, model_cfg, recipe


def _has(d: dict, path: tuple[str, ...]) -> bool:
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return False
        d = d[k]
    return True


def _set(d: dict, path: tuple[str, ...], v: Any) -> None:
    for k in path[:-1]:
        d = d.setdefault(k, {})
    d[path[-1]] = v
