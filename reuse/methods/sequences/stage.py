"""The workflow stages of ``search`` and ``retrain``: one trial, one retraining step, and the two
study tables of each scenario (per step, per policy)."""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from reuse.cache import LogitCache, write_logit_cache
from reuse.data.augment import keyed_seed
from reuse.errors import ReuseError
from reuse.io import atomic_path, read_json, sha256_file
from reuse.safeload import read_npz
from reuse.methods.kd.algorithm import Distill
from reuse.methods.kd.teachers import CachedTeacher
from reuse.methods.prune.prune import Prune
from reuse.methods.sequences import search as S
from reuse.methods.sequences.algorithms import ExampleBudget, PartialDistill, ValCurve
from reuse.methods.sequences.spec import identity
from reuse.methods.sequences.space import apply, epoch_bounds
from reuse.plan import deep_merge
from reuse.train import evaluate, load_checkpoint
from reuse.workflow import Job

log = logging.getLogger("reuse")

STREAM_ARRIVAL = 31  # the keyed-seed stream of the order in which a retraining sequence's examples arrive


def _cost_line(kind: str, path: str, time_s: float, flops: int, **more: Any) -> dict:
    return {"kind": kind, "path": str(path), "time_s": float(time_s), "flops": int(flops), **more}


def _write_cache(job: Job, trainer, data) -> dict:
    """The final model's logits on every training example (clean view, dense; the cache block's dtype
    and batch size) into the run's ``logits/``."""
    out = Path(job.outputs["run"]).parent / "logits"
    c = job.params["cache"]
    meta = write_logit_cache(out, trainer.state.model, data.train, views=[{"kind": "clean"}],
                             fingerprint=data.train.fingerprint,
                             source={"path": str(out.parent), "epoch": trainer.state.epoch, "seed": trainer.seed},
                             dtype=c["dtype"], dense=True, topk=0, batch_size=c["batch_size"],
                             device=job.device)
    return meta["cost"]


# ----------------------------------------------------------------------------- search
class Subset:
    """Examples ``ids`` of a split, for evaluation (a validation split the search holds out)."""

    def __init__(self, split, ids: np.ndarray):
        import torch

        self.split, self.ids = split, torch.as_tensor(ids, dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.ids)

    def batches(self, batch_size: int, **_):
        for chunk in self.ids.split(batch_size):
            yield self.split.get(chunk)


