"""The leaf of the workflow config: recipes, checkpoint epochs, seeds and run paths.

Everything that plans work from a validated config and that the method specs need sits here:
merging recipes, a model's checkpoint epochs, which (dataset, model) pairs train, the seeds of a
method, the past run a seed draws, and the one function that spells a run's folder. It imports only
the standard library and :mod:`reuse.errors`, so the config check, the method registry and every
method's spec can use it without an import cycle, and starting Snakemake imports no torch.
"""

from __future__ import annotations

import copy
import difflib
import math
import os
from typing import Iterable, Iterator

BASELINE = "baseline"


def deep_merge(base: dict, override: dict) -> dict:
    """``base`` with ``override`` merged over it, recursively for nested dicts (copies, never views)."""
    out = copy.deepcopy(base)
    for k, v in override.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def recipe_for(config: dict, model: str) -> dict:
    """The full training recipe of ``model``: the shared recipe with the model's overrides."""
    return deep_merge(config["train"], config["models"][model].get("train", {}))


#: model architectures that are gradient-boosted trees (:mod:`reuse.models.gbdt`), not networks: they
#: train only as baselines, on tabular data, and are reused only through their logit caches
TREE_ARCHS = ("gbdt",)
#: a tree model's boosting rounds when its args do not say (``n_estimators``)
TREE_ROUNDS = 100


def is_tree(config: dict, model: str) -> bool:
    """Whether ``model`` is a gradient-boosted tree model (arch in :data:`TREE_ARCHS`)."""
    return config["models"][model]["arch"] in TREE_ARCHS


def checkpoint_epochs(config: dict, model: str) -> list[int]:
    """Epochs whose checkpoints a baseline run keeps: the configured ones and the final epoch. A tree
    model keeps one, its final model, at "epoch" = its boosting rounds (``n_estimators``)."""
    if is_tree(config, model):
        return [int(config["models"][model].get("args", {}).get("n_estimators", TREE_ROUNDS))]
    r = recipe_for(config, model)
    return sorted(set(r["checkpoint_epochs"]) | {r["epochs"]})


def resolve_epoch(config: dict, model: str, epoch: int | str) -> int:
    """A checkpoint epoch of ``model``'s baseline runs with ``last`` resolved."""
    return checkpoint_epochs(config, model)[-1] if epoch == "last" else int(epoch)


def trains_on(config: dict, model: str, dataset: str) -> bool:
    """Whether ``model`` trains on ``dataset`` (its ``datasets`` list, or every dataset without one)."""
    m = config["models"][model]
    return "datasets" not in m or dataset in m["datasets"]


def runs(config: dict) -> Iterator[tuple[str, str]]:
    """Every (dataset, model) pair the config trains baselines of."""
    for ds in config["datasets"]:
        for model in config["models"]:
            if trains_on(config, model, ds):
                yield ds, model


def baseline_seeds(config: dict) -> list[int]:
    return list(config["baseline"]["seeds"])


def budget_variant(budget: float) -> str:
    """The name of a baseline run trained at ``budget`` times its recipe's epochs, the folder between
    ``baseline`` and ``s<seed>`` and its run.json's ``variant``: ``b0.25``, ``b0.5``, ``b2``. The run at
    budget 1 is the plain baseline run (no budget folder, variant null)."""
    return f"b{float(budget):g}"


def baseline_budgets(config: dict) -> list[float]:
    """The budgets of the baseline's budget curve (``baseline.budgets``: multiples of a model's recipe
    epochs), 1 among them."""
    return [float(b) for b in config["baseline"].get("budgets", [1])]


def budget_variants(config: dict) -> dict[str, float]:
    """The extra baseline runs of the budget curve by name: every budget but 1, ``{"b0.5": 0.5, ...}``."""
    return {budget_variant(b): b for b in baseline_budgets(config) if b != 1}


