"""The specialists stage: group a past run's confusable classes, train a specialist per group from its
weights, combine them with it on the test set and write the result as a run; the study table (test
accuracy of the generalist and of the combination by the number of specialists covering the true
class) and its chart."""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reuse.data.datasets import DatasetPair
from reuse.data.fingerprint import digest, hash_array
from reuse.errors import ReuseError
from reuse.io import atomic_path, read_json, save_npz, sha256_file
from reuse.safeload import read_npz
from reuse.methods.specialists.core import (Enrich, active_specialists, cluster_classes, combine, coverage,
                                            dustbin_correction, label_map, membership, specialist_head)
from reuse.models import build_model
from reuse.models.heads import head_name
from reuse.train import Trainer, evaluate, load_checkpoint
from reuse.train.checkpoint import build_from_checkpoint
from reuse.workflow import Job, past_run_cost

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- a specialist's data and model
def _relabelled(split, mapping: np.ndarray, name: str):
    """``split`` (a copy sharing its inputs) with labels ``mapping[y]`` and a fingerprint of its own."""
    new = copy.copy(split)
    y = split.y
    new.y = torch.as_tensor(mapping, device=y.device)[y] if isinstance(y, torch.Tensor) else mapping[np.asarray(y)]
    k = int(mapping.max()) + 1
    new.num_classes = k
    fp = {**split.fingerprint, "name": name, "num_classes": k,
          "labels_sha256": hash_array(mapping[np.asarray(split.y.cpu() if isinstance(y, torch.Tensor) else y)])}
    fp["digest"] = digest(fp)
    new.fingerprint = fp
    return new


def specialist_data(data, group: list[int], index: int) -> DatasetPair:
    """The dataset as specialist ``index`` sees it: its group's classes, then the dustbin."""
    mapping = label_map(group, data.num_classes)
    name = f"{data.name}:specialist{index}:{','.join(map(str, group))}"
    return DatasetPair(name=name, meta={**data.meta, "num_classes": len(group) + 1},
                       train=_relabelled(data.train, mapping, name), test=_relabelled(data.test, mapping, name))


def specialist_model(ckpt: dict, group: list[int]) -> tuple[torch.nn.Module, dict]:
    """A specialist built as the generalist's architecture with ``len(group) + 1`` outputs, its weights
    the generalist's but the classifier (:func:`specialist_head`); and its model spec."""
    spec = ckpt["model_spec"]
    model = build_model(spec["arch"], spec["input_shape"], len(group) + 1, **spec.get("args", {}))
    head = head_name(model)
    sd = dict(ckpt["model"])
    w, b = specialist_head(sd[f"{head}.weight"], sd.get(f"{head}.bias"), group)
    sd[f"{head}.weight"] = w
    if b is not None:
        sd[f"{head}.bias"] = b
    model.load_state_dict(sd)
    return model, {**spec, "num_classes": len(group) + 1}