def train_trial(job: Job) -> None:
    """Trial ``params["trial"]`` of one policy's search (seed = the repeat): bring the journal in step
    with the earlier trials' run folders, take the trial's proposal, train it with the policy's reuse of
    the earlier trials, report its validation curve to the pruner, tell the journal, and write the run
    (run.json ``trial``: the Optuna trial in full; ``sequence``: scenario, policy, step, own cost)."""
    p, pol, k = job.params, job.cfg, job.params["trial"]
    data = job.data()
    val, train_ids = data.val, None
    if val is None:
        if not p.get("holdout"):
            raise ReuseError(f"search: dataset '{data.name}' has no validation split to choose trials on; set "
                             f"search.holdout or datasets.{data.name}.holdout")
        from reuse.data.sources import holdout_ids

        held = holdout_ids(data.train.y.numpy(), p["holdout"])
        val, train_ids = Subset(data.train, held), np.setdiff1d(np.arange(len(data.train)), held)
    run_dir = Path(job.outputs["run"]).parent
    journal = run_dir.parent.parent / "journal" / f"{p['policy']}_s{job.seed}.log"
    space = p["space"]
    dists = S.distributions(space)
    past = [read_json(f) for f in job.inputs.get("trials", [])]  # the earlier trials' run.json, read once
    records = [r["trial"] for r in past]
    earlier = [str(Path(f).parent) for f in job.inputs.get("trials", [])]
    base = {"train": p["base"]["train"], "models": p["base"]["models"]}
    lo, hi = epoch_bounds(space, {"train": base["train"], "models": {
        m: {**c, "train": deep_merge(c.get("train") or {}, p["train"])} for m, c in base["models"].items()}}, job.model)
    study = S.open_study(journal, f"{p['study']}/s{job.seed}", identity(p, job.seed, data.train.fingerprint["digest"]),
                         S.make_sampler(p["sampler"], job.seed, k), S.make_pruner(pol.get("pruner"), hi))
    S.reconcile(study, records, journal)
    frozen, live = S.trial(study, k, dists)
    values = S.decode(frozen.params, space)
    model_key, model_cfg, recipe = apply(values, space, base, job.model, p["train"])
    recipe = {**recipe, "checkpoint_epochs": []}
    seed = job.seed * 1000 + k
    log.info("search %s trial %d (seed %d): %s", p["policy"], k, seed,
             ", ".join(f"{n}={v}" for n, v in sorted(values.items())))

    def report(epoch: int, acc: float) -> str | None:
        if live is None:  # finished in the journal already (an earlier attempt): replay its decision
            steps = [int(s) for s in frozen.intermediate_values]
            return f"pruned after epoch {epoch}" if frozen.state == S.TrialState.PRUNED and epoch == max(steps) \
                else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a step already reported (a resumed trial) is ignored, as it should be
            live.report(acc, epoch)
        # a trial that has trained its whole budget is finished, not pruned
        return f"pruned after epoch {epoch}" if pol.get("pruner") and epoch < recipe["epochs"] and \
            live.should_prune() else None

    algorithms: list = [ValCurve(val, recipe.get("eval_batch_size", 1024), job.device, report)]
    if train_ids is not None:
        algorithms.append(Prune(train_ids))
    reused: list[dict] = []
    best = S.ranked(records)
    chosen: dict[str, Any] = {}
    if pol.get("teacher") and best:
        picked = best[:1] if pol["teacher"] == "best" else best[:pol["top"]]
        caches = [LogitCache.open(f"{earlier[j]}/logits", fingerprint=data.train.fingerprint) for j in picked]
        mode = {"best": "single", "top": "ensemble", "random": "random"}[pol["teacher"]]
        teacher = CachedTeacher(caches, mode=mode, temperature=pol["temperature"], seed=seed, views=0,
                                device=job.device)
        algorithms.append(Distill(teacher, temperature=pol["temperature"], alpha=pol["alpha"], until=pol["until"],
                                  seed=seed))
        chosen["teachers"] = picked
        reused += [_cost_line("logit_cache", f"{earlier[j]}/logits", c.meta["cost"]["time_s"], c.meta["cost"]["flops"],
                              bytes=sum(a.nbytes for a in c.arrays.values()), trial=j) for j, c in zip(picked, caches)]
    init = init_id = None
    if pol.get("init") == "best":
        same = [j for j in best if (past[j]["arch"], past[j]["args"]) == (model_cfg["arch"], model_cfg.get("args", {}))]
        if same:
            ckpt_path = f"{earlier[same[0]]}/ckpt/last.pt"
            init = load_checkpoint(ckpt_path, fingerprint=data.train.fingerprint)["model"]
            init_id = f"trial {same[0]} {sha256_file(ckpt_path)[:16]}"
            chosen["init_from"] = same[0]
        else:
            log.info("warm start: no finished earlier trial has this trial's architecture; training from scratch")
    if chosen:
        log.info("reusing earlier trials: %s (validation accuracy %s)", chosen,
                 {j: round(records[j]["value"], 4) for j in best[:max(3, len(chosen.get("teachers", [])))]})

    def finish(trainer) -> dict:
        rows = trainer.state.metrics
        curve = {r["epoch"]: r["val_acc"] for r in rows if "val_acc" in r}
        stopped = trainer.state.extra.get("stop")
        value = curve[max(curve)]
        if live is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for e, v in curve.items():  # steps a resumed job's journal may lack
                    live.report(v, e)
            if stopped:
                study.tell(k, state=S.TrialState.PRUNED)
            else:
                study.tell(k, value)
        now = study.get_trials(deepcopy=False)[k]
        want = S.TrialState.PRUNED if stopped else S.TrialState.COMPLETE
        if now.state != want or (want == S.TrialState.COMPLETE and not S.same_value(now.value, value)):
            raise ReuseError(f"search journal {journal}: trial {k} is {now.state.name} ({now.value}) but this run "
                             f"ended {want.name} ({value}); delete the journal (it is rebuilt from the run folders)")
        cache_cost = _write_cache(job, trainer, data) if job.outputs.get("extra") else {"time_s": 0.0, "flops": 0}
        last = rows[-1]
        return {"trial": S.record(now), "sequence": {
            "scenario": "search", "policy": p["policy"], "step": k, "repeat": job.seed, "params": values,
            "model": model_key, "val_acc": value, "epochs_trained": trainer.state.epoch, "pruned": bool(stopped),
            "own_flops": last["train_flops"] + last.get("val_flops", 0) + cache_cost["flops"],
            "own_time_s": last["train_time_s"] + last.get("val_time_s", 0.0) + cache_cost["time_s"],
            "val_flops": last.get("val_flops", 0), "cache_flops": cache_cost["flops"], **chosen}}

    job.fit(data, recipe=recipe, algorithms=algorithms, reused=reused, init=init, init_id=init_id,
            model_cfg=model_cfg, seed=seed, method_cfg={**pol, "params": values}, finish=finish)


