"""The ``kd`` block: distillation from past baseline runs' logit caches (or, ``online``, their
checkpoints), or from a method's runs (``teacher.method`` and ``variant``: the caches of their final
checkpoints, written by ``rules.smk``). Each variant trains a student (``model``) per seed; the
teachers of student seed s are the ``teacher.runs`` seeds (baseline's, or the method's) that follow
s, cyclically, with s itself last."""

from __future__ import annotations

from reuse.methods.kd.separability import STUDIES as SEPARABILITY
from reuse.methods import registry
from reuse.methods.registry import Method, register
from reuse.plan import (BASELINE, TREE_ARCHS, baseline_seeds, cache_files, checkpoint_epochs, cyclic_from,
                        late_milestones, no_model, run_path, unknown)


class KD(Method):
    name = "kd"
    title = "knowledge distillation from past runs' logit caches"
    stage = "reuse.methods.kd.stage:train"
    input_fix = "use checkpoint MixUp or none"
    rules_file = "rules.smk"  # the logit caches of method runs that teach (``teacher.method``)
    studies = SEPARABILITY  # the separability sweep, on clusters data sets only (separability.py)

    def needs_models(self, config: dict, name: str) -> list[str]:
        v = self.variant(config, name)
        return [v["model"], v["teacher"]["model"]]

    def cached_models(self, config: dict, name: str) -> list[str]:
        """The teacher: read through its logit caches, so it may be a tree model (``online`` is refused
        for one in :meth:`problems`)."""
        return [self.variant(config, name)["teacher"]["model"]]

    def final_checkpoint(self, config: dict, name: str) -> tuple[int, str]:
        epochs = self.recipe(config, name)["epochs"]
        return epochs, f"e{epochs}.pt"

    def example_stats(self, config: dict, name: str) -> bool:
        return False

    def perturbs_inputs(self, config: dict, name: str) -> tuple[str, str] | None:
        if (self.variant(config, name).get("mixup") or {}).get("kind") == "input":
            return "mixup", "input MixUp mixes inputs"
        return None

    def teacher_method(self, config: dict, name: str) -> Method | None:
        """The method whose runs teach (``teacher.method``), None for baseline runs."""
        m = self.variant(config, name)["teacher"]["method"]
        return None if m == BASELINE else registry.get(m, config)

    def source_methods(self, config: dict) -> list[str]:
        """What may teach: baseline runs, or any registered method's runs whose final checkpoint is a plain model."""
        return [BASELINE] + [m.name for m in registry.methods(config) if m.plain_checkpoint]

    def teacher_seeds(self, config: dict, name: str, seed: int) -> list[int]:
        """The seeds of the past runs (baseline's, or ``teacher.method``'s) that teach the student of ``seed``."""
        t, past = self.variant(config, name)["teacher"], self.teacher_method(config, name)
        seeds = baseline_seeds(config) if past is None else past.seeds(config, t["variant"])
        return cyclic_from(seeds, seed, t["runs"])

    def teacher_dirs(self, config: dict, dataset: str, name: str, seed: int) -> list[str]:
        """The teacher runs' folders (relative to the results folder) of the student of ``seed``."""
        t, past = self.variant(config, name)["teacher"], self.teacher_method(config, name)
        return [run_path(dataset, t["model"], seed=s) if past is None else past.run_dir(config, dataset, t["variant"], s)
                for s in self.teacher_seeds(config, name, seed)]

    def teacher_caches(self, config: dict, name: str) -> list[str]:
        """The cache folders of a teacher run that a student reads, relative to the run: ``logits/e<epoch>``
        of a baseline run, ``logits/final`` (its final checkpoint's) of a method run."""
        if self.teacher_method(config, name) is not None:
            return ["logits/final"]
        return [f"logits/e{e}" for e in self.teacher_epochs(config, name)]

    def method_teachers(self, config: dict) -> list[tuple[str, str, str]]:
        """Every (dataset, method, variant) whose runs teach a kd variant: their caches need a rule."""
        out = []
        for ds, name in self.variants(config):
            past = self.teacher_method(config, name)
            if past is not None:
                out.append((ds, past.name, self.variant(config, name)["teacher"]["variant"]))
        return list(dict.fromkeys(out))

    def variants(self, config: dict):
        """The (dataset, variant) pairs: where the student and teacher models train and, for a method
        teacher, where that method has runs of its variant."""
        for ds, name in super().variants(config):
            t = self.variant(config, name)["teacher"]
            if t["method"] == BASELINE:
                yield ds, name
            elif t["method"] in self.source_methods(config) and (t["method"], t["variant"]) != (self.name, name):
                past = registry.get(t["method"], config)
                # a kd teacher's own datasets are listed without following its teacher (no recursion)
                pairs = Method.variants(past, config) if past is self else past.variants(config)
                if (ds, t["variant"]) in set(pairs):
                    yield ds, name

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
        dirs = self.teacher_dirs(config, dataset, name, seed)
        epochs = self.teacher_epochs(config, name)
        files = [f"{d}/run.json" for d in dirs]
        if v["online"]:
            return {"teachers": files + [f"{d}/ckpt/e{e}.pt" for d in dirs for e in epochs]}
        return {"teachers": files + [f for d in dirs for c in self.teacher_caches(config, name)
                                     for f in cache_files(config, f"{d}/{c}")]}

    def params(self, config: dict, dataset: str, name: str) -> dict:
        return {"teacher_epochs": self.teacher_epochs(config, name), "teacher_caches": self.teacher_caches(config, name)}

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
            if t["method"] != BASELINE:
                problems += self._method_teacher_problems(config, name)
            elif t["variant"] is not None:
                problems.append(f"{where}.teacher.variant: a baseline run has no variant; remove it, or set "
                                "teacher.method")
            elif t["runs"] > n_seeds:
                problems.append(f"{where}.teacher.runs: {t['runs']} past runs asked for, but baseline.seeds has "
                                f"{n_seeds}")
            if v["mode"] != "single" and t["runs"] < 2:
                problems.append(f"{where}: mode {v['mode']} needs teacher.runs >= 2")
            if mixup.get("kind") == "checkpoint" and len(mixup.get("epochs", [])) != 2:
                problems.append(f"{where}.mixup.epochs: checkpoint MixUp needs two teacher epochs")
            if v["online"] and config["models"][t["model"]]["arch"] in TREE_ARCHS:
                problems.append(f"{where}.online: teacher '{t['model']}' is a gradient-boosted tree model, which has "
                                "no network checkpoint to run online; set online: false (its logit cache)")
            if v["online"] and (v["mode"] != "single" or mixup):
                problems.append(f"{where}: an online teacher is a single run without MixUp; set mode: single and "
                                "drop mixup, or online: false")
            if mixup.get("kind") == "checkpoint" and v["mode"] != "single":
                problems.append(f"{where}: checkpoint MixUp uses one past run (mode: single)")
            problems += late_milestones(f"{where}.train", self.recipe(config, name))
        return problems

    def _method_teacher_problems(self, config: dict, name: str) -> list[str]:
        """A teacher of ``method`` runs: a method whose runs keep a plain final checkpoint, a variant of
        it that trains the teacher model, enough of its seeds, and no intermediate epoch, MixUp of
        checkpoints or online teacher (a method run keeps its final checkpoint only)."""
        v = self.variant(config, name)
        where, t = f"kd.variants.{name}.teacher", v["teacher"]
        names = self.source_methods(config)
        if t["method"] not in names:
            return [unknown(f"{where}.method", "method whose runs can teach", t["method"], names)]
        past = registry.get(t["method"], config)
        variants = past.block(config).get("variants", {})
        if t["variant"] is None:
            return [f"{where}.variant: a {t['method']} run is named by its variant; set it to one of "
                    f"{', '.join(variants) or 'none (add one under ' + t['method'] + '.variants)'}"]
        if t["variant"] not in variants:
            return [unknown(f"{where}.variant", f"{t['method']} variant", t["variant"], variants)]
        if (t["method"], t["variant"]) == (self.name, name):
            return [f"{where}: the variant cannot teach itself; name another variant"]
        problems = []
        trains = past.model(config, t["variant"])
        if trains != t["model"]:
            problems.append(f"{where}.model: {t['method']} variant '{t['variant']}' trains '{trains}', not "
                            f"'{t['model']}'")
        n = len(past.seeds(config, t["variant"]))
        if t["runs"] > n:
            problems.append(f"{where}.runs: {t['runs']} past runs asked for, but {t['method']} variant "
                            f"'{t['variant']}' has {n} seeds")
        if t["epoch"] != "last" or (v.get("mixup") or {}).get("kind") == "checkpoint" or v["online"]:
            problems.append(f"kd.variants.{name}: a {t['method']} run teaches through the logit cache of its final "
                            "checkpoint only: use teacher.epoch: last, no checkpoint MixUp and online: false")
        return problems


register(KD())
