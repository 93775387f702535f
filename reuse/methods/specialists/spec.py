"""The ``specialists`` block: a past run (the generalist) plus specialist models on groups of classes
it confuses (Hinton, Vinyals, Dean 2015, section 5: 61 specialists on JFT). The groups come from
K-means on the covariance of the generalist's predictions on the training set; each specialist starts
from the generalist's weights, with a classifier over its group and a dustbin class, and trains on
data enriched for its group; on each test example, the specialists whose group meets the generalist's
top classes are combined with it by minimising a sum of KL divergences. The past run is named as a
warm start names it (``from``); the new run's model is the combination (its checkpoint is the
generalist's, so no other method may start from it)."""

from __future__ import annotations

from reuse.methods import registry
from reuse.methods.registry import Study, register
from reuse.methods.transfer.spec import class_count
from reuse.methods.weights.spec import Warm
from reuse.plan import deep_merge, late_milestones, recipe_for


def _params(config: dict) -> dict:
    return {"confidence": config["report"]["confidence"]}


def _extra(config: dict, dataset: str) -> dict[str, list[str]]:
    """Every specialists run's per-example predictions (``specialists.npz``) and run.json."""
    m = SPECIALISTS
    dirs = [m.run_dir(config, d, v, s) for d, v in m.variants(config) if d == dataset for s in m.seeds(config, v)]
    return {"specialist_predictions": [f"{r}/specialists.npz" for r in dirs],
            "specialist_runs": [f"{r}/run.json" for r in dirs]}


STUDY = Study("specialists", ("specialists",), "reuse.methods.specialists.stage:study", extra=_extra, params=_params,
              charts="reuse.methods.specialists.stage:charts")


class Specialists(Warm):
    name = "specialists"
    title = "a generalist and specialists on its confusable classes, combined (Hinton et al. 2015, JFT)"
    stage = "reuse.methods.specialists.stage:train"
    studies = (STUDY,)
    # the run's checkpoint is the generalist's; the run's predictions are the combination's
    plain_checkpoint = False

    def recipe(self, config: dict, name: str) -> dict:
        """The generalist's evaluation settings, with no training: the run trains its specialists itself
        (:meth:`specialist_recipe`)."""
        v = self.variant(config, name)
        return {**recipe_for(config, v["model"]), "epochs": 0, "checkpoint_epochs": [], "example_stats": False}

    def specialist_recipe(self, config: dict, name: str) -> dict:
        """Each specialist's recipe: the model's, with the variant's ``train`` over it; only a final state."""
        v = self.variant(config, name)
        r = deep_merge(recipe_for(config, v["model"]), v.get("train") or {})
        return {**r, "checkpoint_epochs": [], "example_stats": False, "eval_every": max(1, r["epochs"])}

    def example_stats(self, config: dict, name: str) -> bool:
        return False

    def source_methods(self, config: dict) -> list[str]:
        """Any past run that keeps a final checkpoint of one plain model: the baseline and the other methods."""
        return ["baseline"] + [m.name for m in registry.methods(config) if m.name != self.name and m.plain_checkpoint]

    def extra_outputs(self, config: dict, name: str) -> list[str]:
        """``specialists.npz``: per test example its target, the generalist's and the combination's
        log-probabilities, how many specialists cover its class and how many were active."""
        return ["specialists.npz"]

    def params(self, config: dict, dataset: str, name: str) -> dict:
        return {"specialist_recipe": self.specialist_recipe(config, name),
                "dataset_kind": config["datasets"][dataset]["kind"]}

    def problems(self, config: dict) -> list[str]:
        problems = super().problems(config)
        for name, v in self.block(config).get("variants", {}).items():
            where = f"specialists.variants.{name}"
            if v["model"] not in config["models"]:
                continue
            r = self.specialist_recipe(config, name)
            if r["schedule"]["name"] == "step":
                problems += late_milestones(f"{where}.train", r)
            if v["size"] is not None and v["groups"] * v["size"] < 2:
                problems.append(f"{where}.size: one group of one class is no specialist; raise groups or size")
            for ds in [d for d, n_ in self.variants(config) if n_ == name]:
                c = class_count(config["datasets"][ds])
                if c is None:
                    continue
                if v["groups"] > c:
                    problems.append(f"{where}.groups: {v['groups']} groups of the {c} classes of dataset '{ds}'; "
                                    f"set at most {c}")
                if v["size"] is not None and v["size"] >= c:
                    problems.append(f"{where}.size: a group of {v['size']} of the {c} classes of dataset '{ds}' "
                                    f"leaves its dustbin empty; set size below {c}")
                if v["top_n"] > c:
                    problems.append(f"{where}.top_n: {v['top_n']} exceeds the {c} classes of dataset '{ds}'")
        return list(dict.fromkeys(problems))


SPECIALISTS = register(Specialists())