# ----------------------------------------------------------------------------- retrain
def arrival(n: int, parts: list[float], split_seed: int) -> list[np.ndarray]:
    """The sorted ids of the training examples seen after each part: a fixed order of the ids
    (seeded), cut at each fraction."""
    order = np.random.default_rng(keyed_seed(split_seed, STREAM_ARRIVAL)).permutation(n)
    return [np.sort(order[: round(f * n)]) for f in parts]


def forgetting_scores(ids: np.ndarray, stats_files: list[str]) -> np.ndarray:
    """Forgetting events of each of ``ids`` in the most recent earlier step that trained on it (a
    correct -> incorrect change between the epochs it was seen; never learned counts as the most)."""
    out = np.full(len(ids), np.nan)
    for f in reversed(stats_files):
        correct = read_npz(f, ["correct"], what="per-example statistics")["correct"]
        correct = correct[:, ids].astype(np.int16)  # [epochs, len(ids)], -1 = not seen
        seen = (correct >= 0).any(0)
        todo = np.isnan(out) & seen
        for i in np.flatnonzero(todo):
            c = correct[:, i][correct[:, i] >= 0]
            events = int(((c[:-1] == 1) & (c[1:] == 0)).sum())
            out[i] = events if c.any() else len(c)
    out[np.isnan(out)] = np.inf  # seen by no earlier step: keep it
    return out


def retrain_split(data, holdout: int | None) -> tuple[Any, np.ndarray]:
    """The validation split a retraining sequence judges its models on (the dataset's own, or
    ``holdout`` examples held out of the training split, stratified and seeded as a search holds
    them out) and the ids of the training examples that may arrive (all but those held out)."""
    n = len(data.train)
    if data.val is not None:
        return data.val, np.arange(n)
    if not holdout:
        raise ReuseError(f"retrain: dataset '{data.name}' has no validation split to judge the steps' models on; "
                         f"set retrain.holdout or datasets.{data.name}.holdout")
    from reuse.data.sources import holdout_ids

    held = holdout_ids(data.train.y.numpy(), holdout)
    return Subset(data.train, held), np.setdiff1d(np.arange(n), held)


