"""The workflow stages of ``search`` and ``retrain``: one trial, one retraining step, and the two
study tables of each scenario (per step, per policy)."""

from __future__ import annotations

import logging
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
from reuse.methods.sequences.algorithms import PartialDistill, ValCurve
from reuse.methods.sequences.spec import identity
from reuse.methods.sequences.space import apply, epoch_bounds
from reuse.plan import deep_merge
from reuse.train import load_checkpoint
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


def train_step(job: Job) -> None:
    """Step s of one policy's retraining sequence: train on the examples seen so far (or, with
    ``select``, the hardest ``keep`` of the old ones and every new one), from scratch or the previous
    step's model, with labels or the previous model's cached logits on the old part."""
    p, pol = job.params, job.cfg
    s = pol["step"]
    data = job.data()
    n = len(data.train)
    seen = arrival(n, p["parts"], p["split_seed"])
    now = seen[s - 1]
    old = seen[s - 2] if s > 1 else np.array([], dtype=np.int64)
    new = np.setdiff1d(now, old)
    prev = str(Path(job.inputs["steps"][-1]).parent) if s > 1 else None
    recipe = job.recipe
    train_ids, algorithms, reused, init, init_id, info = now, [], [], None, None, {}
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
    if len(train_ids) < n:
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
        return {"sequence": {"scenario": "retrain", "policy": pol["policy"], "step": s, "repeat": job.seed,
                             "fraction": p["parts"][s - 1], "examples": int(len(now)), "trained_on": int(len(train_ids)),
                             "own_flops": last["train_flops"] + cache_cost["flops"],
                             "own_time_s": last["train_time_s"] + cache_cost["time_s"],
                             "cache_flops": cache_cost["flops"], **info}}

    job.fit(data, recipe=recipe, algorithms=algorithms, reused=reused, init=init, init_id=init_id, finish=finish)


# ----------------------------------------------------------------------------- studies
def sequence_rows(run_jsons: list[str]):
    """One row per run of a sequence (a DataFrame): policy, seed (the repeat), step, own cost,
    validation and test accuracy."""
    import pandas as pd

    rows = []
    for f in run_jsons:
        r = read_json(f)
        q = r["sequence"]
        rows.append({"dataset": r["dataset"], "model": r["model"], "scenario": q["scenario"], "policy": q["policy"],
                     "seed": q["repeat"], "train_seed": r["seed"], "step": q["step"], "arch": r["arch"], "params": r["num_parameters"],
                     "state": (r.get("trial") or {}).get("state", "COMPLETE"), "val_acc": q.get("val_acc"),
                     "test_acc": r["final"]["test_acc"], "own_flops": q["own_flops"], "own_time_s": q["own_time_s"],
                     "epochs_trained": q.get("epochs_trained", r["recipe"]["epochs"]),
                     "config": {k: v for k, v in (r.get("config") or {}).items() if k not in ("scenario", "policy", "step")},
                     **{f"hp_{k}": v for k, v in (q.get("params") or {}).items()},
                     "teachers": ",".join(map(str, q.get("teachers", []))), "init_from": q.get("init_from"),
                     "trained_on": q.get("trained_on")})
    return pd.DataFrame(rows)


def cumulative(df):
    """Per (dataset, policy, seed) in step order: cumulative cost, and the model the policy would ship
    after each step: for a search the finished trial with the best validation accuracy so far (test
    accuracy is only reported), for retraining the step's model."""
    import pandas as pd

    out = []
    for _, g in df.sort_values("step").groupby(["dataset", "model", "scenario", "policy", "seed"], sort=True):
        g = g.copy()
        g["cum_flops"] = g["own_flops"].cumsum()
        g["cum_time_s"] = g["own_time_s"].cumsum()
        ship_step, ship_val, ship_test = [], [], []
        best = None
        for r in g.itertuples():
            if r.scenario == "retrain":
                best = r
            elif r.state == "COMPLETE" and r.val_acc is not None and (best is None or r.val_acc > best.val_acc):
                best = r
            ship_step.append(best.step if best is not None else None)
            ship_val.append(best.val_acc if best is not None else None)
            ship_test.append(best.test_acc if best is not None else None)
        g["shipped_step"], g["shipped_val_acc"], g["shipped_test_acc"] = ship_step, ship_val, ship_test
        out.append(g)
    return pd.concat(out, ignore_index=True)


def anchor_policy(df) -> str | None:
    """The policy that reuses nothing (no teacher, warm start, pruner or selection): the anchor."""
    for pol, g in df.groupby("policy", sort=False):
        c = g["config"].iloc[0]
        if not c.get("teacher") and c.get("init", "scratch") == "scratch" and not c.get("pruner") and not c.get("select"):
            return pol
    return None