class Combined(torch.nn.Module):
    """The generalist and its specialists as one model whose output is the combination's log q
    (:func:`reuse.methods.specialists.core.combine`)."""

    def __init__(self, generalist: torch.nn.Module, specialists: list[torch.nn.Module], groups: list[list[int]],
                 corrections: list[float], top_n: int, steps: int, lr: float):
        super().__init__()
        self.generalist, self.specialists = generalist, torch.nn.ModuleList(specialists)
        self.groups, self.top_n, self.steps, self.lr = groups, top_n, steps, lr
        self.register_buffer("corrections", torch.tensor(corrections, dtype=torch.float32))
        self.member: torch.Tensor | None = None

    def parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(generalist log p [B, C], combined log q [B, C], active specialists [B, M])."""
        lg = torch.log_softmax(self.generalist(x).float(), 1)
        if self.member is None:
            self.member = torch.as_tensor(membership(self.groups, lg.shape[1]), device=lg.device)
        ls = []
        for j, s in enumerate(self.specialists):
            out = s(x).float()
            out = torch.cat([out[:, :-1], out[:, -1:] + self.corrections[j]], 1)
            ls.append(torch.log_softmax(out, 1))
        active = active_specialists(lg.exp(), self.member, self.top_n)
        return lg, combine(lg, ls, self.groups, active, steps=self.steps, lr=self.lr), active

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.parts(x)[1]


def superclass_matches(groups: list[list[int]], dataset_kind: str, num_classes: int) -> dict | None:
    """For CIFAR-100: how many groups are exactly one superclass, and each group's best Jaccard overlap
    with a superclass (None on other data)."""
    if dataset_kind != "cifar100" or num_classes != 100:
        return None
    from reuse.methods.interleave.tasks import CIFAR100_COARSE

    supers = [set(f for f, c in enumerate(CIFAR100_COARSE) if c == i) for i in range(20)]
    best = [max(len(set(g) & s) / len(set(g) | s) for s in supers) for g in groups]
    return {"exact": sum(b == 1.0 for b in best), "groups": len(groups), "best_jaccard": best}


# ----------------------------------------------------------------------------- the run
def train(job: Job) -> None:
    """One run: cluster the generalist's classes by its training-set predictions, train one specialist
    per group (each by the trainer in ``state/specialists/g<j>``: a rerun after a kill resumes it and
    redoes none that finished), and write the combination as the run. The run's cost: the generalist's
    forward pass over the training set, the clustering and the specialists' training and evaluation;
    the generalist's own training is reused (``reused``). run.json ``specialists``: the groups, each
    specialist's record, and on CIFAR-100 how many groups are a superclass."""
    cfg, p = job.cfg, job.params
    past_ckpt, past_run = job.inputs["past"][0], str(Path(job.inputs["past"][1]).parent)
    data = job.data()
    device = job.device
    ckpt = load_checkpoint(past_ckpt, fingerprint=data.train.fingerprint)
    reused = past_run_cost(past_run)  # reads its run.json: a damaged one is refused before any training
    generalist = build_from_checkpoint(ckpt).to(device)
    bs = job.recipe.get("eval_batch_size", 1024)
    c = data.num_classes
    for key, n in (("groups", cfg["groups"]), ("size", cfg["size"])):
        if n is not None and n > c - (key == "size"):
            raise ReuseError(f"specialists.variants.{job.variant}.{key}: {n} with the {c} classes of dataset "
                             f"'{data.name}'; set at most {c - (key == 'size')}")
    t0 = time.perf_counter()
    fl: dict = {}
    ev = evaluate(generalist, data.train, bs, device, keep_logits=True, flops=fl)
    probs = torch.softmax(ev["logits"].double(), 1).numpy()
    seed = job.seed if cfg["cluster_seed"] is None else cfg["cluster_seed"]
    groups = cluster_classes(probs, cfg["groups"], cfg["size"], seed=seed, matrix=cfg["matrix"])
    cost = {"train_time_s": 0.0, "train_flops": 0, "eval_time_s": time.perf_counter() - t0,
            "eval_flops": int(fl["eval_flops"])}
    log.info("specialists %s: %d groups of the %d classes of '%s' from the generalist %s (train accuracy %.4f): %s",
             job.variant, len(groups), c, data.name, past_ckpt, ev["acc"], groups)
    y_train = data.train.y.cpu().numpy()
    srecipe = p["specialist_recipe"]
    init_id = f"{past_ckpt}@{sha256_file(past_ckpt)[:16]}"
    state_root = Path(job.outputs["run"]).parent / "state" / "specialists"
    specialists, corrections, records = [], [], []
    for j, g in enumerate(groups):
        sdata = specialist_data(data, g, j)
        model, spec = specialist_model(ckpt, g)
        in_group = np.isin(y_train, g)
        enrich = Enrich(np.flatnonzero(in_group), np.flatnonzero(~in_group), cfg["enrichment"])
        trainer = Trainer(model, sdata, srecipe, seed=job.seed, state_dir=state_root / f"g{j}", model_spec=spec,
                          algorithms=[enrich], device=device, progress=job.progress,
                          init_id=f"{init_id} group {g}")
        state = trainer.fit()
        last = state.metrics[-1]
        corr = dustbin_correction(int(in_group.sum()), int((~in_group).sum()), cfg["enrichment"])
        cost["train_time_s"] += last["train_time_s"]
        cost["train_flops"] += last["train_flops"]
        cost["eval_time_s"] += last["eval_time_s"]
        cost["eval_flops"] += last["eval_flops"]
        specialists.append(state.model.eval())
        corrections.append(corr)
        records.append({"classes": g, "train_examples_per_epoch": enrich.examples_per_epoch(len(y_train)),
                        "group_examples": int(in_group.sum()), "dustbin_correction": corr,
                        "test_acc": last["test_acc"], "epochs": state.epoch,
                        "resumed_from": trainer.resumed_from})
        log.info("specialist %d on classes %s: %d examples an epoch, test accuracy on its %d-way task %.4f",
                 j, g, records[-1]["train_examples_per_epoch"], len(g) + 1, last["test_acc"])
    combined = Combined(generalist.eval(), specialists, groups, corrections, cfg["top_n"], cfg["combine"]["steps"],
                        cfg["combine"]["lr"]).to(device)

    def finish(trainer) -> dict:
        lg_all, lq_all, act_all = [], [], []
        t1 = time.perf_counter()
        with torch.no_grad():
            for x, _, _ in data.test.batches(bs):
                lg, lq, act = combined.eval().parts(x.to(device))
                lg_all.append(lg.cpu()), lq_all.append(lq.cpu()), act_all.append(act.cpu())
        lg, lq, act = torch.cat(lg_all).numpy(), torch.cat(lq_all).numpy(), torch.cat(act_all).numpy()
        y = data.test.y.cpu().numpy()
        cover = coverage(groups, y, c)
        save_npz(job.outputs["extra"][0], idx=np.arange(len(y)), target=y, generalist=lg.astype(np.float32),
                 combined=lq.astype(np.float32), covering=cover.astype(np.int16),
                 active=act.sum(1).astype(np.int16), active_covering=(act & membership(groups, c).T[y]).sum(1)
                 .astype(np.int16))
        acc_g, acc_q = float((lg.argmax(1) == y).mean()), float((lq.argmax(1) == y).mean())
        log.info("generalist %.4f -> combined %.4f test accuracy (%d of %d test examples have an active specialist; "
                 "combination %.1fs)", acc_g, acc_q, int(act.any(1).sum()), len(y), time.perf_counter() - t1)
        trainer.state.model = combined  # the run's predictions and test accuracy are the combination's
        return {"specialists": {"groups": groups, "specialists": records, "top_n": cfg["top_n"],
                                "enrichment": cfg["enrichment"], "recipe": srecipe, "cluster_seed": seed,
                                "matrix": cfg["matrix"],
                                "generalist_test_acc": acc_g, "combined_test_acc": acc_q,
                                "superclasses": superclass_matches(groups, p.get("dataset_kind", ""), c),
                                "parameters": sum(q.numel() for q in combined.parameters())}}

    job.fit(data, recipe=job.recipe, reused=reused, init=ckpt["model"],
            init_id=f"{init_id} specialists {groups}", initial_cost=cost, finish=finish)


