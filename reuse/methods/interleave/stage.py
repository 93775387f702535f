"""The workflow stage of ``interleave`` (one run: every task, one schedule, one seed) and its studies.

A run writes the standard run files, made meaningful for several tasks:

- ``run.json``: ``final.test_acc`` is the mean over the tasks of each task's test accuracy (its head
  choosing among its task's classes), ``final.test_loss`` the mean of their losses; ``interleave``
  holds the schedule, per task its classes, examples, steps, final accuracy, accuracy right after
  its last turn, forgetting (the difference) and accuracy before training, and the curve (every
  task's accuracy after every turn), so the studies read run.json files only;
- ``metrics.jsonl``: one row per turn (``epoch`` = the turn's number), with the turn's tasks and
  steps, cumulative cost and every task's test accuracy after it (``task_test_acc``);
- ``predictions.npz``: the test examples of the tasks (``idx``, ``target``), with logits over the
  dataset's classes holding each example's task head in its task's classes and -1e4 elsewhere, so
  the per-class accuracy and calibration read from it are the task-aware ones;
- ``ckpt/last.pt``: the encoders and heads (a :class:`MultiTaskNet`'s state dict; ``model_spec`` names
  the tasks), not a checkpoint of the plain architecture.
"""

from __future__ import annotations

import logging
import platform
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    import pandas as pd

import reuse
from reuse import metrics as M
from reuse import stats as S
from reuse.errors import ReuseError
from reuse.io import atomic_path, read_json, save_npz, sha256_file, write_json, write_jsonl
from reuse.methods.interleave.interleave import InterleavedRun, build_net, make_tasks
from reuse.methods.interleave.schedule import forgetting, task_examples, task_steps, turns
from reuse.workflow import Job

log = logging.getLogger("reuse")

MASKED = -1e4  # the logit of the classes outside an example's task in predictions.npz