def train_step(job: Job) -> None:
    """Step s of one policy's retraining sequence: train on the examples seen so far (or, with
    ``select``, the hardest ``keep`` of the old ones and every new one), from scratch or the previous
    step's model, with labels or the previous model's cached logits on the old part. An equal-cost
    policy trains from scratch on the examples seen so far for exactly the training examples its
    matched policy spent in its steps 1..s. The step's model is evaluated on the validation split
    (run.json ``sequence.val_acc``: what the study judges it by; a measurement, not charged)."""
    p, pol = job.params, job.cfg
    s = pol["step"]
    data = job.data()
    n = len(data.train)
    val, pool = retrain_split(data, p.get("holdout"))
    seen = [pool[a] for a in arrival(len(pool), p["parts"], p["split_seed"])]
    now = seen[s - 1]
    old = seen[s - 2] if s > 1 else np.array([], dtype=np.int64)
    new = np.setdiff1d(now, old)
    prev = str(Path(job.inputs["steps"][-1]).parent) if s > 1 and job.inputs.get("steps") else None
    recipe = job.recipe
    train_ids, algorithms, reused, init, init_id, info = now, [], [], None, None, {}
    if pol.get("equal_cost"):
        matched = [read_json(f) for f in job.inputs["matched"]]
        if [r["sequence"]["step"] for r in matched] != list(range(1, s + 1)):
            raise ReuseError(f"retrain {pol['policy']} step {s}: its inputs are not steps 1..{s} of "
                             f"{pol['equal_cost']}: {job.inputs['matched']}")
        if recipe.get("drop_last", False):
            raise ReuseError(f"retrain.policies.{pol['policy']}: an equal-cost comparator trains on exactly its "
                             "matched policy's examples, every one; set drop_last: false in retrain.train")
        budget = sum(int(r["cost"]["examples_seen"]) for r in matched)
        algo = ExampleBudget(now, budget, recipe["batch_size"])
        recipe = {**recipe, "epochs": algo.epochs}
        algorithms.append(algo)
        info.update(budget_examples=budget, matched=pol["equal_cost"],
                    matched_train_flops=sum(int(r["cost"]["train_flops"]) for r in matched))
        log.info("retrain %s step %d: from scratch on %d examples for %d examples (%s's training in steps 1-%d: "
                 "%d epochs, the last %s)", pol["policy"], s, len(now), budget, pol["equal_cost"], s, algo.epochs,
                 "whole" if algo.last == len(now) else f"{algo.last} of {len(now)} examples")
    cache = None
    if prev is not None and (pol.get("teacher") or (pol.get("select") or {}).get("score") == "el2n"):
        cache = LogitCache.open(f"{prev}/logits", fingerprint=data.train.fingerprint)
        reused.append(_cost_line("logit_cache", f"{prev}/logits", 0.0, 0, bytes=sum(a.nbytes for a in cache.arrays.values()),
                                 note="written by the previous step (counted in its cost)"))
    sel = pol.get("select")
    if sel and prev is not None:
        if sel["score"] == "el2n":
            probs = cache.probs(old, 0).double().numpy()
            onehot = np.eye(data.num_classes)[data.train.y.numpy()[old]]
            score = np.linalg.norm(probs - onehot, axis=1)
        else:
            score = forgetting_scores(old, job.inputs["stats"])
        n_keep = max(1, round(sel["keep"] * len(old)))
        kept = old[np.lexsort((old, -score))][:n_keep]  # hardest first; ties to the lower id
        train_ids = np.sort(np.concatenate([kept, new]))
        info.update(old_kept=int(n_keep), old=int(len(old)))
    if len(train_ids) < n and not pol.get("equal_cost"):
        algorithms.append(Prune(train_ids))
    if pol.get("init") == "previous" and prev is not None:
        ckpt_path = f"{prev}/ckpt/last.pt"
        init = load_checkpoint(ckpt_path, fingerprint=data.train.fingerprint)["model"]
        init_id = f"previous step {sha256_file(ckpt_path)[:16]}"
    if pol.get("teacher") and prev is not None:
        teacher = CachedTeacher([cache], mode="single", temperature=pol["temperature"], seed=job.seed, views=0,
                                device=job.device)
        algorithms.append(PartialDistill(teacher, old, n, temperature=pol["temperature"], alpha=pol["alpha"]))
    log.info("retrain %s step %d: %d examples seen (%d new), training on %d%s%s", pol["policy"], s, len(now),
             len(new), len(train_ids), ", from the previous model" if init is not None else "",
             ", distilling the previous model on the old part" if pol.get("teacher") and prev else "")

    def finish(trainer) -> dict:
        cache_cost = _write_cache(job, trainer, data) if job.outputs.get("extra") else {"time_s": 0.0, "flops": 0}
        last = trainer.state.metrics[-1]
        if "budget_examples" in info and trainer.state.examples_seen != info["budget_examples"]:
            raise ReuseError(f"retrain {pol['policy']} step {s}: trained on {trainer.state.examples_seen} examples, "
                             f"not the {info['budget_examples']} of its budget")
        t = time.perf_counter()
        fl: dict[str, int] = {}
        ev = evaluate(trainer.state.model, val, recipe.get("eval_batch_size", 1024), job.device, flops=fl)
        return {"sequence": {"scenario": "retrain", "policy": pol["policy"], "step": s, "repeat": job.seed,
                             "fraction": p["parts"][s - 1], "examples": int(len(now)), "trained_on": int(len(train_ids)),
                             "own_flops": last["train_flops"] + cache_cost["flops"],
                             "own_time_s": last["train_time_s"] + cache_cost["time_s"],
                             "cache_flops": cache_cost["flops"], "train_examples": int(trainer.state.examples_seen),
                             "val_acc": ev["acc"], "val_loss": ev["loss"], "val_eval_flops": int(fl["eval_flops"]),
                             "val_eval_time_s": time.perf_counter() - t, **info}}

    job.fit(data, recipe=recipe, algorithms=algorithms, reused=reused, init=init, init_id=init_id, finish=finish)


