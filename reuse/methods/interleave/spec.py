"""The ``interleave`` block: interleaving learning (Ban & Xie 2021, arXiv 2103.07018).

K tasks (groups of the dataset's classes) share one encoder, each with a head of its own. An
interleaved run of R rounds hands the encoder from task to task: task 1 trains it (and its head) for
a turn, then task 2 from where task 1 left it, ..., then task 1 again, R times. Its baselines spend
the same optimisation steps: blocked training (R = 1), joint multi-task training (every step's loss
sums the tasks') and K independent models. The block names the tasks and the steps every run
takes; each variant is a schedule (``interleaved`` with its ``rounds``, ``joint``, ``independent``)
and a model. Every run trains all K tasks: each variant x seed is one job,
``<dataset>/<model>/interleave/<variant>/s<seed>``.
"""

from __future__ import annotations

from typing import Iterator

from reuse.methods.interleave import tasks as tk
from reuse.methods.registry import Method, Study, register
from reuse.plan import datasets_of

# recipe keys the interleaving loop has no use for (its length is `steps`; it checkpoints after every turn)
IGNORED = {"epochs": "the run's length is interleave.steps, the same for every variant",
           "compile": "the interleaving loop runs eagerly",
           "example_stats": "the interleaving loop records no per-example statistics",
           "checkpoint_epochs": "the interleaving loop keeps the final state only",
           "data_on_device": "the interleaving loop builds batches on the host",
           "drop_last": "every task's stream of batches keeps its epochs' short last batch",
           "eval_every": "every task is evaluated after every turn",
           "checkpoint_every": "the interleaving loop checkpoints after every turn"}


class Interleave(Method):
    name = "interleave"
    title = "interleaving learning: tasks take turns training a shared encoder (against blocked, joint, independent)"
    stage = "reuse.methods.interleave.stage:train"
    on_frontier = False  # task-aware accuracies of class groups, not the dataset's whole task
    plain_checkpoint = False  # ckpt/last.pt: the shared encoder and every task's head

    def tasks(self, config: dict) -> dict[str, list[int]]:
        """The tasks by name, each its classes (a preset resolved)."""
        return tk.resolve(self.block(config)["tasks"])

    def variant(self, config: dict, name: str) -> dict:
        """The variant as written, with what its runs share from the block (``steps``, the tasks'
        names), as run.json records it."""
        v = dict(self.block(config)["variants"][name])
        if v.get("schedule", "interleaved") != "interleaved":
            v.pop("rounds", None)
        return {**v, "steps": self.block(config)["steps"], "task_names": list(self.tasks(config))}

    def model(self, config: dict, name: str) -> str:
        return self.block(config)["variants"][name]["model"]

    def variants(self, config: dict) -> Iterator[tuple[str, str]]:
        if "tasks" not in self.block(config):  # no block (the schema's defaults fill the rest)
            return iter(())
        return super().variants(config)

    def recipe(self, config: dict, name: str) -> dict:
        return {**super().recipe(config, name), "checkpoint_epochs": []}

    def example_stats(self, config: dict, name: str) -> bool:
        return False

    def params(self, config: dict, dataset: str, name: str) -> dict:
        """The tasks (name: classes) and the schedule of the variant's runs."""
        v = self.block(config)["variants"][name]
        return {"tasks": self.tasks(config), "kind": v["schedule"], "rounds": v["rounds"],
                "steps": self.block(config)["steps"]}

    def runs_json(self, config: dict, dataset: str) -> dict[str, list[str]]:
        """Every run.json of the block on ``dataset`` (the studies' extra input)."""
        return {"runs_json": [f"{self.run_dir(config, d, v, s)}/run.json" for d, v in self.variants(config)
                              if d == dataset for s in self.seeds(config)]}

    def problems(self, config: dict) -> list[str]:
        b = self.block(config)
        variants = b.get("variants", {})
        if not variants:
            return []
        if "tasks" not in b:
            return ["interleave.tasks: missing; the tasks every variant trains, e.g. {low: [0, 1, 2, 3, 4], "
                    "high: [5, 6, 7, 8, 9]} (reuse/methods/interleave/README.md)"]
        out = super().problems(config)  # each variant's model
        kinds = {ds: config["datasets"][ds]["kind"] for name, v in variants.items() if v["model"] in config["models"]
                 for ds in datasets_of(config, v, v["model"])}
        out += tk.problems("interleave.tasks", b["tasks"], kinds)
        if isinstance(b["tasks"], str) and b["tasks"] not in tk.PRESETS:
            return out
        k = len(self.tasks(config))
        per_task = b["steps"] // k
        if per_task < 1:
            out.append(f"interleave.steps: {b['steps']} steps leave none to some of the {k} tasks; give at least {k}")
        for name, v in variants.items():
            where = f"interleave.variants.{name}"
            if v["schedule"] != "interleaved" and v["rounds"] != 1:
                out.append(f"{where}.rounds: {v['schedule']} training takes no rounds; remove it")
            elif per_task >= 1 and v["rounds"] > per_task:
                out.append(f"{where}.rounds: {v['rounds']} rounds need {v['rounds']} turns per task, but a task "
                           f"gets {per_task} of the {b['steps']} steps; lower the rounds or raise interleave.steps")
            if v["schedule"] == "joint" and self.recipe(config, name)["batch_size"] < k:
                out.append(f"{where}: joint training splits each batch among the {k} tasks, but batch_size is "
                           f"{self.recipe(config, name)['batch_size']}; raise {where}.train.batch_size to {k} or more")
            for key, why in IGNORED.items():
                if key in (v.get("train") or {}):
                    out.append(f"{where}.train.{key}: not used ({why}); remove it")
        return out


def _study_params(config: dict) -> dict:
    return {"confidence": config["report"]["confidence"]}


INTERLEAVE = register(Interleave())
# interleave.csv: per variant and task (and their mean), accuracy, forgetting and cost over the seeds;
# interleave_turns.csv: per variant, turn and task, the accuracy of the task's head after the turn.
INTERLEAVE.studies = (
    Study("interleave", ("interleave",), "reuse.methods.interleave.stage:study", extra=INTERLEAVE.runs_json,
          params=_study_params, charts="reuse.methods.interleave.charts:study_charts"),
    Study("interleave_turns", ("interleave",), "reuse.methods.interleave.stage:turns_study",
          extra=INTERLEAVE.runs_json, params=_study_params, charts="reuse.methods.interleave.charts:turn_charts"),
)

__all__ = ["INTERLEAVE", "Interleave"]