def budget_runs(config: dict) -> Iterator[tuple[str, str]]:
    """The (dataset, model) pairs that get a budget curve: those that train baselines, but tree models
    (their "epochs" are boosting rounds, and they train in one job that cannot be cut short)."""
    for ds, model in runs(config):
        if not is_tree(config, model):
            yield ds, model


def budget_run_recipe(config: dict, model: str, budget: float) -> dict:
    """The recipe of ``model``'s baseline run at ``budget``: :func:`budget_recipe` of its recipe, with
    only the final checkpoint kept and no per-example statistics (a budget run is only compared with,
    never reused)."""
    return {**budget_recipe(recipe_for(config, model), budget), "example_stats": False}


def variant_budget(config: dict, model: str, variant: dict | None) -> float:
    """The budget of a run of a method variant, in multiples of its model's recipe epochs: the variant's
    own ``budget`` where its method has one; else, where its ``train`` block sets ``epochs``, those over
    the model's recipe epochs; else 1. (What the run's own training costs nominally; what it reused is
    charged apart.)"""
    v = variant or {}
    if v.get("budget") is not None:
        return float(v["budget"])
    epochs = (v.get("train") or {}).get("epochs") if isinstance(v.get("train"), dict) else None
    if epochs is not None and model in config["models"]:
        return float(epochs) / float(recipe_for(config, model)["epochs"])
    return 1.0


def block_seeds(config: dict, block: str) -> list[int]:
    """A method block's ``seeds``, or the baseline seeds where it has none (or null)."""
    seeds = (config.get(block) or {}).get("seeds")
    return list(seeds) if seeds is not None else baseline_seeds(config)


def cyclic_from(seeds: list[int], seed: int, n: int, skip_own: bool = True) -> list[int]:
    """``n`` of ``seeds`` in cyclic order starting after ``seed`` (at it with ``skip_own=False``); from
    the first seed when ``seed`` is not among them. How a run of seed s picks past runs that are not
    its own seed's (its own comes last)."""
    start = seeds.index(seed) + (1 if skip_own else 0) if seed in seeds else 0
    return (seeds[start:] + seeds[:start])[:n]


def run_path(dataset: str, model: str, method: str = BASELINE, variant: str | None = None,
             seed: int | str = "{seed}") -> str:
    """A run's folder relative to the results folder: ``<dataset>/<model>/baseline/s<seed>`` (the
    baseline run), ``<dataset>/<model>/baseline/b<budget>/s<seed>`` (a baseline run of the budget curve,
    ``variant`` from :func:`budget_variant`) or ``<dataset>/<model>/<method>/<variant>/s<seed>``.
    ``seed`` may be a wildcard pattern."""
    if method == BASELINE and not variant:
        return f"{dataset}/{model}/{BASELINE}/s{seed}"
    return f"{dataset}/{model}/{method}/{variant}/s{seed}"


def baseline_ckpt(config: dict, dataset: str, model: str, seed: int | str, epoch: int | str) -> str:
    """A baseline run's checkpoint file relative to the results folder (``last`` resolved)."""
    return f"{run_path(dataset, model, seed=seed)}/ckpt/e{resolve_epoch(config, model, epoch)}.pt"


def cache_files(config: dict, prefix: str) -> list[str]:
    """The files of one logit cache folder ``prefix``, as the ``cache`` block asks."""
    c = config["cache"]
    names = (["logits.npy"] if c["dense"] else []) + (
        ["topk_values.npy", "topk_indices.npy", "logsumexp.npy"] if c["topk"] else [])
    return [f"{prefix}/{n}" for n in names] + [f"{prefix}/meta.json"]


def datasets_of(config: dict, variant: dict, *models: str) -> Iterator[str]:
    """The datasets a variant runs on: those in its own ``datasets`` (all without one) on which every
    model in ``models`` trains."""
    for ds in config["datasets"]:
        if ds in variant.get("datasets", [ds]) and all(trains_on(config, m, ds) for m in models):
            yield ds