# ----------------------------------------------------------------------------- studies
# Every verdict of the study tables reads the validation split: the target of a sequence is, per
# repeat, the validation accuracy of the model the anchor ships after its last step, and a policy
# reaches it at the first step whose shipped model (chosen on validation) has at least that
# validation accuracy. Test accuracy is only reported.
EPS = 1e-12  # accuracies within this of the target reach it


def sequence_rows(run_jsons: list[str]):
    """One row per run of a sequence (a DataFrame): policy, seed (the repeat), step, own cost,
    validation and test accuracy."""
    import pandas as pd

    rows = []
    for f in run_jsons:
        r = read_json(f)
        q = r["sequence"]
        c = r.get("config") or {}
        rows.append({"dataset": r["dataset"], "model": r["model"], "scenario": q["scenario"], "policy": q["policy"],
                     "seed": q["repeat"], "train_seed": r["seed"], "step": q["step"], "arch": r["arch"], "params": r["num_parameters"],
                     "state": (r.get("trial") or {}).get("state", "COMPLETE"), "val_acc": q.get("val_acc"),
                     "test_acc": r["final"]["test_acc"], "own_flops": q["own_flops"], "own_time_s": q["own_time_s"],
                     "train_flops": (r.get("cost") or {}).get("train_flops"),
                     "train_examples": q.get("train_examples", (r.get("cost") or {}).get("examples_seen")),
                     "epochs_trained": q.get("epochs_trained", r["recipe"]["epochs"]),
                     "equal_cost": c.get("equal_cost"),
                     "config": {k: v for k, v in c.items() if k not in ("scenario", "policy", "step")},
                     **{f"hp_{k}": v for k, v in (q.get("params") or {}).items()},
                     "teachers": ",".join(map(str, q.get("teachers", []))), "init_from": q.get("init_from"),
                     "trained_on": q.get("trained_on")})
    return pd.DataFrame(rows)


def _is_one_off(config: Any) -> bool:
    """A policy each of whose steps is one run that reuses nothing and that nothing reuses (an
    equal-cost comparator): its cost at a step is that run's own, not a sum over its steps."""
    return isinstance(config, dict) and bool(config.get("equal_cost"))


