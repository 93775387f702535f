"""The ``warm``, ``soup`` and ``averaging`` blocks: reusing past runs' weights. A warm start begins
from a past run's checkpoint (plain or shrink-and-perturb, on the same or a changed recipe); a soup
averages the final weights of warm-started runs that share a starting point (uniform, or greedy by
held-out accuracy); weight averaging (SWA, EMA) averages one run's own weights along training. The
three share the study ``studies/warm.csv``."""

from __future__ import annotations

from typing import Iterator

from reuse.methods import registry
from reuse.methods.registry import Method, Study, register
from reuse.plan import (BASELINE, baseline_seeds, checkpoint_epochs, cyclic_from, datasets_of, deep_merge, no_model,
                        recipe_for, run_path, trains_on, unknown)

def _soup_runs(config: dict, dataset: str) -> dict[str, list[str]]:
    """Every soup run's run.json (its ingredients' accuracies)."""
    return {"soup_runs": [f"{SOUP.run_dir(config, d, v, s)}/run.json" for d, v in SOUP.variants(config) if d == dataset
                          for s in SOUP.seeds(config)]}


OWN = ("warm", "soup")  # this folder's methods whose runs start from past runs' weights

STUDY = Study("warm", ("warm", "soup", "averaging"), "reuse.methods.weights.stage:study", extra=_soup_runs)


def _same_arch_problem(where: str, config: dict, model: str, past: str, what: str) -> str | None:
    new, old = config["models"][model], config["models"][past]
    if (new["arch"], new.get("args", {})) == (old["arch"], old.get("args", {})):
        return None
    return (f"{where}: model '{model}' ({new['arch']} {new.get('args', {})}) and {what} '{past}' ({old['arch']} "
            f"{old.get('args', {})}) differ in architecture; a warm start needs the same arch and args")


class Warm(Method):
    name = "warm"
    title = "warm starts from a past run's checkpoint (plain, shrink-and-perturb)"
    stage = "reuse.methods.weights.stage:train_warm"
    studies = (STUDY,)

    def recipe(self, config: dict, name: str) -> dict:
        """The model's recipe with the variant's ``train`` over it; only the final checkpoint is kept."""
        v = self.variant(config, name)
        return {**deep_merge(recipe_for(config, v["model"]), v["train"]), "checkpoint_epochs": []}

    def source_methods(self, config: dict) -> list[str]:
        """The methods a warm start may start from: baseline and every registered method whose final
        checkpoint is a plain model (``plain_checkpoint``) but the ones of this folder, whose runs
        themselves start from warm starts."""
        return [BASELINE] + [m.name for m in registry.methods(config) if m.name not in OWN and m.plain_checkpoint]

    def source_on(self, config: dict, f: dict, dataset: str) -> bool:
        """Whether the past runs ``from`` names exist on ``dataset`` (never for a method it may not name)."""
        if f["method"] == BASELINE:
            return trains_on(config, f["model"], dataset)
        if f["method"] not in self.source_methods(config):
            return False
        return (dataset, f["variant"]) in set(registry.get(f["method"], config).variants(config))

    def variants(self, config: dict) -> Iterator[tuple[str, str]]:
        for name, v in self.block(config).get("variants", {}).items():
            if v["model"] not in config["models"] or v["from"]["model"] not in config["models"]:
                continue
            for ds in datasets_of(config, v, v["model"]):
                if self.source_on(config, v["from"], ds):
                    yield ds, name

    def source(self, config: dict, name: str, dataset: str, seed: int) -> dict:
        """The past run the warm start of ``seed`` starts from: ``run`` (its folder, relative to the
        results folder), ``ckpt`` (its checkpoint file) and ``seed``. By default the past seed is the
        one that follows ``seed`` among the past method's seeds, cyclically (as a KD teacher is chosen)."""
        f = self.variant(config, name)["from"]
        if f["method"] == BASELINE:
            seeds = baseline_seeds(config)
            epochs = checkpoint_epochs(config, f["model"])
            ckpt = f"e{epochs[-1] if f['epoch'] == 'last' else f['epoch']}.pt"
        else:
            past = registry.get(f["method"], config)
            seeds = past.seeds(config)
            ckpt = past.final_checkpoint(config, f["variant"])[1]
        seed_ = f["seed"] if f["seed"] is not None else cyclic_from(seeds, seed, 1)[0]
        folder = (run_path(dataset, f["model"], seed=seed_) if f["method"] == BASELINE else
                  registry.get(f["method"], config).run_dir(config, dataset, f["variant"], seed_))
        return {"run": folder, "ckpt": f"{folder}/ckpt/{ckpt}", "seed": seed_}

    def inputs(self, config: dict, dataset: str, name: str, seed: int) -> dict[str, list[str]]:
        """``past``: the past run's checkpoint and its run.json."""
        src = self.source(config, name, dataset, seed)
        return {"past": [src["ckpt"], f"{src['run']}/run.json"]}

    def problems(self, config: dict) -> list[str]:
        problems = []
        for name, v in self.block(config).get("variants", {}).items():
            where, f = f"{self.name}.variants.{name}", v["from"]
            bad = [p for p in (no_model(f"{where}.model", v["model"], config),
                               no_model(f"{where}.from.model", f["model"], config)) if p]
            problems += bad
            if bad:
                continue
            problems += [p for p in [_same_arch_problem(where, config, v["model"], f["model"], "from.model")] if p]
            if f["method"] == BASELINE:
                if f["variant"] is not None:
                    problems.append(f"{where}.from.variant: a baseline run has no variant; remove it")
                epochs = checkpoint_epochs(config, f["model"])
                if f["epoch"] != "last" and f["epoch"] not in epochs:
                    problems.append(f"{where}.from.epoch: {f['epoch']} is not a checkpoint epoch of '{f['model']}' "
                                    f"{epochs}; add it to the model's checkpoint_epochs or use last")
                seeds = baseline_seeds(config)
            else:
                names = self.source_methods(config)
                if f["method"] not in names:
                    problems.append(unknown(f"{where}.from.method", "method to start from", f["method"], names))
                    continue
                past_m = registry.get(f["method"], config)
                past = past_m.block(config).get("variants", {})
                if f["variant"] is None:
                    problems.append(f"{where}.from.variant: a {f['method']} run is named by its variant; set it to one "
                                    f"of {', '.join(past) or 'none (add one under ' + f['method'] + '.variants)'}")
                    continue
                if f["variant"] not in past:
                    problems.append(unknown(f"{where}.from.variant", f"{f['method']} variant", f["variant"], past))
                    continue
                trains = past_m.model(config, f["variant"])
                if trains != f["model"]:
                    problems.append(f"{where}.from.model: {f['method']} variant '{f['variant']}' trains '{trains}', "
                                    f"not '{f['model']}'")
                if f["epoch"] != "last":
                    problems.append(f"{where}.from.epoch: only baseline runs keep intermediate checkpoints; use `last`")
                seeds = past_m.seeds(config)
            if f["seed"] is not None and f["seed"] not in seeds:
                problems.append(f"{where}.from.seed: {f['seed']} is not a seed of the past runs {seeds}")
        return list(dict.fromkeys(problems))


