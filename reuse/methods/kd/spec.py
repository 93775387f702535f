"""The ``kd`` block: distillation from past baseline runs' logit caches (or, ``online``, their
checkpoints). Each variant trains a student (``model``) per seed; the teachers of student seed s are
the ``teacher.runs`` baseline seeds that follow s, cyclically, with s itself last."""

from __future__ import annotations

from reuse.methods.registry import Method, register
from reuse.plan import (baseline_seeds, cache_files, checkpoint_epochs, cyclic_from, late_milestones, no_model,
                        run_path)


class KD(Method):
    name = "kd"
    title = "knowledge distillation from past runs' logit caches"
    stage = "reuse.methods.kd.stage:train"
    input_fix = "use checkpoint MixUp or none"

    def needs_models(self, config: dict, name: str) -> list[str]:
        v = self.variant(config, name)
        return [v["model"], v["teacher"]["model"]]

    def final_checkpoint(self, config: dict, name: str) -> tuple[int, str]:
        epochs = self.recipe(config, name)["epochs"]
        return epochs, f"e{epochs}.pt"

    def example_stats(self, config: dict, name: str) -> bool:
        return False

    def perturbs_inputs(self, config: dict, name: str) -> tuple[str, str] | None:
        if (self.variant(config, name).get("mixup") or {}).get("kind") == "input":
            return "mixup", "input MixUp mixes inputs"
        return None

    def teacher_seeds(self, config: dict, name: str, seed: int) -> list[int]:
        """The baseline seeds whose runs teach the student of ``seed``."""
        return cyclic_from(baseline_seeds(config), seed, self.variant(config, name)["teacher"]["runs"])

    def teacher_epochs(self, config: dict, name: str) -> list[int]:
        """The teacher checkpoint epochs: one, or two for checkpoint MixUp; ``last`` resolved."""
        v = self.variant(config, name)
        last = checkpoint_epochs(config, v["teacher"]["model"])[-1]
        mixup = v.get("mixup") or {}
        epochs = mixup["epochs"] if mixup.get("kind") == "checkpoint" else [v["teacher"]["epoch"]]
        return [last if e == "last" else e for e in epochs]

    def inputs(self, config: dict, dataset: str, name: str, seed: int) -> dict[str, list[str]]:
        """``teachers``: each teacher run's run.json, then its logit caches (or, online, checkpoints)."""
        v = self.variant(config, name)
        dirs = [run_path(dataset, v["teacher"]["model"], seed=s) for s in self.teacher_seeds(config, name, seed)]
        epochs = self.teacher_epochs(config, name)
        files = [f"{d}/run.json" for d in dirs]
        if v["online"]:
            return {"teachers": files + [f"{d}/ckpt/e{e}.pt" for d in dirs for e in epochs]}
        return {"teachers": files + [f for d in dirs for e in epochs for f in cache_files(config, f"{d}/logits/e{e}")]}

    def params(self, config: dict, dataset: str, name: str) -> dict:
        return {"teacher_epochs": self.teacher_epochs(config, name)}

    def problems(self, config: dict) -> list[str]:
        problems = []
        n_seeds = len(baseline_seeds(config))
        for name, v in self.block(config).get("variants", {}).items():
            where = f"kd.variants.{name}"
            t = v["teacher"]
            bad = [p for p in (no_model(f"{where}.model", v["model"], config),
                               no_model(f"{where}.teacher.model", t["model"], config)) if p]
            problems += bad
            if bad:
                continue
            epochs = checkpoint_epochs(config, t["model"])
            mixup = v.get("mixup") or {}
            for key, e in [("teacher.epoch", t["epoch"])] + [("mixup.epochs", e) for e in mixup.get("epochs", [])]:
                if e != "last" and e not in epochs:
                    problems.append(f"{where}.{key}: teacher epoch {e} is not a checkpoint epoch of '{t['model']}' "
                                    f"{epochs}; add it to the model's checkpoint_epochs or use last")
            if t["runs"] > n_seeds:
                problems.append(f"{where}.teacher.runs: {t['runs']} past runs asked for, but baseline.seeds has "
                                f"{n_seeds}")
            if v["mode"] != "single" and t["runs"] < 2:
                problems.append(f"{where}: mode {v['mode']} needs teacher.runs >= 2")
            if mixup.get("kind") == "checkpoint" and len(mixup.get("epochs", [])) != 2:
                problems.append(f"{where}.mixup.epochs: checkpoint MixUp needs two teacher epochs")
            if v["online"] and (v["mode"] != "single" or mixup):
                problems.append(f"{where}: an online teacher is a single run without MixUp; set mode: single and "
                                "drop mixup, or online: false")
            if mixup.get("kind") == "checkpoint" and v["mode"] != "single":
                problems.append(f"{where}: checkpoint MixUp uses one past run (mode: single)")
            problems += late_milestones(f"{where}.train", self.recipe(config, name))
        return problems


register(KD())
