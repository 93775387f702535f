"""The ``search`` and ``retrain`` blocks: sequences of runs in which each run may reuse the runs
before it (Liu et al. 2023).

``search``: a hyperparameter search of ``trials`` trials of one model, proposed by Optuna and run in
order, once per policy (how a trial reuses the earlier ones) and per seed (a repeat of the whole
search). Trial k of a policy is the run ``<dataset>/<model>/search/<policy>_t<k>/s<seed>``; its
inputs are the earlier trials' files, so the DAG is the sequence.

``retrain``: the training set arrives in parts; after each part a model is retrained, once per policy
and seed. Step s is the run ``<dataset>/<model>/retrain/<policy>_p<s>/s<seed>``, whose inputs are the
previous steps' files. A policy with ``equal_cost: <policy>`` is that policy's like-for-like comparator:
at step s one run from scratch on all data so far, trained on exactly as many examples as ``<policy>``
trained on in its steps 1..s (so its training FLOPs equal that policy's cumulative training FLOPs);
its inputs are those steps' run.json. ``steps: last`` runs a policy at the last step only.
"""

from __future__ import annotations

import difflib
import json
from typing import Iterator

from reuse.methods.registry import Method, Study, register
from reuse.methods.sequences import space as sp
from reuse.plan import block_seeds, datasets_of, deep_merge, no_model, recipe_for, run_path


def cache_files(prefix: str) -> list[str]:
    """The files of a sequence run's logit cache: the dense clean-input logits only (what a later
    run of the sequence reads; fewer files for Snakemake to stage and check)."""
    return [f"{prefix}/logits.npy", f"{prefix}/meta.json"]


def _block_problems(m: Method, config: dict) -> list[str]:
    """Problems every sequence block shares: its model, repeats and the datasets' validation split."""
    b = m.block(config)
    if not any(k in b for k in m.required):  # no sequence declared (the schema's defaults fill the rest)
        return []
    missing = [k for k in m.required if k not in b]
    if missing:
        return [f"{m.name}: {', '.join(missing)} missing; a {m.name} block names its {', '.join(m.required)} "
                f"(docs/usage.md)"]
    out = []
    if p := no_model(f"{m.name}.model", b["model"], config):
        return [p]
    seeds = b.get("seeds")
    if seeds is not None and len(seeds) < 1:
        out.append(f"{m.name}.seeds: a sequence needs at least one repeat; list one seed or more (or null for "
                   "the baseline seeds)")
    for ds in datasets_of(config, b) if m.needs_val else ():
        if not config["datasets"][ds].get("holdout") and not b.get("holdout"):
            out.append(f"{m.name}: dataset '{ds}' has no validation split, and the sequence chooses and judges its "
                       f"models on it (never on test); set {m.name}.holdout (examples the {m.name} holds out of the "
                       f"training split) or datasets.{ds}.holdout, or list other {m.name}.datasets")
    return out


