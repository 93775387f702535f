"""The ``bias`` block: shift some classes' biases of a past run's classifier by the value that is
best on the validation split (Hinton et al. 2015: the student that never saw a 3 recovers the 3s
once the 3's bias is raised), written as a new run with its own run.json. The past run is named as
a warm start names it (``from``: model, method, variant, epoch, seed); the new run does not train."""

from __future__ import annotations

from reuse.methods import registry
from reuse.methods.registry import Study, register
from reuse.methods.weights.spec import Warm
from reuse.plan import deep_merge, recipe_for

STUDY = Study("bias", ("bias",), "reuse.methods.bias.stage:study", charts="reuse.methods.bias.stage:charts")
MAX_COMBINATIONS = 200_000  # a per_class search's grid size ** classes, at most (the config check and search.py)


class Bias(Warm):
    name = "bias"
    title = "bias shifts of a past run's classifier, chosen on the validation split (Hinton et al. 2015)"
    stage = "reuse.methods.bias.stage:train"
    studies = (STUDY,)

    def recipe(self, config: dict, name: str) -> dict:
        """The model's recipe with no training: the shifted model is evaluated and written as it is."""
        v = self.variant(config, name)
        return {**deep_merge(recipe_for(config, v["model"]), v.get("train") or {}), "epochs": 0,
                "checkpoint_epochs": []}

    def source_methods(self, config: dict) -> list[str]:
        """Any past run that keeps a final checkpoint: the baseline and every other method."""
        return ["baseline"] + [m.name for m in registry.methods(config) if m.name != self.name and m.plain_checkpoint]

    def example_stats(self, config: dict, name: str) -> bool:
        return False

    def problems(self, config: dict) -> list[str]:
        problems = super().problems(config)
        for name, v in self.block(config).get("variants", {}).items():
            where = f"bias.variants.{name}"
            g = v["grid"]
            if not g["high"] > g["low"]:
                problems.append(f"{where}.grid: low {g['low']} must be below high {g['high']}")
            elif v["mode"] == "per_class" and v["classes"] != "all":
                n = int((g["high"] - g["low"]) / g["step"] + 1e-9) + 2
                if n ** len(v["classes"]) > MAX_COMBINATIONS:
                    problems.append(f"{where}.classes: a per_class search over {len(v['classes'])} classes of about "
                                    f"{n} grid values each is {n ** len(v['classes'])} combinations (at most "
                                    f"{MAX_COMBINATIONS}); use mode: shared, fewer classes or a coarser grid.step")
            if v["mode"] == "per_class" and v["classes"] == "all":
                problems.append(f"{where}.classes: mode per_class searches every combination of the listed "
                                "classes' shifts; list the classes (a few), or use mode: shared")
            if v["classes"] != "all" and len(set(v["classes"])) != len(v["classes"]):
                problems.append(f"{where}.classes: {v['classes']} lists a class twice")
            for ds in [d for d, n_ in self.variants(config) if n_ == name]:
                if not config["datasets"][ds].get("holdout"):
                    problems.append(f"{where}: the shift is chosen on held-out examples (never on test), but dataset "
                                    f"'{ds}' holds none out; set datasets.{ds}.holdout (e.g. 10% of the training set)")
                    break
        return problems


BIAS = register(Bias())
