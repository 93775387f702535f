"""The ``toy`` block: per-example loss weights from a past baseline run's confidence in the true
class (a test plugin: one folder, one ``plugins`` line in the config)."""

from __future__ import annotations

from reuse.methods.registry import Method, register
from reuse.plan import baseline_seeds, cache_files, checkpoint_epochs, cyclic_from, run_path


class Toy(Method):
    name = "toy"
    title = "loss weights from a past run's confidence (test plugin)"
    stage = "tests.workflow.toy_method.stage:train"

    def needs_models(self, config: dict, name: str) -> list[str]:
        v = self.variant(config, name)
        return [v["model"], v["past"]]

    def inputs(self, config: dict, dataset: str, name: str, seed: int) -> dict[str, list[str]]:
        """``past``: the run.json and final logit cache of the baseline run of the next seed."""
        past = self.variant(config, name)["past"]
        d = run_path(dataset, past, seed=cyclic_from(baseline_seeds(config), seed, 1)[0])
        last = checkpoint_epochs(config, past)[-1]
        return {"past": [f"{d}/run.json", *cache_files(config, f"{d}/logits/e{last}")]}

    def problems(self, config: dict) -> list[str]:
        problems = super().problems(config)
        for name, v in self.block(config).get("variants", {}).items():
            if v["strength"] > 4:
                problems.append(f"toy.variants.{name}.strength: {v['strength']} would drown the easy examples; use "
                                "at most 4")
        return problems


register(Toy())