def train(job: Job) -> None:
    """One run of a schedule over all tasks (``job.params``: ``tasks``, ``kind``, ``rounds``, ``steps``)."""
    p, recipe, model_cfg = job.params, job.recipe, job.model_cfg
    data = job.data()
    run_dir = Path(job.outputs["run"]).parent
    tasks = make_tasks(p["tasks"], data.train.y.cpu(), data.test.y.cpu())
    for t in tasks:
        bad = [c for c in t.classes if c >= data.num_classes]
        if bad:
            raise ReuseError(f"interleave.tasks.{t.name}: class {bad[0]} does not exist on dataset '{data.name}' "
                             f"(classes 0..{data.num_classes - 1}); list classes of the dataset")
        if not len(t.train_ids) or not len(t.test_ids):
            raise ReuseError(f"interleave.tasks.{t.name}: dataset '{data.name}' has no "
                             f"{'training' if not len(t.train_ids) else 'test'} example of classes {t.classes}")
    schedule = turns(p["kind"], len(tasks), p["steps"], p["rounds"])
    spec = {"arch": model_cfg["arch"], "args": model_cfg.get("args", {}), "input_shape": list(data.input_shape),
            "num_classes": data.num_classes, "tasks": {t.name: t.classes for t in tasks},
            "encoders": len(tasks) if p["kind"] == "independent" else 1}
    probe = data.train.get(tasks[0].train_ids[:2])[0]
    net = build_net(spec["arch"], spec["args"], spec["input_shape"], data.num_classes, tasks, job.seed,
                    p["kind"] == "independent", probe=probe)
    n_params = sum(q.numel() for q in net.parameters())
    device = job.device
    log.info("%s/%s %s seed %d: %d tasks (%s), %d turns over %d steps of batch %d; %s with %d parameters on %s",
             data.name, job.model, job.variant, job.seed, len(tasks),
             ", ".join(f"{t.name} {len(t.classes)} classes {len(t.train_ids)} train" for t in tasks), len(schedule),
             p["steps"], recipe["batch_size"], spec["arch"], n_params, device)
    started = time.time()
    run = InterleavedRun(net, data, tasks, schedule, recipe, seed=job.seed, state_dir=run_dir / "state", device=device,
                         model_spec=spec, identity={"recipe": recipe, "seed": job.seed, "model": spec,
                                                    "data": data.train.fingerprint["digest"]})
    run.fit()
    final = run.evaluate(keep_logits=True)
    acc_after = [[m["task_test_acc"][t.name] for t in tasks] for m in run.metrics]
    forgot = forgetting(schedule, acc_after)
    steps_of = task_steps(schedule, len(tasks))
    examples_of = task_examples(schedule, len(tasks), recipe["batch_size"])
    last_turn = {t.name: max(i for i, tr in enumerate(schedule) if k in tr.tasks) for k, t in enumerate(tasks)}

    # predictions over the tasks' test examples: each example's task head, in its task's classes
    idx = torch.cat([t.test_ids for t in tasks])
    logits = torch.full((len(idx), data.num_classes), MASKED)
    row = 0
    for t, lg in zip(tasks, final["logits"]):
        logits[row:row + len(lg), t.classes] = lg
        row += len(lg)
    order = idx.argsort()
    idx, logits = idx[order].numpy(), logits[order].numpy()
    target = data.test.y.cpu().numpy()[idx]
    out = job.outputs
    run.final_checkpoint(out["ckpts"]["last"])
    save_npz(out["predictions"], idx=idx, target=target, logits=logits)
    write_jsonl(out["metrics"], run.metrics)
    last = run.metrics[-1]
    test_acc = float(np.mean(final["acc"]))
    write_json(out["run"], {
        "dataset": data.name, "model": job.model, "method": job.method, "variant": job.variant, "seed": job.seed,
        "config": job.cfg, "arch": spec["arch"], "args": spec["args"], "num_parameters": n_params,
        # the run's length in epochs of the tasks' training examples (its steps are `steps`)
        "recipe": {**recipe, "epochs": p["steps"] * recipe["batch_size"] / sum(len(t.train_ids) for t in tasks)},
        "fingerprint": data.train.fingerprint,
        "budget": 1.0 if job.budget is None else float(job.budget),
        "final": {"test_acc": test_acc, "test_loss": float(np.mean(final["loss"])),
                  "test_nll": M.nll(logits.astype(np.float64), target),
                  "test_ece": M.ece(logits.astype(np.float64), target, M.ECE_BINS), "ece_bins": M.ECE_BINS,
                  "accuracy": "task-aware: the mean over tasks of each head's accuracy among its task's classes"},
        "best_test_acc": max(m["test_acc"] for m in run.metrics),
        "cost": {"train_time_s": last["train_time_s"], "eval_time_s": run.totals["eval_time_s"],
                 "train_flops": last["train_flops"], "eval_flops": run.totals["eval_flops"],
                 "examples_seen": run.examples_seen, "step": run.step},
        "interleave": {
            "kind": p["kind"], "rounds": p["rounds"] if p["kind"] == "interleaved" else None, "steps": p["steps"],
            "turns": len(schedule),
            "tasks": [{"name": t.name, "classes": t.classes, "train_n": len(t.train_ids), "test_n": len(t.test_ids),
                       "steps": steps_of[k], "examples": examples_of[k],
                       "test_acc": final["acc"][k], "test_loss": final["loss"][k],
                       "acc_after_last_turn": acc_after[last_turn[t.name]][k], "forgetting": forgot[k],
                       "acc_before": run.acc_before[k]} for k, t in enumerate(tasks)],
            "forgetting": float(np.mean(forgot)),
            "curve": [{"turn": m["turn"], "step": m["step"], "tasks": m["tasks"],
                       "acc": [m["task_test_acc"][t.name] for t in tasks]} for m in run.metrics],
        },
        "reused": [], "checkpoints": {"last": {"path": str(out["ckpts"]["last"]),
                                               "sha256": sha256_file(out["ckpts"]["last"])}},
        "device": str(device), "threads": torch.get_num_threads(), "processes": 1,
        "versions": {"reuse": reuse.__version__, "torch": torch.__version__, "python": platform.python_version()},
        "stopped": None, "started": started, "finished": time.time()})
    shutil.rmtree(run_dir / "state")
    log.info("finished: mean test accuracy %.4f over %d tasks (%s), mean forgetting %.4f, %.1fs training", test_acc,
             len(tasks), " ".join(f"{t.name} {a:.4f}" for t, a in zip(tasks, final["acc"])), float(np.mean(forgot)),
             last["train_time_s"])


# ----------------------------------------------------------------------------- studies
VARIANT_ORDER = ("blocked", "interleaved", "joint", "independent")


def schedule_of(run: dict) -> str:
    """blocked, interleaved, joint or independent: a run's schedule, as the studies name it."""
    il = run["interleave"]
    return ("blocked" if il["rounds"] == 1 else "interleaved") if il["kind"] == "interleaved" else il["kind"]


def _runs(files: list[str]) -> list[dict]:
    return [read_json(f) for f in files]


def _confidence(params: dict) -> float:
    return float(params.get("confidence", 0.95))