class Sequence(Method):
    """A sequence method: variants are ``<policy>_<step mark><step>``, generated from ``policies``."""

    mark = "t"
    scenario = ""
    step_word = "steps"  # what the report calls the steps in sentences
    required: tuple[str, ...] = ("model", "policies")
    needs_val = False  # whether the runs are chosen on the validation split

    def steps(self, config: dict) -> list[int]:
        raise NotImplementedError

    def policy_steps(self, config: dict, policy: str) -> list[int]:
        """The steps at which ``policy`` runs (every step unless the policy says otherwise)."""
        return self.steps(config)

    def step_name(self, policy: str, step: int) -> str:
        return f"{policy}_{self.mark}{step:02d}"

    def split(self, name: str) -> tuple[str, int]:
        policy, _, step = name.rpartition(f"_{self.mark}")
        return policy, int(step)

    def policy(self, config: dict, name: str) -> dict:
        return self.block(config)["policies"][name]

    def variant(self, config: dict, name: str) -> dict:
        """What run.json records as the run's ``config``: the scenario, policy, step and the policy's settings."""
        policy, step = self.split(name)
        return {"scenario": self.scenario, "policy": policy, "step": step, **self.policy(config, policy)}

    def model(self, config: dict, name: str) -> str:
        return self.block(config)["model"]

    def variants(self, config: dict) -> Iterator[tuple[str, str]]:
        b = self.block(config)
        if not b or any(k not in b for k in self.required) or b["model"] not in config["models"]:
            return
        if any(m not in config["models"] for m in self.needs_models(config, "")):
            return
        for ds in datasets_of(config, b):  # the model need not train baselines there
            for policy in b["policies"]:
                for step in self.policy_steps(config, policy):
                    yield ds, self.step_name(policy, step)

    def seeds(self, config: dict, variant: str | None = None) -> list[int]:
        return block_seeds(config, self.name)

    def recipe(self, config: dict, name: str) -> dict:
        b = self.block(config)
        return {**deep_merge(recipe_for(config, b["model"]), b.get("train") or {}), "checkpoint_epochs": []}

    def example_stats(self, config: dict, name: str) -> bool:
        return False

    def run_dir(self, config: dict, dataset: str, name: str, seed: int | str = "{seed}") -> str:
        return run_path(dataset, self.model(config, name), self.name, name, seed)

    def sequence_runs(self, config: dict, dataset: str) -> dict[str, list[str]]:
        """Every run.json of the scenario on ``dataset`` (a study's extra input)."""
        return {"runs_json": [f"{self.run_dir(config, d, v, s)}/run.json" for d, v in self.variants(config)
                              if d == dataset for s in self.seeds(config)]}


# ----------------------------------------------------------------------------- search
class Search(Sequence):
    name = "search"
    title = "a hyperparameter search whose trials reuse the earlier trials (KD, warm starts, early stopping)"
    stage = "reuse.methods.sequences.stage:train_trial"
    mark = "t"
    scenario = "search"
    step_word = "trials"
    required = ("model", "space", "policies")
    needs_val = True

    def steps(self, config: dict) -> list[int]:
        return list(range(self.block(config)["trials"]))

    def needs_models(self, config: dict, name: str) -> list[str]:
        b = self.block(config)
        extra = b.get("space", {}).get("model", {}).get("choices", [])
        return list(dict.fromkeys([b["model"], *extra]))

    def policy(self, config: dict, name: str) -> dict:
        """A policy with the block's ``kd`` defaults under its teacher settings."""
        p = dict(self.block(config)["policies"][name])
        if p.get("teacher"):
            p = {**self.block(config)["kd"], **p}
        return p

    def extra_outputs(self, config: dict, name: str) -> list[str]:
        """A trial of a distilling policy caches its final model's logits on the training set (clean
        view), so later trials distil from it without a teacher forward."""
        policy, _ = self.split(name)
        return cache_files("logits") if self.policy(config, policy).get("teacher") else []

    def inputs(self, config: dict, dataset: str, name: str, seed: int) -> dict[str, list[str]]:
        """``trials``: every earlier trial's run.json; ``caches``: their logit caches (distilling
        policies); ``ckpts``: their final checkpoints (warm starts)."""
        policy, k = self.split(name)
        p = self.policy(config, policy)
        earlier = [self.run_dir(config, dataset, self.step_name(policy, j), seed) for j in range(k)]
        out = {"trials": [f"{d}/run.json" for d in earlier]}
        if p.get("teacher"):
            out["caches"] = [f for d in earlier for f in cache_files(f"{d}/logits")]
        if p.get("init") == "best":
            out["ckpts"] = [f"{d}/ckpt/last.pt" for d in earlier]
        return out

    def params(self, config: dict, dataset: str, name: str) -> dict:
        b = self.block(config)
        policy, k = self.split(name)
        return {"trial": k, "policy": policy, "trials": b["trials"], "holdout": b.get("holdout"), "space": b["space"], "sampler": b["sampler"],
                "train": b.get("train") or {}, "cache": config["cache"], "dataset": dataset,
                "base": {"train": config["train"], "models": {m: config["models"][m]
                                                              for m in self.needs_models(config, name)}},
                "study": f"search/{dataset}/{b['model']}/{policy}"}

    def problems(self, config: dict) -> list[str]:
        b = self.block(config)
        if not any(k in b for k in self.required):
            return []
        out = _block_problems(self, config)
        if out and (out[0].startswith("search.model") or "missing" in out[0]):
            return out
        out += [no_model("search.space.model", m, config) for m in self.needs_models(config, "")[1:]
                if m not in config["models"]]
        out = [p for p in out if p]
        out += sp.problems(b["space"], config, b["model"], "search.space")
        lo, hi = sp.epoch_bounds(b["space"], config, b["model"]) if not out else (1, 1)
        for name, p in b["policies"].items():
            at = f"search.policies.{name}"
            if p.get("teacher") in ("top", "random") and self.policy(config, name)["top"] < 2:
                out.append(f"{at}: teacher {p['teacher']} draws from the top few trials; set search.kd.top >= 2")
            pr = p.get("pruner")
            if pr and not out:
                if pr["min_resource"] > lo:
                    out.append(f"{at}.pruner.min_resource: {pr['min_resource']} epochs, but a trial may train only "
                               f"{lo}; the pruner's minimum resource must fit the smallest budget (lower it or "
                               "raise the epochs' low bound)")
                if pr.get("max_resource") is not None and pr["max_resource"] < hi:
                    out.append(f"{at}.pruner.max_resource: {pr['max_resource']} is below the {hi} epochs a trial "
                               "may train; raise it or leave it null (the most epochs)")
        if b["sampler"]["name"] == "tpe" and b["sampler"]["startup_trials"] >= b["trials"]:
            out.append(f"search.sampler.startup_trials: {b['sampler']['startup_trials']} random trials leave TPE "
                       f"none of the {b['trials']} trials; lower it or raise search.trials")
        return out