def cumulative(df):
    """Per (dataset, policy, seed) in step order: cumulative cost, and the model the policy would ship
    after each step: for a search the finished trial with the best validation accuracy so far (test
    accuracy is only reported), for retraining the step's model. An equal-cost comparator's steps are
    one-off runs: its cost at a step is that run's own (equal to its matched policy's cumulative
    training there)."""
    import pandas as pd

    out = []
    for _, g in df.sort_values("step").groupby(["dataset", "model", "scenario", "policy", "seed"], sort=True):
        g = g.copy()
        one_off = "config" in g and _is_one_off(g["config"].iloc[0])
        g["cum_flops"] = g["own_flops"] if one_off else g["own_flops"].cumsum()
        g["cum_time_s"] = g["own_time_s"] if one_off else g["own_time_s"].cumsum()
        ship_step, ship_val, ship_test = [], [], []
        best = None
        for r in g.itertuples():
            if r.scenario == "retrain":
                best = r
            elif r.state == "COMPLETE" and not _missing(r.val_acc) and (best is None or r.val_acc > best.val_acc):
                best = r
            ship_step.append(best.step if best is not None else None)
            ship_val.append(best.val_acc if best is not None else None)
            ship_test.append(best.test_acc if best is not None else None)
        g["shipped_step"], g["shipped_val_acc"], g["shipped_test_acc"] = ship_step, ship_val, ship_test
        out.append(g)
    return pd.concat(out, ignore_index=True)


def _missing(v) -> bool:
    try:
        return v is None or bool(np.isnan(v))
    except TypeError:
        return False


def anchor_policy(df) -> str | None:
    """The policy that reuses nothing and runs every step (no teacher, warm start, pruner, selection,
    and no equal-cost comparator): the anchor."""
    for pol, g in df.groupby("policy", sort=False):
        c = g["config"].iloc[0]
        if not c.get("teacher") and c.get("init", "scratch") == "scratch" and not c.get("pruner") and \
                not c.get("select") and not c.get("equal_cost") and c.get("steps", "all") == "all":
            return pol
    return None


def with_targets(steps, anchor: str | None):
    """``steps`` with, per row, the target of its repeat (``target_val_acc``: the validation accuracy
    of the model the anchor ships after its last step, in the same dataset, model, scenario and
    repeat; NaN without an anchor) and whether the row's shipped model reaches it (``at_target``:
    its validation accuracy is at least the target)."""
    steps = steps.copy()
    keys = ["dataset", "model", "scenario", "seed"]
    if anchor is None or anchor not in set(steps["policy"]):
        steps["target_val_acc"], steps["at_target"] = np.nan, False
        return steps
    a = steps[steps["policy"] == anchor].sort_values("step").groupby(keys).tail(1)
    target = a.set_index(keys)["shipped_val_acc"].astype(float).rename("target_val_acc")
    steps = steps.drop(columns=[c for c in ("target_val_acc", "at_target") if c in steps]).join(target, on=keys)
    val = steps["shipped_val_acc"].astype(float)
    steps["at_target"] = (val >= steps["target_val_acc"] - EPS).fillna(False).astype(bool)
    return steps


def reach(g, col: str) -> tuple[float, bool]:
    """One (policy, repeat)'s cost (``col``) to reach its target: the cumulative cost at its first step
    at the target, and True; where it never gets there, its whole sequence's cost (the cost to reach
    is at least that: a lower bound), and False."""
    g = g.sort_values("step")
    hit = g[g["at_target"]]
    return (float(hit[col].iloc[0]), True) if len(hit) else (float(g[col].iloc[-1]), False)


def steps_study(*, runs_csvs: list[str], baseline_csv: str, extra: dict[str, list[str]], params: dict,
                out_csv: str) -> None:
    """``<scenario>_steps.csv``: one row per (policy, seed, step) with its own and cumulative cost, the
    shipped model's validation and test accuracy, the repeat's target (the anchor's final shipped
    validation accuracy) and whether the shipped model reaches it."""
    steps = cumulative(sequence_rows(extra["runs_json"]))
    df = with_targets(steps, anchor_policy(steps)).drop(columns=["config"])
    with atomic_path(out_csv, suffix=".csv") as tmp:
        df.to_csv(tmp, index=False)
    log.info("%d steps of %d sequences", len(df), df.groupby(["policy", "seed"]).ngroups)


