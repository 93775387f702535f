"""The workflow stages of ``adv``: the adversarial cache built once against past runs, a run trained
with recycled (or online) adversarial examples, the robust accuracy of a finished run, and the study."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from reuse.io import atomic_path, read_csv, read_json, sha256_file, write_json
from reuse.methods.adversarial.attacks import MeanLogits, input_bounds, robust_eval
from reuse.methods.adversarial.cache import AdvCache, write_adv_cache
from reuse.methods.adversarial.recycle import AdversarialTraining
from reuse.train import build_from_checkpoint, load_checkpoint
from reuse.workflow import Job, load_data, pick_device, run_key

log = logging.getLogger("reuse")


def adv_cache(*, data_dir: str, checkpoints: list[str], runs: list[str], attack: dict, out_npz: str, out_meta: str,
              batch_size: int, device: str) -> None:
    """Attack every training example once against the past runs' ``checkpoints`` (their mean logits
    when several) and write the adversarial cache (``reuse.methods.adversarial.cache``)."""
    dev = pick_device(device)
    data = load_data(data_dir)
    fp = data.train.fingerprint
    models, source = [], []
    for ckpt_path, run in zip(checkpoints, runs, strict=True):
        ckpt = load_checkpoint(ckpt_path, fingerprint=fp, map_location=dev)
        models.append(build_from_checkpoint(ckpt))
        source.append({"run": run, "path": str(ckpt_path), "epoch": ckpt["epoch"], "seed": ckpt["seed"],
                       "sha256": sha256_file(ckpt_path)})
    model = models[0] if len(models) == 1 else MeanLogits(models)
    meta = write_adv_cache(out_npz, out_meta, model, data.train, spec=attack, bounds=input_bounds(data),
                           fingerprint=fp, source=source, batch_size=batch_size, device=dev)
    log.info("%s: %s %s eps=%g against %d past run(s): source accuracy %.4f clean, %.4f adversarial; %d examples "
             "(%.1f MB) in %.1fs, %.3g FLOPs", out_npz, attack["kind"], attack["norm"], attack["eps"], len(models),
             meta["source_clean_acc"], meta["source_adv_acc"], meta["n"], meta["bytes"] / 1e6, meta["cost"]["time_s"],
             meta["cost"]["flops"])


def cache_rule(sm: Any) -> None:
    """The ``adv_cache`` rule: the past runs as staged (their run.json inputs)."""
    adv_cache(data_dir=str(Path(sm.input.npz).parent), checkpoints=list(sm.input.ckpts),
              runs=[str(Path(f).parent) for f in sm.input.runs], attack=dict(sm.params.attack),
              out_npz=sm.output.npz, out_meta=sm.output.meta, batch_size=sm.params.attack["batch_size"],
              device=sm.params.device)


def train(job: Job) -> None:
    """Train one run with adversarial examples: recycled from the staged cache (``job.inputs["cache"]``)
    or generated online against the run's own model (``online``)."""
    cfg, seed = job.cfg, job.seed
    data = job.data()
    reused: list[dict] = []
    if job.inputs["cache"]:
        cache_dir = str(Path(job.inputs["cache"][0]).parent)
        cache = AdvCache.open(cache_dir, fingerprint=data.train.fingerprint)
        for f in job.inputs["past_runs"]:
            c = read_json(f)["cost"]
            reused.append({"kind": "past_run", "path": str(Path(f).parent), "time_s": c["train_time_s"],
                           "flops": c["train_flops"]})
        reused.append({"kind": "adv_cache", "path": cache_dir, "time_s": cache.meta["cost"]["time_s"],
                       "flops": cache.meta["cost"]["flops"], "bytes": cache.nbytes})
        algo = AdversarialTraining(use=cfg["use"], ratio=cfg["ratio"], alpha=cfg["alpha"], cache=cache,
                                   train=data.train, seed=seed)
        log.info("adv variant %s: %s with recycled %s examples (eps=%g) from %s", job.variant, cfg["use"],
                 cache.attack["kind"], cache.attack["eps"], cache_dir)
    else:
        algo = AdversarialTraining(use=cfg["use"], ratio=cfg["ratio"], alpha=cfg["alpha"], online=cfg["online"],
                                   bounds=input_bounds(data), seed=seed)
        log.info("adv variant %s: %s with %s examples (eps=%g) generated online against the model", job.variant,
                 cfg["use"], cfg["online"]["kind"], cfg["online"]["eps"])
    job.fit(data, recipe={**job.recipe, "checkpoint_epochs": []}, algorithms=[algo], reused=reused)


def robust_eval_run(*, data_dir: str, checkpoint: str, attack: dict, out_json: str, batch_size: int,
                    device: str) -> None:
    """Robust accuracy of one finished run: ``attack`` (PGD) against the run's own final checkpoint
    on the test split; writes robust.json (robust_acc, clean_acc, attack, n, cost)."""
    dev = pick_device(device)
    data = load_data(data_dir)
    ckpt = load_checkpoint(checkpoint, fingerprint=data.train.fingerprint, map_location=dev)
    res = robust_eval(build_from_checkpoint(ckpt), data.test, attack, input_bounds(data), batch_size=batch_size,
                      device=dev)
    write_json(out_json, {**res, "checkpoint": str(checkpoint), "epoch": ckpt["epoch"]})
    log.info("%s: clean accuracy %.4f, robust accuracy %.4f under %s %s eps=%g (%d examples, %.1fs)", checkpoint,
             res["clean_acc"], res["robust_acc"], attack["kind"], attack["norm"], attack["eps"], res["n"],
             res["cost"]["time_s"])