# ----------------------------------------------------------------------------- the study
def _confidence(params: dict) -> float:
    return float(params.get("confidence", 0.95))


def study(*, runs_csvs: list[str], baseline_csv: str, extra: dict[str, list[str]], params: dict, out_csv: str) -> None:
    """``specialists.csv``: per (model, variant) and number of specialists covering the true class
    (``covering``: 0, 1, 2, ..., and ``all``), the test accuracy of the generalist and of the
    combination (mean over seeds, t-interval), their paired difference per seed with its
    interval, the examples per seed, and the groups' match with superclasses where known."""
    import pandas as pd

    from reuse.stats import describe, paired_comparison

    confidence = _confidence(params)
    per_seed = []
    for npz, rj in zip(extra.get("specialist_predictions", []), extra.get("specialist_runs", []), strict=True):
        run = read_json(rj)
        z = read_npz(npz, ["target", "generalist", "combined", "covering", "active"], what="specialists predictions")
        y, g, q = z["target"], z["generalist"].argmax(1) == z["target"], z["combined"].argmax(1) == z["target"]
        sup = (run["specialists"].get("superclasses") or {})
        base = {"model": run["model"], "variant": run["variant"], "seed": int(run["seed"]),
                "groups": len(run["specialists"]["groups"]),
                "superclass_groups": sup.get("exact", np.nan)}
        for k in ["all"] + sorted(set(z["covering"].tolist())):
            on = np.ones(len(y), bool) if k == "all" else z["covering"] == k
            per_seed.append({**base, "covering": str(k), "n": int(on.sum()), "acc_generalist": float(g[on].mean()),
                             "acc_combined": float(q[on].mean()),
                             "active": float(z["active"][on].mean())})
    ps = pd.DataFrame(per_seed)
    rows = []
    if len(ps):
        for (model, variant, k), d in ps.groupby(["model", "variant", "covering"], sort=False):
            gen = dict(zip(d["seed"], d["acc_generalist"]))
            com = dict(zip(d["seed"], d["acc_combined"]))
            sg, sc, pc = (describe(gen.values(), confidence), describe(com.values(), confidence),
                          paired_comparison(com, gen, confidence))
            rows.append({"model": model, "variant": variant, "covering": k, "seeds": len(d),
                         "examples": float(d["n"].mean()), "groups": int(d["groups"].iloc[0]),
                         "acc_generalist": sg["mean"], "acc_generalist_lo": sg["lo"], "acc_generalist_hi": sg["hi"],
                         "acc_combined": sc["mean"], "acc_combined_lo": sc["lo"], "acc_combined_hi": sc["hi"],
                         "gain": pc["diff_mean"], "gain_lo": pc["diff_lo"], "gain_hi": pc["diff_hi"],
                         "verdict": pc["verdict"], "relative_gain": (sc["mean"] - sg["mean"]) / sg["mean"]
                         if sg["mean"] else np.nan, "active_specialists": float(d["active"].mean()),
                         "superclass_groups": float(d["superclass_groups"].mean())})
    cols = ["model", "variant", "covering", "seeds", "examples", "groups", "acc_generalist", "acc_generalist_lo",
            "acc_generalist_hi", "acc_combined", "acc_combined_lo", "acc_combined_hi", "gain", "gain_lo", "gain_hi",
            "verdict", "relative_gain", "active_specialists", "superclass_groups"]
    df = pd.DataFrame(rows, columns=cols)
    if len(df):
        df["_k"] = df["covering"].map(lambda k: -1 if k == "all" else int(k))
        df = df.sort_values(["model", "variant", "_k"]).drop(columns="_k")
    with atomic_path(out_csv, suffix=".csv") as tmp:
        df.to_csv(tmp, index=False)
    log.info("specialists study:\n%s", df.drop(columns=["superclass_groups"]).to_string(
        index=False, float_format=lambda v: f"{v:.4f}"))


