"""The adversarial block of the workflow config (``adv``): which caches, runs and robust evaluations it
declares, and its semantic checks (the schema checks the shapes; these check the references)."""

from __future__ import annotations

import difflib
from typing import Iterator

from reuse.config import checkpoint_epochs


def adv_variants(config: dict) -> Iterator[tuple[str, str]]:
    """Every (dataset, variant) pair of the ``adv`` block (as ``reuse.config.expected_runs`` lists them)."""
    for ds in config["datasets"]:
        for name, v in config["adv"]["variants"].items():
            if ds in v.get("datasets", [ds]):
                yield ds, name


def adv_seeds(config: dict) -> list[int]:
    seeds = config["adv"]["seeds"]
    return seeds if seeds is not None else config["baseline"]["seeds"]


def adv_caches(config: dict) -> list[tuple[str, str]]:
    """The (dataset, cache) pairs some variant trains with."""
    return list(dict.fromkeys((ds, config["adv"]["variants"][v]["cache"]) for ds, v in adv_variants(config)
                              if config["adv"]["variants"][v]["cache"] is not None))


def adv_cache_seeds(config: dict, cache: str) -> list[int]:
    """The baseline seeds whose runs a cache attacks: the first ``source.runs`` seeds."""
    return config["baseline"]["seeds"][: config["adv"]["caches"][cache]["source"]["runs"]]


def adv_cache_epoch(config: dict, cache: str) -> int:
    """The checkpoint epoch a cache attacks, ``last`` resolved."""
    src = config["adv"]["caches"][cache]["source"]
    return checkpoint_epochs(config, src["model"])[-1] if src["epoch"] == "last" else src["epoch"]


def adv_robust_models(config: dict) -> list[tuple[str, str]]:
    """The (dataset, model) pairs whose baseline runs get a robust accuracy: the variants' models."""
    return list(dict.fromkeys((ds, config["adv"]["variants"][v]["model"]) for ds, v in adv_variants(config)))


def _trains_on(config: dict, model: str, ds: str) -> bool:
    m = config["models"][model]
    return "datasets" not in m or ds in m["datasets"]


def _unknown(where: str, kind: str, name: str, known) -> str:
    near = difflib.get_close_matches(name, list(known), n=1)
    return f"{where}: no {kind} named '{name}'" + (f" (did you mean '{near[0]}'?)" if near else
                                                   f"; have {', '.join(known) or 'none'}")


def adv_problems(config: dict) -> list[str]:
    """The ``adv`` block's semantic problems, each naming the key and the fix. (Whether an advprop
    model has BatchNorm is checked when its run starts.)"""
    adv, problems = config["adv"], []
    n_seeds = len(config["baseline"]["seeds"])
    for name, c in adv["caches"].items():
        where, src = f"adv.caches.{name}", c["source"]
        if src["model"] not in config["models"]:
            problems.append(_unknown(f"{where}.source.model", "model", src["model"], config["models"]))
            continue
        if src["runs"] > n_seeds:
            problems.append(f"{where}.source.runs: {src['runs']} past runs asked for, but baseline.seeds has {n_seeds}")
        epochs = checkpoint_epochs(config, src["model"])
        if src["epoch"] != "last" and src["epoch"] not in epochs:
            problems.append(f"{where}.source.epoch: {src['epoch']} is not a checkpoint epoch of '{src['model']}' "
                            f"{epochs}; add it to train.checkpoint_epochs or use last")
    for name, v in adv["variants"].items():
        where = f"adv.variants.{name}"
        if v["model"] not in config["models"]:
            problems.append(_unknown(f"{where}.model", "model", v["model"], config["models"]))
            continue
        if (v["cache"] is None) == (v["online"] is None):
            problems.append(f"{where}: set exactly one of cache (recycled examples, a key of adv.caches) and online "
                            "(an attack run against the model itself every step)")
        if v["cache"] is not None and v["cache"] not in adv["caches"]:
            problems.append(_unknown(f"{where}.cache", "cache in adv.caches", v["cache"], adv["caches"]))
        if v["use"] in ("mix", "advprop") and v["ratio"] == 0:
            problems.append(f"{where}.ratio: 0 makes no example adversarial; use a ratio in (0, 1]")
    if problems:
        return problems
    for ds, name in adv_variants(config):
        v = adv["variants"][name]
        where = f"adv.variants.{name}"
        if not _trains_on(config, v["model"], ds):
            problems.append(f"{where}: runs on dataset '{ds}', where model '{v['model']}' does not train "
                            f"(models.{v['model']}.datasets); set the variant's datasets")
        src = adv["caches"][v["cache"]]["source"]["model"] if v["cache"] is not None else None
        if src is not None:
            if ds not in adv["caches"][v["cache"]].get("datasets", [ds]):
                problems.append(f"{where}: runs on dataset '{ds}' but cache '{v['cache']}' is not built there "
                                f"(adv.caches.{v['cache']}.datasets)")
            elif not _trains_on(config, src, ds):
                problems.append(f"{where}: cache '{v['cache']}' attacks past runs of '{src}', which does not train "
                                f"on dataset '{ds}'; set the variant's datasets")
    return problems
