"""The ``adv`` block: adversarial examples generated once against past baseline runs (``caches``),
recycled into new runs (``variants`` with a ``cache``), beside adversarial training against the run's
own model (``online`` variants); the robust accuracy (``robust``) of every such run and of the
baseline runs of the same models, and the study of robustness against cost."""

from __future__ import annotations

from typing import Iterator

from reuse.methods.registry import Method, Study, register
from reuse.plan import (baseline_ckpt, baseline_seeds, checkpoint_epochs, resolve_epoch, run_path, trains_on,
                        unknown)


def _study_extra(config: dict, dataset: str) -> dict[str, list[str]]:
    """Every robust.json, and every adversarial run's run.json (its generation cost)."""
    return {"robust": ADV.robust_files(config, dataset),
            "run_files": [f"{ADV.run_dir(config, d, v, s)}/run.json" for d, v in ADV.variants(config) if d == dataset
                          for s in ADV.seeds(config)]}


def _study_params(config: dict) -> dict:
    return {"variants": config["adv"]["variants"]}


class Adversarial(Method):
    name = "adv"
    title = "adversarial examples recycled from past runs"
    stage = "reuse.methods.adversarial.stage:train"
    rules_file = "rules.smk"
    studies = (Study("adv", ("adv",), "reuse.methods.adversarial.stage:study", extra=_study_extra,
                     params=_study_params),)

    def variants(self, config: dict) -> Iterator[tuple[str, str]]:
        """Every (dataset, variant): the variant's datasets (whether its model trains there is a
        config problem, reported as such)."""
        for ds in config["datasets"]:
            for name, v in self.block(config).get("variants", {}).items():
                if ds in v.get("datasets", [ds]):
                    yield ds, name

    def example_stats(self, config: dict, name: str) -> bool:
        return False

    def perturbs_inputs(self, config: dict, name: str) -> tuple[str, str] | None:
        return "", "adversarial examples perturb inputs"

    # -- caches: built once per (dataset, cache) by this folder's rules.smk
    def caches(self, config: dict) -> list[tuple[str, str]]:
        """The (dataset, cache) pairs some variant trains with."""
        vs = self.block(config)["variants"]
        return list(dict.fromkeys((ds, vs[v]["cache"]) for ds, v in self.variants(config) if vs[v]["cache"] is not None))

    def cache_seeds(self, config: dict, cache: str) -> list[int]:
        """The baseline seeds whose runs a cache attacks: the first ``source.runs`` seeds."""
        return baseline_seeds(config)[: config["adv"]["caches"][cache]["source"]["runs"]]

    def cache_epoch(self, config: dict, cache: str) -> int:
        """The checkpoint epoch a cache attacks, ``last`` resolved."""
        src = config["adv"]["caches"][cache]["source"]
        return resolve_epoch(config, src["model"], src["epoch"])

    def cache_runs(self, config: dict, dataset: str, cache: str) -> list[str]:
        """The folders of the baseline runs a cache attacks."""
        model = config["adv"]["caches"][cache]["source"]["model"]
        return [run_path(dataset, model, seed=s) for s in self.cache_seeds(config, cache)]

    def cache_inputs(self, config: dict, dataset: str, cache: str) -> dict[str, list[str]]:
        model = config["adv"]["caches"][cache]["source"]["model"]
        seeds = self.cache_seeds(config, cache)
        return {"ckpts": [baseline_ckpt(config, dataset, model, s, self.cache_epoch(config, cache)) for s in seeds],
                "runs": [f"{r}/run.json" for r in self.cache_runs(config, dataset, cache)]}

    def inputs(self, config: dict, dataset: str, name: str, seed: int) -> dict[str, list[str]]:
        """``cache``: the recycled examples (none for an online variant); ``past_runs``: the run.json of
        the past runs the cache attacked."""
        cache = self.variant(config, name)["cache"]
        if cache is None:
            return {"cache": [], "past_runs": []}
        return {"cache": [f"{dataset}/adv/{cache}/adv.npz", f"{dataset}/adv/{cache}/meta.json"],
                "past_runs": self.cache_inputs(config, dataset, cache)["runs"]}

    # -- robust accuracy of every adversarial run and of the baseline runs of its models
    def robust_models(self, config: dict) -> list[tuple[str, str]]:
        """The (dataset, model) pairs whose baseline runs get a robust accuracy: the variants' models."""
        vs = self.block(config)["variants"]
        return list(dict.fromkeys((ds, vs[v]["model"]) for ds, v in self.variants(config)))

    def robust_files(self, config: dict, dataset: str) -> list[str]:
        base = [f"{run_path(d, m, seed=s)}/robust.json" for d, m in self.robust_models(config) if d == dataset
                for s in baseline_seeds(config)]
        return base + [f"{self.run_dir(config, d, v, s)}/robust.json" for d, v in self.variants(config) if d == dataset
                       for s in self.seeds(config)]

    def robust_checkpoint(self, config: dict, dataset: str, model: str, kind: str, seed: int | str) -> str:
        """The final checkpoint of a run whose robust accuracy is measured (``kind``: baseline or
        ``adv/<variant>``)."""
        if kind == "baseline":
            return baseline_ckpt(config, dataset, model, seed, "last")
        return f"{dataset}/{model}/{kind}/s{seed}/ckpt/last.pt"

    def targets(self, config: dict, dataset: str) -> list[str]:
        return self.robust_files(config, dataset)

    def problems(self, config: dict) -> list[str]:
        """Each problem names the key and the fix. (Whether an advprop model has BatchNorm is checked
        when its run starts.)"""
        adv, problems = config["adv"], []
        n_seeds = len(baseline_seeds(config))
        for name, c in adv["caches"].items():
            where, src = f"adv.caches.{name}", c["source"]
            if src["model"] not in config["models"]:
                problems.append(unknown(f"{where}.source.model", "model", src["model"], config["models"]))
                continue
            if src["runs"] > n_seeds:
                problems.append(f"{where}.source.runs: {src['runs']} past runs asked for, but baseline.seeds has "
                                f"{n_seeds}")
            epochs = checkpoint_epochs(config, src["model"])
            if src["epoch"] != "last" and src["epoch"] not in epochs:
                problems.append(f"{where}.source.epoch: {src['epoch']} is not a checkpoint epoch of '{src['model']}' "
                                f"{epochs}; add it to train.checkpoint_epochs or use last")
        for name, v in adv["variants"].items():
            where = f"adv.variants.{name}"
            if v["model"] not in config["models"]:
                problems.append(unknown(f"{where}.model", "model", v["model"], config["models"]))
                continue
            if (v["cache"] is None) == (v["online"] is None):
                problems.append(f"{where}: set exactly one of cache (recycled examples, a key of adv.caches) and "
                                "online (an attack run against the model itself every step)")
            if v["cache"] is not None and v["cache"] not in adv["caches"]:
                problems.append(unknown(f"{where}.cache", "cache in adv.caches", v["cache"], adv["caches"]))
            if v["use"] in ("mix", "advprop") and v["ratio"] == 0:
                problems.append(f"{where}.ratio: 0 makes no example adversarial; use a ratio in (0, 1]")
        if problems:
            return problems
        for ds, name in self.variants(config):
            v = adv["variants"][name]
            where = f"adv.variants.{name}"
            if not trains_on(config, v["model"], ds):
                problems.append(f"{where}: runs on dataset '{ds}', where model '{v['model']}' does not train "
                                f"(models.{v['model']}.datasets); set the variant's datasets")
            src = adv["caches"][v["cache"]]["source"]["model"] if v["cache"] is not None else None
            if src is not None:
                if ds not in adv["caches"][v["cache"]].get("datasets", [ds]):
                    problems.append(f"{where}: runs on dataset '{ds}' but cache '{v['cache']}' is not built there "
                                    f"(adv.caches.{v['cache']}.datasets)")
                elif not trains_on(config, src, ds):
                    problems.append(f"{where}: cache '{v['cache']}' attacks past runs of '{src}', which does not "
                                    f"train on dataset '{ds}'; set the variant's datasets")
        return problems


ADV = register(Adversarial())