# ----------------------------------------------------------------------------- retrain
class Retrain(Sequence):
    name = "retrain"
    title = "retraining as new data arrives, each step reusing the previous model (warm start, KD, selection)"
    stage = "reuse.methods.sequences.stage:train_step"
    mark = "p"
    scenario = "retrain"
    step_word = "retraining steps"
    needs_val = True  # whether a step's model reaches the anchor's accuracy is judged on validation

    def steps(self, config: dict) -> list[int]:
        return list(range(1, len(self.block(config)["parts"]) + 1))

    def policy_steps(self, config: dict, policy: str) -> list[int]:
        steps = self.steps(config)
        return steps[-1:] if self.policy(config, policy).get("steps") == "last" else steps

    def needs_models(self, config: dict, name: str) -> list[str]:
        return [self.block(config)["model"]]

    def example_stats(self, config: dict, name: str) -> bool:
        policy, _ = self.split(name)
        return (self.policy(config, policy).get("select") or {}).get("score") == "forgetting"

    def _needs_cache(self, p: dict) -> bool:
        return bool(p.get("teacher")) or (p.get("select") or {}).get("score") == "el2n"

    def extra_outputs(self, config: dict, name: str) -> list[str]:
        """The step's model's logits on the training set, for the next step's distillation or EL2N
        (not after the last step)."""
        policy, step = self.split(name)
        last = step == len(self.block(config)["parts"])
        return [] if last or not self._needs_cache(self.policy(config, policy)) else cache_files("logits")

    def inputs(self, config: dict, dataset: str, name: str, seed: int) -> dict[str, list[str]]:
        """``steps``: every earlier step's run.json; ``previous``: the previous step's checkpoint (warm
        start) or logit cache (KD, EL2N); ``stats``: every earlier step's example_stats (forgetting).
        An equal-cost policy reads only ``matched``: the run.json of its matched policy's steps 1..s
        (same repeat), whose training it matches."""
        policy, s = self.split(name)
        p = self.policy(config, policy)
        if p.get("equal_cost"):
            return {"matched": [f"{self.run_dir(config, dataset, self.step_name(p['equal_cost'], j), seed)}/run.json"
                                for j in range(1, s + 1)]}
        earlier = [self.run_dir(config, dataset, self.step_name(policy, j), seed) for j in range(1, s)]
        out = {"steps": [f"{d}/run.json" for d in earlier]}
        if earlier:
            prev = earlier[-1]
            files = ([f"{prev}/ckpt/last.pt"] if p.get("init") == "previous" else []) + (
                cache_files(f"{prev}/logits") if self._needs_cache(p) else [])
            if files:
                out["previous"] = files
            if (p.get("select") or {}).get("score") == "forgetting":
                out["stats"] = [f"{d}/example_stats.npz" for d in earlier]
        return out

    def params(self, config: dict, dataset: str, name: str) -> dict:
        b = self.block(config)
        return {"parts": b["parts"], "split_seed": b["split_seed"], "holdout": b.get("holdout"), "cache": config["cache"]}

    def problems(self, config: dict) -> list[str]:
        b = self.block(config)
        if not any(k in b for k in self.required):
            return []
        out = _block_problems(self, config)
        if out and "missing" in out[0]:
            return out
        parts = b["parts"]
        if any(b2 <= a for a, b2 in zip(parts, parts[1:])) or parts[-1] != 1.0:
            out.append(f"retrain.parts: {parts} must increase and end at 1.0 (the fraction of the training set "
                       "seen after each part)")
        pols = b["policies"]
        for name, p in pols.items():
            at, match = f"retrain.policies.{name}", p.get("equal_cost")
            if match is None:
                if p.get("steps") == "last":
                    out.append(f"{at}.steps: 'last' is for an equal-cost comparator (a policy with equal_cost), "
                               "which reuses nothing; a policy that reuses earlier steps runs at every step")
                continue
            if match not in pols:
                close = difflib.get_close_matches(str(match), list(pols), n=1)
                out.append(f"{at}.equal_cost: no policy named '{match}'" + (f" (did you mean '{close[0]}'?)" if close
                                                                               else f"; one of {', '.join(pols)}"))
            elif match == name or pols[match].get("equal_cost"):
                out.append(f"{at}.equal_cost: '{match}' is itself an equal-cost comparator; name a policy that "
                           "retrains at every step")
            reuses = [k for k in ("teacher", "select") if p.get(k)] + (["init"] if p.get("init") == "previous" else [])
            if reuses:
                out.append(f"{at}: an equal-cost comparator trains from scratch on all data so far and reuses "
                           f"nothing; drop {', '.join(reuses)}")
        return out


