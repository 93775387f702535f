"""The workflow stages of ``warm``, ``soup`` and ``averaging``, and their shared study."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from reuse.train.flops import FlopCounterMode

from reuse.errors import ReuseError
from reuse.io import atomic_path, read_csv, read_json, sha256_file
from reuse.methods.weights.weights import (WeightAveraging, average_state_dicts, check_same_architecture,
                                           greedy_soup, recompute_bn, shrink_perturb)
from reuse.models import build_model
from reuse.plan import rescale_recipe
from reuse.train import evaluate, load_checkpoint, seed_everything
from reuse.workflow import Job, past_run_cost, run_key

log = logging.getLogger("reuse")


def train_warm(job: Job) -> None:
    """Train one run warm-started from a past run's checkpoint (``job.inputs["past"]``: the checkpoint
    and its run's run.json): its start is ``shrink * past + perturb * fresh``, with ``fresh`` the run's
    own initialisation (Ash & Adams 2020; shrink 1, perturb 0 is a plain warm start); the recipe is the
    new run's (possibly changed) one. The past run's cost, and what it reused, is counted as reused."""
    cfg, recipe, model_cfg = job.cfg, job.recipe, job.model_cfg
    past_ckpt, past_run = job.inputs["past"][0], str(Path(job.inputs["past"][1]).parent)
    data = job.data()
    ckpt = load_checkpoint(past_ckpt, fingerprint=data.train.fingerprint)
    seed_everything(job.seed)  # the same draw fit_and_write makes: the fresh initialisation of this run
    fresh = build_model(model_cfg["arch"], list(data.input_shape), data.num_classes, **model_cfg.get("args", {}))
    check_same_architecture(fresh.state_dict(), ckpt["model"], past_ckpt, fix=(
        "warm start from a run of the same architecture and args (set `from.model` to a model with the same arch "
        f"and args as `model`); if the config is right, {past_ckpt} was replaced by another model's checkpoint: "
        "delete it and re-run snakemake"))
    init = shrink_perturb(ckpt["model"], fresh.state_dict(), cfg["shrink"], cfg["perturb"])
    init_id = f"{past_ckpt}@{sha256_file(past_ckpt)[:16]} shrink={cfg['shrink']} perturb={cfg['perturb']}"
    log.info("warm %s: from %s (epoch %d, seed %d), shrink %g perturb %g, %d epochs at lr %g", job.variant, past_ckpt,
             ckpt["epoch"], ckpt["seed"], cfg["shrink"], cfg["perturb"], recipe["epochs"], recipe["optimizer"]["lr"])
    job.fit(data, recipe=recipe, reused=past_run_cost(past_run), init=init, init_id=init_id)


def train_soup(job: Job) -> None:
    """Average past runs' final weights into one model (a uniform or greedy soup, Wortsman et al.
    2022) and write it as a run (``finetune_epochs`` of training after, 0 by default). Its own cost is
    the mixing, the held-out evaluations of a greedy soup and the BatchNorm recompute; the
    ingredients' cost (with what they reused) is counted as reused, with each ingredient's held-out
    accuracy and whether the soup took it. ``job.inputs["ingredients"]``: each ingredient run's final
    checkpoint and run.json, as staged."""
    cfg, recipe, model_cfg, variant = job.cfg, job.recipe, job.model_cfg, job.variant
    ingredient_runs = [str(Path(f).parent) for f in job.inputs["ingredients"] if Path(f).name == "run.json"]
    dev = job.device
    data = job.data()
    if cfg["recipe"] == "greedy" and data.val is None:
        raise ReuseError(f"soup variant {variant}: a greedy soup chooses by held-out accuracy, but dataset "
                         f"'{data.name}' has no val split; set datasets.{data.name}.holdout or use recipe: uniform")
    with FlopCounterMode(display=False):  # its one-off set-up (about 1.5 s) is measurement, not the soup's cost
        torch.ones(1, 1) @ torch.ones(1, 1)
    t0 = time.perf_counter()
    paths = [f"{r}/ckpt/last.pt" for r in ingredient_runs]
    sds = [load_checkpoint(p, fingerprint=data.train.fingerprint)["model"] for p in paths]
    model = build_model(model_cfg["arch"], list(data.input_shape), data.num_classes, **model_cfg.get("args", {}))
    for p, sd in zip(paths, sds):  # an ingredient of another model (a swapped-in file) is refused before mixing
        check_same_architecture(model.state_dict(), sd, p, fix=f"{p} is not a checkpoint of this soup's model: delete "
                                "it and re-run snakemake to retrain its run")
    model.to(dev)
    bs = recipe.get("eval_batch_size", 1024)
    flops = 0

    def settle(sd: dict) -> None:  # the soup's weights into `model`, BatchNorm statistics recomputed
        nonlocal flops
        model.load_state_dict(sd)
        if cfg["bn"] == "recompute":
            flops += recompute_bn(model, data.train.batches(bs), dev)["flops"]

    def heldout_acc(sd: dict) -> float:
        nonlocal flops
        settle(sd)
        fl: dict[str, int] = {}
        acc = evaluate(model, data.val, bs, dev, flops=fl)["acc"]
        flops += fl["eval_flops"]
        return acc

    info: dict[str, Any] = {}
    if cfg["recipe"] == "greedy":
        info = greedy_soup(sds, heldout_acc)
        soup, chosen = info["state_dict"], info["chosen"]
        log.info("greedy soup %s: held-out accuracy of the ingredients %s; took %s (best first) for %.4f with %d "
                 "evaluations", variant, [f"{a:.4f}" for a in info["scores"]], chosen, info["score"],
                 info["evaluations"])
    else:
        soup = average_state_dicts(sds)  # elementwise: no FLOPs in torch's count (matmuls and convolutions)
        chosen = list(range(len(sds)))
    settle(soup)
    soup = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    cost = {"train_time_s": time.perf_counter() - t0, "train_flops": flops}
    reused: dict[str, dict] = {}  # by path: ingredients that share a past run count it once
    for i, r in enumerate(ingredient_runs):
        lines = past_run_cost(r)
        val_acc = read_json(f"{r}/run.json")["final"].get("val_acc")  # the study's best ingredient reads it
        lines[0].update(kind="soup_ingredient", chosen=i in chosen, **({"val_acc": val_acc} if val_acc is not None
                                                                      else {}),
                        **({"heldout_acc": info["scores"][i]} if info else {}))
        for x in lines:
            reused.setdefault(x["path"], x)
    epochs = cfg["finetune_epochs"]
    recipe = rescale_recipe(recipe, epochs, epochs / recipe["epochs"]) if epochs else {**recipe, "epochs": 0,
                                                                                   "checkpoint_epochs": []}
    init_id = "soup:" + ",".join(sha256_file(p)[:16] for p in paths) + f" {cfg['recipe']} bn={cfg['bn']}"
    log.info("soup %s of %d ingredients (%d taken), %s, in %.2fs; %d fine-tuning epochs", variant, len(sds),
             len(chosen), cfg["recipe"], cost["train_time_s"], epochs)
    job.fit(data, recipe=recipe, reused=list(reused.values()), init=soup, init_id=init_id, initial_cost=cost)


def train_averaging(job: Job) -> None:
    """Train one run from scratch whose final model is the average of its own weights along training
    (SWA per epoch, or EMA per step; ``reuse.methods.weights.WeightAveraging``)."""
    cfg, recipe, variant = job.cfg, job.recipe, job.variant
    data = job.data()
    bs = recipe["batch_size"]
    algo = WeightAveraging(cfg["kind"], start=cfg["start"], decay=cfg["decay"], swa_lr=cfg["swa_lr"],
                           bn_batches=lambda: data.train.batches(bs))
    log.info("averaging %s: %s from epoch %d of %d%s", variant, cfg["kind"], algo.first_epoch(recipe["epochs"]) + 1,
             recipe["epochs"], f", decay {cfg['decay']}" if cfg["kind"] == "ema" else
             (f", lr {cfg['swa_lr']}" if cfg["swa_lr"] else ""))
    job.fit(data, recipe={**recipe, "checkpoint_epochs": []}, algorithms=[algo])


#: what a soup ingredient's held-out accuracy is read from, in order: the greedy soup's own evaluation
#: on the val split (after its BatchNorm recompute), then the ingredient run's final val accuracy
INGREDIENT_VAL_KEYS = ("heldout_acc", "val_acc")


def best_ingredient(reused: list[dict]) -> dict | None:
    """The soup ingredient (one of a soup run's ``reused`` records) with the highest validation
    accuracy (:data:`INGREDIENT_VAL_KEYS`; ties to the first listed): the soup's bar, chosen on
    validation as Wortsman et al. choose it, its test accuracy only reported. None where an
    ingredient has no validation accuracy (a dataset without ``holdout``, or a run from before
    run.json recorded one): a best ingredient is then not chosen at all, never by test accuracy."""
    ings = [x for x in reused if x["kind"] == "soup_ingredient"]
    vals = [next((x[k] for k in INGREDIENT_VAL_KEYS if x.get(k) is not None), None) for x in ings]
    if not ings or any(v is None for v in vals):
        return None
    return ings[max(range(len(ings)), key=lambda i: (vals[i], -i))]


def study(*, runs_csvs: list[str], baseline_csv: str, extra: dict[str, list[str]], params: dict, out_csv: str) -> None:
    """Warm starts, soups and weight averaging side by side with the baseline from scratch: per
    (method, variant) the mean test accuracy over seeds with a 95% t-interval, own and reused time,
    and for soups the mean test accuracy of their best ingredient, the one with the highest validation
    accuracy (:func:`best_ingredient`; the soup's bar)."""
    import pandas as pd
    from scipy import stats

    runs = pd.concat([read_csv(f) for f in [baseline_csv, *runs_csvs]], ignore_index=True)
    runs = runs[runs["model"].isin(set(pd.concat([read_csv(f) for f in runs_csvs])["model"]))]
    best_ing, unchosen = {}, []
    for f in extra["soup_runs"]:
        best = best_ingredient(read_json(f)["reused"])
        if best is None:
            unchosen.append(str(Path(f).parent))
        best_ing[run_key(Path(f).parent)] = best["test_acc"] if best is not None else float("nan")
    if unchosen:
        log.warning("soup runs %s: an ingredient has no validation accuracy, so no best ingredient is chosen "
                    "(best_ingredient_acc is empty; it is chosen on validation, never on test); give their dataset a "
                    "`holdout` and re-run them", unchosen)
    runs["best_ingredient_acc"] = runs["run"].map(run_key).map(best_ing)
    runs["variant"] = runs["variant"].fillna("")

    def ci(a: pd.Series) -> float:
        return float(stats.t.ppf(0.975, len(a) - 1) * a.std(ddof=1) / len(a) ** 0.5) if len(a) > 1 else float("nan")

    agg = runs.groupby(["model", "method", "variant"], dropna=False).agg(
        n=("seed", "count"), acc_mean=("test_acc", "mean"), acc_std=("test_acc", "std"), acc_ci95=("test_acc", ci),
        epochs=("epochs", "mean"), train_time_s=("train_time_s", "mean"), reused_time_s=("reused_time_s", "mean"),
        best_ingredient_acc=("best_ingredient_acc", "mean")).reset_index()
    agg["total_time_s"] = agg["train_time_s"] + agg["reused_time_s"]
    base = agg[agg["method"] == "baseline"].set_index("model")["acc_mean"]
    agg["acc_delta"] = agg["acc_mean"] - agg["model"].map(base)
    with atomic_path(out_csv, suffix=".csv") as tmp:
        agg.to_csv(tmp, index=False)
    log.info("warm start, soup and averaging study:\n%s",
             agg.drop(columns=["model"]).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