def unknown(where: str, kind: str, name: object, known: Iterable[str]) -> str:
    """``<where>: no <kind> named '<name>'`` with the nearest known name or the list of known ones."""
    known = list(known)
    near = difflib.get_close_matches(str(name), known, n=1)
    return f"{where}: no {kind} named '{name}'" + (f" (did you mean '{near[0]}'?)" if near else
                                                   f"; have {', '.join(known) or 'none'}")


def no_model(where: str, model: str, config: dict) -> str | None:
    """The problem of a ``model`` key naming no model of ``config``, or None."""
    if model in config["models"]:
        return None
    near = difflib.get_close_matches(model, config["models"], n=1)
    return f"{where}: no model named '{model}'" + (f" (did you mean '{near[0]}'?)" if near else "")


def late_milestones(where: str, recipe: dict) -> list[str]:
    """A recipe's schedule milestones beyond its epochs, as a problem."""
    late = [m for m in recipe["schedule"]["milestones"] if m > recipe["epochs"]]
    return [f"{where}.schedule.milestones: {late} lie beyond epochs={recipe['epochs']}"] if late else []


def rescale_recipe(recipe: dict, epochs: int, time_factor: float) -> dict:
    """``recipe`` with ``epochs`` epochs whose schedule landmarks (warmup, milestones, in epochs) are
    stretched by ``time_factor``, so that they fall on the same fraction of training."""
    sched = dict(recipe["schedule"])
    sched["warmup_epochs"] = sched.get("warmup_epochs", 0) * time_factor
    sched["milestones"] = [m * time_factor for m in sched.get("milestones", [])]
    return {**recipe, "epochs": int(epochs), "schedule": sched, "checkpoint_epochs": []}


def budget_recipe(recipe: dict, budget: float) -> dict:
    """``recipe`` cut (or stretched) to ``budget`` times its epochs, at least one, rounded up, with
    its schedule rescaled to match (:func:`rescale_recipe`)."""
    epochs = max(1, math.ceil(budget * recipe["epochs"]))
    return rescale_recipe(recipe, epochs, epochs / recipe["epochs"])


# ----------------------------------------------------------------------------- scores (a shared stage)
def score_epochs(config: dict) -> list[int]:
    """The checkpoint epochs at which past runs are scored, ``last`` resolved."""
    sc = config["scores"]
    all_epochs = checkpoint_epochs(config, sc["model"])
    if sc["epochs"] is None:
        return all_epochs
    return sorted({all_epochs[-1] if e == "last" else e for e in sc["epochs"]})


def score_seeds(config: dict) -> list[int]:
    """The baseline seeds whose runs are scored."""
    return baseline_seeds(config)[: config["scores"]["runs"]]


def score_datasets(config: dict) -> list[str]:
    """Datasets that get a score table: those the scored model trains on."""
    model = config["scores"]["model"]
    return [ds for ds, m in runs(config) if m == model] if model is not None else []


def expose_checkout(basedir: str) -> None:
    """Put the checkout at ``basedir`` on the PYTHONPATH that workflow jobs inherit, so rule scripts
    import this ``reuse`` also in an environment (e.g. a rule's conda env) where it is not installed."""
    parts = [basedir] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != basedir]
    os.environ["PYTHONPATH"] = os.pathsep.join(parts)


def fixed_input_augment(config: dict, model: str, dataset: str, inputs: str) -> str | None:
    """The problem of a model whose recipe shifts or flips its inputs on a dataset whose inputs cannot
    be (``inputs``: "token ids", "features"), naming the key that sets it; None when it does not."""
    aug = recipe_for(config, model).get("augment") or {}
    if not (aug.get("translate") or aug.get("flip")):
        return None
    m = config["models"][model]
    where = f"models.{model}.train" if "augment" in m.get("train", {}) else "train"
    kind = config["datasets"][dataset]["kind"]
    return (f"{where}.augment: {aug} on {kind} dataset '{dataset}'; {inputs} cannot be shifted or flipped: "
            "set translate: 0 and flip: false")