def _study_params(config: dict) -> dict:
    """The level of the study tables' Student-t intervals (the report's confidence level)."""
    rep = config.get("report") or {}
    conf = rep.get("confidence") or (rep.get("bootstrap") or {}).get("confidence") or 0.95
    return {"confidence": float(conf)}


SEARCH, RETRAIN = register(Search()), register(Retrain())
# Per scenario: <name>_steps.csv, one row per (policy, seed, step) with the cumulative cost and the
# model the policy would ship; <name>.csv, one row per policy with the speed-up over the anchor.
for _m in (SEARCH, RETRAIN):
    _m.studies = tuple(Study(f"{_m.name}{suffix}", (_m.name,), f"reuse.methods.sequences.stage:{fn}",
                             extra=_m.sequence_runs, params=_study_params)
                       for suffix, fn in (("_steps", "steps_study"), ("", "policy_study")))


def identity(params: dict, seed: int, fingerprint: str) -> str:
    """What a search's journal belongs to: everything that decides its trials (never the trial number)."""
    import hashlib

    keep = {k: v for k, v in params.items() if k != "trial"}
    return hashlib.sha256(json.dumps({"params": keep, "seed": seed, "data": fingerprint}, sort_keys=True,
                                     default=str).encode()).hexdigest()[:24]