def _ci(wide: pd.DataFrame, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """The Student-t interval of each column's mean over the rows (seeds); NaN with one seed."""
    x = wide.to_numpy(dtype=np.float64)
    if x.shape[0] < 2:
        return np.full(x.shape[1], np.nan), np.full(x.shape[1], np.nan)
    return S.mean_ci(x, confidence)


def _order(df: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd

    df["_o"] = [(VARIANT_ORDER.index(s), float(r) if pd.notna(r) else 0.0)
                for s, r in zip(df["schedule"], df["rounds"])]
    return df.sort_values(["_o"] + [c for c in ("task_no", "turn") if c in df], kind="stable").drop(columns="_o")


def study(*, runs_csvs: list[str], baseline_csv: str, extra: dict[str, list[str]], params: dict, out_csv: str) -> None:
    """Per variant and task (and ``mean``, the mean over tasks), over the seeds: final test accuracy
    (mean, 95% t-interval), forgetting (accuracy right after the task's last turn minus at
    the end), the accuracy right after the last turn, and the run's cost (steps, examples, training
    FLOPs and wall-clock)."""
    import pandas as pd

    rows = []
    for r in _runs(extra["runs_json"]):
        il, cost = r["interleave"], r["cost"]
        common = {"dataset": r["dataset"], "model": r["model"], "method": r["method"], "variant": r["variant"],
                  "schedule": schedule_of(r), "rounds": r["interleave"]["rounds"], "seed": r["seed"],
                  "turns": il["turns"], "steps": cost["step"], "examples_seen": cost["examples_seen"],
                  "train_flops": cost["train_flops"], "train_time_s": cost["train_time_s"]}
        for k, t in enumerate(il["tasks"]):
            rows.append({**common, "task": t["name"], "task_no": k, "acc": t["test_acc"], "forgetting": t["forgetting"],
                         "acc_after_last_turn": t["acc_after_last_turn"]})
        rows.append({**common, "task": "mean", "task_no": len(il["tasks"]), "acc": r["final"]["test_acc"],
                     "forgetting": il["forgetting"],
                     "acc_after_last_turn": float(np.mean([t["acc_after_last_turn"] for t in il["tasks"]]))})
    df = pd.DataFrame(rows)
    keys = ["dataset", "model", "method", "variant", "schedule", "rounds", "task", "task_no"]
    confidence = _confidence(params)
    out = df.groupby(keys, dropna=False).agg(
        n=("seed", "count"), acc_mean=("acc", "mean"), acc_std=("acc", "std"),
        forgetting_mean=("forgetting", "mean"), acc_after_last_turn=("acc_after_last_turn", "mean"),
        turns=("turns", "first"), steps=("steps", "mean"), examples_seen=("examples_seen", "mean"),
        train_flops=("train_flops", "mean"), train_time_s=("train_time_s", "mean")).reset_index()
    for what in ("acc", "forgetting"):
        wide = df.pivot_table(index="seed", columns=["variant", "task"], values=what, dropna=False)
        lo, hi = _ci(wide, confidence)
        ci = {c: (a, b) for c, a, b in zip(wide.columns, lo, hi)}
        out[f"{what}_lo"] = [ci.get((v, t), (np.nan, np.nan))[0] for v, t in zip(out["variant"], out["task"])]
        out[f"{what}_hi"] = [ci.get((v, t), (np.nan, np.nan))[1] for v, t in zip(out["variant"], out["task"])]
    cols = keys + ["n", "acc_mean", "acc_lo", "acc_hi", "acc_std", "forgetting_mean", "forgetting_lo",
                   "forgetting_hi", "acc_after_last_turn", "turns", "steps", "examples_seen", "train_flops",
                   "train_time_s"]
    out = _order(out[cols])
    with atomic_path(out_csv, suffix=".csv") as tmp:
        out.to_csv(tmp, index=False)
    log.info("interleaving study:\n%s", out[out["task"] == "mean"].drop(columns=["dataset", "model", "method"])
             .to_string(index=False, float_format=lambda v: f"{v:.4f}"))


def turns_study(*, runs_csvs: list[str], baseline_csv: str, extra: dict[str, list[str]], params: dict,
                out_csv: str) -> None:
    """The interleaving curve: per variant, turn (0: before training) and task, the test accuracy of
    the task's head after the turn (mean over seeds, 95% t-interval), with the step it ends
    at and whether the task trained in it."""
    import pandas as pd

    rows = []
    for r in _runs(extra["runs_json"]):
        names = [t["name"] for t in r["interleave"]["tasks"]]
        common = {"dataset": r["dataset"], "model": r["model"], "method": r["method"], "variant": r["variant"],
                  "schedule": schedule_of(r), "rounds": r["interleave"]["rounds"], "seed": r["seed"]}
        for k, name in enumerate(names):
            rows.append({**common, "turn": 0, "step": 0, "task": name, "task_no": k, "trained": False,
                         "acc": r["interleave"]["tasks"][k]["acc_before"]})
        for m in r["interleave"]["curve"]:
            for k, name in enumerate(names):
                rows.append({**common, "turn": m["turn"], "step": m["step"], "task": name, "task_no": k,
                             "trained": name in m["tasks"], "acc": m["acc"][k]})
    df = pd.DataFrame(rows)
    keys = ["dataset", "model", "method", "variant", "schedule", "rounds", "turn", "task", "task_no"]
    out = df.groupby(keys, dropna=False).agg(n=("seed", "count"), step=("step", "first"), trained=("trained", "first"),
                                             acc_mean=("acc", "mean")).reset_index()
    wide = df.pivot_table(index="seed", columns=["variant", "turn", "task"], values="acc", dropna=False)
    lo, hi = _ci(wide, _confidence(params))
    ci = {c: (a, b) for c, a, b in zip(wide.columns, lo, hi)}
    out["acc_lo"] = [ci.get(c, (np.nan, np.nan))[0] for c in zip(out["variant"], out["turn"], out["task"])]
    out["acc_hi"] = [ci.get(c, (np.nan, np.nan))[1] for c in zip(out["variant"], out["turn"], out["task"])]
    out = _order(out)
    with atomic_path(out_csv, suffix=".csv") as tmp:
        out.to_csv(tmp, index=False)
    log.info("interleaving curve: %d rows (%d variants)", len(out), out["variant"].nunique())