SPEEDUP_AXES = (("flops", "cum_flops"), ("time", "cum_time_s"))


def _speedups(g, anchor_rows, conf: float) -> dict[str, Any]:
    """The speed-up columns of one policy's rows ``g`` against the anchor's rows of the same group,
    paired by repeat. Per repeat, the anchor's cost to reach its own target over the policy's cost to
    reach it (the anchor's own is 1 exactly); a repeat that never reaches it gives the anchor's cost
    over the policy's whole cost, an upper bound (``reuse.stats.UPPER``). Over the repeats: the
    geometric mean with a Student-t interval on the logs (:func:`reuse.stats.censored_summary`)."""
    from reuse import stats

    out: dict[str, Any] = {}
    seeds = sorted(set(g["seed"]) & set(anchor_rows["seed"]))
    for axis, col in SPEEDUP_AXES:
        ups, bounds, costs, a_costs = [], [], [], []
        for seed in seeds:
            a_cost, a_hit = reach(anchor_rows[anchor_rows["seed"] == seed], col)
            cost, hit = reach(g[g["seed"] == seed], col)
            ups.append(a_cost / cost if cost > 0 and a_hit else np.nan)
            bounds.append(None if hit else stats.UPPER)
            costs.append(cost)
            a_costs.append(a_cost)
        sm = stats.censored_summary(ups, bounds, conf, log=True)
        out.update({f"speedup_{axis}": sm["mean"], f"speedup_{axis}_lo": sm["lo"], f"speedup_{axis}_hi": sm["hi"],
                    f"speedup_{axis}_bound": sm["bound"],
                    f"reach_{col}": float(np.mean(costs)) if costs else np.nan,
                    f"anchor_reach_{col}": float(np.mean(a_costs)) if a_costs else np.nan})
        reached = [b is None for b in bounds]
    out.update(pairs=len(seeds), reached=int(sum(reached)) if seeds else 0,
               n_censored=int(len(seeds) - sum(reached)) if seeds else 0,
               reach_bound=stats.LOWER if seeds and not all(reached) else None)
    return out


def _equal_cost_gain(g, c, conf: float) -> dict[str, Any]:
    """A policy's rows ``g`` against its equal-cost comparator's rows ``c``, paired by repeat at the
    comparator's last step: the shipped model's test accuracy (reported) and validation accuracy
    minus the comparator's, mean and Student-t interval over the repeats, the test difference's
    p-value, and the ratio of the two costs there (1 in FLOPs where the policy writes no caches)."""
    from reuse import stats

    last = c.sort_values("step").groupby("seed").tail(1).set_index("seed")
    mine = g.set_index(["seed", "step"])
    at = {s: mine.loc[(s, int(r["step"]))] for s, r in last.iterrows() if (s, int(r["step"])) in mine.index}
    test = stats.paired_comparison({s: float(r["shipped_test_acc"]) for s, r in at.items()},
                                   {s: float(last.loc[s, "shipped_test_acc"]) for s in at}, conf)
    val = stats.paired_comparison({s: float(r["shipped_val_acc"]) for s, r in at.items()},
                                  {s: float(last.loc[s, "shipped_val_acc"]) for s in at}, conf)
    steps = sorted({int(last.loc[s, "step"]) for s in at})
    ratio = [float(r["cum_flops"]) / float(last.loc[s, "cum_flops"]) for s, r in at.items()
             if float(last.loc[s, "cum_flops"]) > 0]
    return {"gain_step": steps[0] if len(steps) == 1 else np.nan, "gain_pairs": test["n_pairs"],
            "gain_test_acc": test["diff_mean"], "gain_test_acc_lo": test["diff_lo"], "gain_test_acc_hi": test["diff_hi"],
            "gain_test_acc_p": test["p"], "gain_val_acc": val["diff_mean"], "gain_val_acc_lo": val["diff_lo"],
            "gain_val_acc_hi": val["diff_hi"], "gain_cost_ratio_flops": float(np.mean(ratio)) if ratio else np.nan}