def charts(table) -> list[tuple[str, Any, str]]:
    """Test accuracy of the generalist and of the combination by the number of specialists covering
    the true class, with the intervals over seeds, one panel per variant."""
    import altair as alt
    import pandas as pd

    if table.empty:
        return []
    t = table.copy()
    t["covering"] = t["covering"].astype(str)
    long = pd.concat([t.assign(model_=who, acc=t[f"acc_{who}"], lo=t[f"acc_{who}_lo"], hi=t[f"acc_{who}_hi"])
                      for who in ("generalist", "combined")], ignore_index=True)
    long = long[["variant", "covering", "model_", "acc", "lo", "hi", "examples", "seeds"]].replace(
        [np.inf, -np.inf], np.nan)
    order = ["all"] + sorted((k for k in set(long["covering"]) if k != "all"), key=int)
    x = alt.X("covering:N", sort=order, title="specialists covering the true class")
    color = alt.Color("model_:N", title=None, scale=alt.Scale(domain=["generalist", "combined"],
                                                              range=["#888888", "#d95f02"]))
    xo = alt.XOffset("model_:N", sort=["generalist", "combined"])
    base = alt.Chart(long)
    bars = base.mark_point(filled=True, size=70).encode(
        x=x, xOffset=xo, y=alt.Y("acc:Q", title="test accuracy", scale=alt.Scale(zero=False)), color=color,
        tooltip=["variant", "covering", "model_", alt.Tooltip("acc:Q", format=".4f"), alt.Tooltip("lo:Q", format=".4f"),
                 alt.Tooltip("hi:Q", format=".4f"), alt.Tooltip("examples:Q", format=".0f"), "seeds:Q"])
    err = base.mark_rule().encode(x=x, xOffset=xo, y="lo:Q", y2="hi:Q", color=color)
    chart = alt.layer(err, bars).properties(width=220, height=220).facet(column=alt.Column("variant:N", title=None))
    return [("Generalist and combination by specialists covering the true class", chart,
             "Mean test accuracy over seeds with its 95% t-interval, on all test examples and on those whose "
             "class is covered by 0, 1, 2, ... specialists; the paper (JFT, 61 specialists): the gain grows with the "
             "number covering the true class.")]