def steps_study(*, runs_csvs: list[str], baseline_csv: str, extra: dict[str, list[str]], params: dict,
                out_csv: str) -> None:
    """``<scenario>_steps.csv``: one row per (policy, seed, step) with its own and cumulative cost and
    the shipped model's validation and test accuracy."""
    df = cumulative(sequence_rows(extra["runs_json"])).drop(columns=["config"])
    with atomic_path(out_csv, suffix=".csv") as tmp:
        df.to_csv(tmp, index=False)
    log.info("%d steps of %d sequences", len(df), df.groupby(["policy", "seed"]).ngroups)


def _boot_ci(values: np.ndarray, bootstrap: dict) -> tuple[float, float]:
    """A percentile interval of the mean of ``values`` over resampled repeats."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(bootstrap.get("seed", 0))
    means = v[rng.integers(0, len(v), size=(bootstrap.get("resamples", 10000), len(v)))].mean(1)
    a = (1 - bootstrap.get("confidence", 0.95)) / 2
    return float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def policy_study(*, runs_csvs: list[str], baseline_csv: str, extra: dict[str, list[str]], params: dict,
                 out_csv: str) -> None:
    """``<scenario>.csv``: one row per policy: the shipped model's final test accuracy, the total
    cost, and against the anchor policy (per repeat: the anchor's total cost over the policy's cost
    to reach the anchor's final shipped test accuracy; 0 where it never does) the mean speed-up with a
    bootstrap interval over the repeats, in FLOPs and in wall-clock."""
    import pandas as pd

    steps = cumulative(sequence_rows(extra["runs_json"]))
    anchor = anchor_policy(steps)
    rows = []
    for (ds, model, scen), sdf in steps.groupby(["dataset", "model", "scenario"]):
        final = sdf.sort_values("step").groupby(["policy", "seed"]).tail(1).set_index(["policy", "seed"])
        for pol, g in sdf.groupby("policy", sort=False):
            row: dict[str, Any] = {"dataset": ds, "model": model, "scenario": scen, "policy": pol,
                                   "anchor": anchor, "is_anchor": pol == anchor, "repeats": g["seed"].nunique(),
                                   "steps": int(g["step"].nunique())}
            fin = final.loc[pol]
            row.update(test_acc=fin["shipped_test_acc"].mean(), test_acc_std=fin["shipped_test_acc"].std(ddof=1),
                       val_acc=fin["shipped_val_acc"].mean(), total_flops=fin["cum_flops"].mean(),
                       total_time_s=fin["cum_time_s"].mean(),
                       pruned=int((g["state"] == "PRUNED").sum()), runs=len(g))
            lo, hi = _boot_ci(fin["shipped_test_acc"].to_numpy(), params["bootstrap"])
            row.update(test_acc_lo=lo, test_acc_hi=hi)
            if anchor is not None:
                for axis, col in (("flops", "cum_flops"), ("time", "cum_time_s")):
                    ups, reach = [], []
                    for seed, gs in g.groupby("seed"):
                        if (anchor, seed) not in final.index:
                            continue
                        target = final.loc[(anchor, seed), "shipped_test_acc"]
                        total = final.loc[(anchor, seed), col]
                        hit = gs.sort_values("step")
                        hit = hit[hit["shipped_test_acc"] >= target - 1e-12]
                        cost = hit[col].iloc[0] if len(hit) else np.inf
                        reach.append(cost)
                        ups.append(total / cost if np.isfinite(cost) else 0.0)
                    ups_a = np.asarray(ups)
                    lo, hi = _boot_ci(ups_a, params["bootstrap"])
                    row.update({f"speedup_{axis}": float(ups_a.mean()) if len(ups_a) else np.nan,
                                f"speedup_{axis}_lo": lo, f"speedup_{axis}_hi": hi,
                                f"reach_{col}": float(np.mean(reach)) if reach and np.isfinite(reach).all() else np.inf,
                                "reached": int(np.isfinite(reach).sum())})
            rows.append(row)
    df = pd.DataFrame(rows)
    with atomic_path(out_csv, suffix=".csv") as tmp:
        df.to_csv(tmp, index=False)
    cols = [c for c in ("policy", "test_acc", "total_flops", "speedup_flops", "speedup_flops_lo", "speedup_flops_hi",
                        "reached", "pruned") if c in df]
    log.info("policies (anchor: %s):\n%s", anchor, df[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
