"""The bias stage: shift a past run's classifier bias by the best value on the validation split and
write the result as a run; the study table of every such run and its chart."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    import pandas as pd

from reuse.errors import ReuseError
from reuse.io import atomic_path, read_csv, read_json, sha256_file
from reuse.safeload import read_npz
from reuse.methods.bias.search import grid_values, search_shift
from reuse.models.heads import head_name
from reuse.train import evaluate, load_checkpoint
from reuse.train.checkpoint import build_from_checkpoint
from reuse.workflow import Job, past_run_cost

log = logging.getLogger(__name__)


def train(job: Job) -> None:
    """One run: the past run's final weights (``job.inputs["past"]``: its checkpoint and run.json) with
    the bias of ``cfg.classes`` shifted by the search's choice on the validation split. The new run
    trains no epoch; its cost is the validation forward pass and the search, the past run's is reused.
    run.json ``bias``: the classes, the shift, validation accuracy before and after, the searched curve."""
    cfg = job.cfg
    past_ckpt, past_run = job.inputs["past"][0], str(Path(job.inputs["past"][1]).parent)
    data = job.data()
    if data.val is None:
        raise ReuseError(f"bias: dataset '{data.name}' has no validation split to choose the shift on; set "
                         f"datasets.{data.name}.holdout")
    ckpt = load_checkpoint(past_ckpt, fingerprint=data.train.fingerprint)
    model = build_from_checkpoint(ckpt).to(job.device)
    t0 = time.perf_counter()
    flops: dict[str, int] = {}
    ev = evaluate(model, data.val, job.recipe.get("eval_batch_size", 1024), job.device, keep_logits=True,
                  flops=flops)
    classes = list(range(data.num_classes)) if cfg["classes"] == "all" else list(cfg["classes"])
    if max(classes) >= data.num_classes:
        raise ReuseError(f"bias.variants.{job.variant}.classes: {cfg['classes']} names a class that dataset "
                         f"'{data.name}' does not have (it has {data.num_classes}: 0..{data.num_classes - 1})")
    grid = grid_values(cfg["grid"]["low"], cfg["grid"]["high"], cfg["grid"]["step"])
    found = search_shift(ev["logits"].numpy(), data.val.y.numpy(), classes, grid, mode=cfg["mode"])
    search_s = time.perf_counter() - t0
    name = head_name(model)
    state = {k: v.clone() for k, v in ckpt["model"].items()}
    bias = state.get(f"{name}.bias")
    if bias is None:
        raise ReuseError(f"bias: the classifier of {past_ckpt} ({name}) has no bias to shift")
    state[f"{name}.bias"] = bias + torch.as_tensor(found["shift"], dtype=bias.dtype)
    log.info("bias %s: classes %s shifted by %s on %d validation examples: accuracy %.4f -> %.4f", job.variant,
             cfg["classes"], found["values"] if cfg["mode"] == "per_class" else found["values"][0], found["n"],
             found["acc_before"], found["acc"])
    init_id = f"{past_ckpt}@{sha256_file(past_ckpt)[:16]} bias {found['shift']}"
    record = {"classes": classes, "mode": cfg["mode"], **{k: found[k] for k in ("shift", "values", "acc", "acc_before",
                                                                               "n")},
              "curve": found.get("curve"), "head": name}
    job.fit(data, recipe=job.recipe, reused=past_run_cost(past_run), init=state, init_id=init_id,
            initial_cost={"eval_time_s": search_s, "eval_flops": flops.get("eval_flops", 0)},
            finish=lambda trainer: {"bias": record})


def study(*, runs_csvs: list[str], baseline_csv: str, extra: dict[str, list[str]], params: dict, out_csv: str) -> None:
    """One row per bias run: the shifted classes and shift, validation accuracy before and after the
    shift, test accuracy of the past run and of the shifted one, and the test accuracy on the shifted
    classes before and after (from the two runs' predictions)."""
    import pandas as pd

    runs = pd.concat([read_csv(f) for f in runs_csvs], ignore_index=True)
    rows = []
    for _, r in runs.iterrows():
        run = read_json(f"{r['run']}/run.json")
        b = run["bias"]
        past = next(x for x in run["reused"] if x["kind"] == "past_run")
        on = np.asarray(b["classes"])
        after = read_npz(f"{r['run']}/predictions.npz", ["logits", "target"], what="predictions")
        before = read_npz(f"{past['path']}/predictions.npz", ["logits", "target"], what="predictions")

        def class_acc(p) -> float:
            keep = np.isin(p["target"], on)
            return float((p["logits"][keep].argmax(1) == p["target"][keep]).mean()) if keep.any() else float("nan")

        rows.append({"model": r["model"], "variant": r["variant"], "seed": int(r["seed"]),
                     "classes": ",".join(map(str, b["classes"])), "mode": b["mode"],
                     "shift": b["values"][0] if b["mode"] == "shared" else ",".join(f"{v:g}" for v in b["values"]),
                     "val_acc_before": b["acc_before"], "val_acc_after": b["acc"],
                     "test_acc_before": past["test_acc"], "test_acc_after": r["test_acc"],
                     "test_errors_before": int(round((1 - past["test_acc"]) * len(before["target"]))),
                     "test_errors_after": int(round((1 - r["test_acc"]) * len(after["target"]))),
                     "class_acc_before": class_acc(before), "class_acc_after": class_acc(after),
                     "past_run": past["path"]})
    df = pd.DataFrame(rows).sort_values(["model", "variant", "seed"]) if rows else pd.DataFrame(columns=["variant"])
    with atomic_path(out_csv, suffix=".csv") as tmp:
        df.to_csv(tmp, index=False)
    log.info("bias study:\n%s", df.drop(columns=["past_run"], errors="ignore").to_string(
        index=False, float_format=lambda v: f"{v:.4f}"))


def charts(table: pd.DataFrame) -> list[tuple[str, Any, str]]:
    """Test accuracy on the shifted classes and overall, before and after the shift, per variant and seed."""
    import pandas as pd
    import altair as alt

    if table.empty:
        return []
    long = pd.concat([table.assign(when=w, overall=table[f"test_acc_{w}"], shifted=table[f"class_acc_{w}"])
                      for w in ("before", "after")], ignore_index=True)
    long = long.melt(id_vars=["variant", "seed", "when", "shift"], value_vars=["overall", "shifted"],
                     var_name="on", value_name="test accuracy")
    chart = alt.Chart(long).mark_point(filled=True, size=60).encode(
        x=alt.X("when:N", sort=["before", "after"], title=None),
        y=alt.Y("test accuracy:Q", scale=alt.Scale(zero=False)),
        color=alt.Color("on:N", title="classes"), detail="seed:N",
        tooltip=["variant", "seed", "when", "on", alt.Tooltip("test accuracy:Q", format=".4f"), "shift"],
    ).properties(width=140, height=220).facet(column=alt.Column("variant:N", title=None))
    return [("Test accuracy before and after the shift", chart,
             "Each point: one seed's run, on all test examples (overall) and on the shifted classes' test examples "
             "(shifted); the shift was chosen on the validation split.")]