def policy_study(*, runs_csvs: list[str], baseline_csv: str, extra: dict[str, list[str]], params: dict,
                 out_csv: str) -> None:
    """``<scenario>.csv``: one row per policy: the shipped model's final test accuracy (reported, with
    its Student-t interval over the repeats) and validation accuracy, the total cost; against the
    anchor (the policy that reuses nothing), paired by repeat, the speed-up to the anchor's target
    (see :func:`_speedups`: validation only, censored where a repeat never gets there), in FLOPs and
    wall-clock; and, for a policy with an equal-cost comparator, its gain over it (paired by repeat,
    Student-t interval, Holm-adjusted p-value over the table's comparisons)."""
    import pandas as pd

    from reuse import stats

    conf = float(params.get("confidence", 0.95))
    steps = cumulative(sequence_rows(extra["runs_json"]))
    anchor = anchor_policy(steps)
    steps = with_targets(steps, anchor)
    rows = []
    for (ds, model, scen), sdf in steps.groupby(["dataset", "model", "scenario"]):
        final = sdf.sort_values("step").groupby(["policy", "seed"]).tail(1).set_index(["policy", "seed"])
        cfgs = {pol: g["config"].iloc[0] for pol, g in sdf.groupby("policy", sort=False)}
        comparator = {c["equal_cost"]: pol for pol, c in cfgs.items() if _is_one_off(c)}
        arows = sdf[sdf["policy"] == anchor] if anchor is not None else sdf.iloc[:0]
        group = []
        for pol, g in sdf.groupby("policy", sort=False):
            fin = final.loc[pol]
            test, val = fin["shipped_test_acc"].astype(float), fin["shipped_val_acc"].astype(float)
            t_lo, t_hi = stats.mean_ci(test.to_numpy(), conf) if len(test) > 1 else (np.nan, np.nan)
            v_lo, v_hi = stats.mean_ci(val.to_numpy(), conf) if len(val) > 1 else (np.nan, np.nan)
            row: dict[str, Any] = {"dataset": ds, "model": model, "scenario": scen, "policy": pol, "anchor": anchor,
                                   "is_anchor": pol == anchor, "repeats": g["seed"].nunique(),
                                   "steps": int(g["step"].nunique()), "test_acc": test.mean(),
                                   "test_acc_std": test.std(ddof=1), "test_acc_lo": t_lo, "test_acc_hi": t_hi,
                                   "val_acc": val.mean(), "val_acc_lo": v_lo, "val_acc_hi": v_hi,
                                   "target_val_acc": fin["target_val_acc"].astype(float).mean(),
                                   "total_flops": fin["cum_flops"].mean(), "total_time_s": fin["cum_time_s"].mean(),
                                   "pruned": int((g["state"] == "PRUNED").sum()), "runs": len(g),
                                   "equal_cost_of": cfgs[pol].get("equal_cost"),
                                   "equal_cost_policy": comparator.get(pol)}
            if anchor is not None and len(arows):
                row.update(_speedups(g, arows, conf))
            if pol in comparator:
                row.update(_equal_cost_gain(g, sdf[sdf["policy"] == comparator[pol]], conf))
            group.append(row)
        ps = [r.get("gain_test_acc_p", np.nan) for r in group]
        for r, adj in zip(group, stats.holm(ps)):
            if "gain_test_acc_p" in r:
                r["gain_test_acc_p_holm"] = adj
                r["gain_test_verdict"] = stats.decide(r["gain_test_acc"], adj)
        rows += group
    df = pd.DataFrame(rows)
    with atomic_path(out_csv, suffix=".csv") as tmp:
        df.to_csv(tmp, index=False)
    cols = [c for c in ("policy", "test_acc", "val_acc", "total_flops", "speedup_flops", "speedup_flops_lo",
                        "speedup_flops_hi", "speedup_flops_bound", "reached", "pruned", "gain_test_acc") if c in df]
    log.info("policies (anchor: %s):\n%s", anchor, df[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