def robust_rule(sm: Any) -> None:
    """The ``robust_eval`` rule."""
    robust_eval_run(data_dir=str(Path(sm.input.npz).parent), checkpoint=sm.input.ckpt, attack=dict(sm.params.attack),
                    out_json=sm.output[0], batch_size=sm.params.attack["batch_size"], device=sm.params.device)


def study(*, runs_csvs: list[str], baseline_csv: str, extra: dict[str, list[str]], params: dict,
          out_csv: str) -> None:
    """Per adversarial variant (mean, std, n over seeds): clean and robust accuracy, its own cost, the
    cost with the cache's generation (and with the past runs), beside the baseline runs of its model
    and each online variant of that model: ``robustness_retained`` = (robust - robust_baseline) /
    (robust_online - robust_baseline); ``cost_fraction`` = (own + generation FLOPs) / the online
    run's FLOPs (``cost_fraction_time``: the same in seconds). ``extra["robust"]``: every robust.json;
    ``extra["run_files"]``: every adversarial run's run.json; ``params["variants"]``: the variants'
    settings. Rows and files are matched by :func:`reuse.workflow.run_key`, not by path."""
    import pandas as pd

    variants = params["variants"]
    robust = pd.DataFrame([{"key": run_key(Path(f).parent), "robust_acc": (r := read_json(f))["robust_acc"],
                            "robust_clean_acc": r["clean_acc"]} for f in extra["robust"]])
    gen = {run_key(Path(f).parent): [x for x in read_json(f)["reused"] if x["kind"] == "adv_cache"]
           for f in extra["run_files"]}
    runs = pd.concat([read_csv(f) for f in runs_csvs], ignore_index=True)
    runs["key"] = runs["run"].map(run_key)
    runs = runs.merge(robust, on="key", how="left")
    runs["gen_time_s"] = runs["key"].map(lambda k: sum(x["time_s"] for x in gen[k]))
    runs["gen_flops"] = runs["key"].map(lambda k: sum(x["flops"] for x in gen[k]))
    runs["online"] = runs["variant"].map(lambda v: variants[v].get("online") is not None)
    runs["use"] = runs["variant"].map(lambda v: variants[v]["use"])
    runs["cache"] = runs["variant"].map(lambda v: variants[v].get("cache") or "")
    agg = runs.groupby(["dataset", "model", "variant", "use", "cache", "online"]).agg(
        n=("seed", "count"), acc_mean=("test_acc", "mean"), acc_std=("test_acc", "std"),
        robust_n=("robust_acc", "count"), robust_mean=("robust_acc", "mean"), robust_std=("robust_acc", "std"),
        train_time_s=("train_time_s", "mean"), train_flops=("train_flops", "mean"),
        gen_time_s=("gen_time_s", "mean"), gen_flops=("gen_flops", "mean"),
        reused_time_s=("reused_time_s", "mean"), reused_flops=("reused_flops", "mean")).reset_index()
    agg["cost_time_s"] = agg["train_time_s"] + agg["gen_time_s"]
    agg["cost_flops"] = agg["train_flops"] + agg["gen_flops"]
    agg["cost_with_past_time_s"] = agg["train_time_s"] + agg["reused_time_s"]
    agg["cost_with_past_flops"] = agg["train_flops"] + agg["reused_flops"]
    base = read_csv(baseline_csv)
    base = base.assign(key=base["run"].map(run_key)).merge(robust, on="key", how="left")
    base = base.groupby(["dataset", "model"]).agg(
        baseline_n=("seed", "count"), baseline_acc_mean=("test_acc", "mean"), baseline_acc_std=("test_acc", "std"),
        baseline_robust_n=("robust_acc", "count"), baseline_robust_mean=("robust_acc", "mean"),
        baseline_robust_std=("robust_acc", "std"), baseline_train_flops=("train_flops", "mean")).reset_index()
    agg = agg.merge(base, on=["dataset", "model"], how="left")
    online = agg[agg["online"]][["dataset", "model", "variant", "robust_mean", "acc_mean", "cost_time_s",
                                 "cost_flops"]].rename(
        columns={"variant": "vs_online", "robust_mean": "online_robust_mean", "acc_mean": "online_acc_mean",
                 "cost_time_s": "online_time_s", "cost_flops": "online_flops"})
    out = agg.merge(online, on=["dataset", "model"], how="left")
    out["vs_online"] = out["vs_online"].fillna("")
    gain = out["online_robust_mean"] - out["baseline_robust_mean"]
    out["robustness_retained"] = (out["robust_mean"] - out["baseline_robust_mean"]) / gain.where(gain != 0)
    out["cost_fraction"] = out["cost_flops"] / out["online_flops"]
    out["cost_fraction_time"] = out["cost_time_s"] / out["online_time_s"]
    out["acc_delta"] = out["acc_mean"] - out["baseline_acc_mean"]
    out["robust_delta"] = out["robust_mean"] - out["baseline_robust_mean"]
    with atomic_path(out_csv, suffix=".csv") as tmp:
        out.to_csv(tmp, index=False)
    cols = ["dataset", "model", "variant", "vs_online", "acc_mean", "robust_mean", "baseline_robust_mean",
            "robustness_retained", "cost_fraction", "cost_fraction_time"]
    log.info("adversarial study:\n%s", out[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