class Soup(Method):
    name = "soup"
    title = "model soups of warm-started runs (uniform, greedy)"
    stage = "reuse.methods.weights.stage:train_soup"
    studies = (STUDY,)

    def variants(self, config: dict) -> Iterator[tuple[str, str]]:
        warm = set(WARM.variants(config))
        for name, v in self.block(config).get("variants", {}).items():
            if v["model"] not in config["models"]:
                continue
            for ds in datasets_of(config, v, v["model"]):
                if (ds, v["ingredients"]["variant"]) in warm:
                    yield ds, name

    def example_stats(self, config: dict, name: str) -> bool:
        return False

    def ingredient_seeds(self, config: dict, name: str, seed: int) -> list[int]:
        """The seeds of the warm runs in the soup of ``seed``: ``runs`` of the warm seeds, cyclically
        from ``seed`` (so the soups of different seeds differ)."""
        return cyclic_from(WARM.seeds(config), seed, self.variant(config, name)["ingredients"]["runs"],
                           skip_own=False)

    def ingredient_runs(self, config: dict, dataset: str, name: str, seed: int) -> list[str]:
        warm = self.variant(config, name)["ingredients"]["variant"]
        return [WARM.run_dir(config, dataset, warm, s) for s in self.ingredient_seeds(config, name, seed)]

    def inputs(self, config: dict, dataset: str, name: str, seed: int) -> dict[str, list[str]]:
        """``ingredients``: each ingredient run's final checkpoint and run.json."""
        return {"ingredients": [f"{r}/{f}" for r in self.ingredient_runs(config, dataset, name, seed)
                                for f in ("ckpt/last.pt", "run.json")]}

    def problems(self, config: dict) -> list[str]:
        problems = []
        warm = config["warm"]["variants"]
        for name, v in self.block(config).get("variants", {}).items():
            where, ing = f"soup.variants.{name}", v["ingredients"]
            bad = no_model(f"{where}.model", v["model"], config)
            if bad:
                problems.append(bad)
                continue
            if ing["variant"] not in warm:
                problems.append(unknown(f"{where}.ingredients.variant", "warm variant", ing["variant"], warm) +
                                ("" if warm else "; add it under warm.variants"))
                continue
            w = warm[ing["variant"]]
            if w["model"] != v["model"]:
                problems.append(f"{where}.model: the ingredients (warm variant '{ing['variant']}') train "
                                f"'{w['model']}', not '{v['model']}'")
            n = len(WARM.seeds(config))
            if ing["runs"] > n:
                problems.append(f"{where}.ingredients.runs: {ing['runs']} runs asked for, but warm has {n} seeds")
            if ing["runs"] > 1 and w["from"]["seed"] is None:
                problems.append(f"{where}.ingredients: the runs of warm variant '{ing['variant']}' start from "
                                "different past runs (its from.seed is null), so their weights lie in different "
                                "basins and their average fails; set "
                                f"warm.variants.{ing['variant']}.from.seed to one past run's seed")
            if v["recipe"] == "greedy":
                for ds in [d for d, n_ in self.variants(config) if n_ == name]:
                    if not config["datasets"][ds].get("holdout"):
                        problems.append(f"{where}.recipe: a greedy soup chooses ingredients by held-out accuracy, but "
                                        f"dataset '{ds}' holds no examples out; set datasets.{ds}.holdout (e.g. 10% "
                                        "of the training set) or use recipe: uniform")
                        break
        return problems


class Averaging(Method):
    name = "averaging"
    title = "weight averaging along a run from scratch (SWA, EMA)"
    stage = "reuse.methods.weights.stage:train_averaging"
    studies = (STUDY,)


WARM = register(Warm())
SOUP = register(Soup())
AVERAGING = register(Averaging())
