"""The stages the Snakemake rules run. Rule scripts are one call into here.

Each stage reads its inputs, does its work in a scratch place, and moves finished files onto the
declared outputs only at the end, so a killed job leaves either no output or a complete one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

import reuse
from reuse import data as rdata
from reuse import ops
from reuse.cache import LogitCache, views_for, write_logit_cache
from reuse.errors import ReuseError
from reuse.io import read_json, save_npz, sha256_file, write_json, write_jsonl
from reuse.models import build_model
from reuse.models.text import check_vocab
from reuse.train import Algorithm, Trainer, build_from_checkpoint, evaluate, load_checkpoint, seed_everything
from reuse.train import distributed

log = logging.getLogger("reuse")


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ReuseError("config asks for device: cuda but torch sees no GPU; set device: auto or cpu")
    return torch.device(device)


@contextlib.contextmanager
def logged(log_path: str | None, threads: int = 1):
    """Send logging and stderr to the job's log file, set the thread count, and turn a
    :class:`ReuseError` into one clear message (no traceback) and exit status 1."""
    torch.set_num_threads(max(1, int(threads)))
    stream = open(log_path, "a", buffering=1) if log_path else sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    old_stderr = sys.stderr
    if log_path:
        sys.stderr = stream
    try:
        yield
    except ReuseError as e:
        log.error("%s", e)
        print(f"reuse error: {e}", file=old_stderr)
        raise SystemExit(1) from None
    except Exception:
        log.exception("unexpected error (a bug in reuse: please report it with this log)")
        raise
    finally:
        sys.stderr = old_stderr
        root.removeHandler(handler)
        if log_path:
            stream.close()


def run_rule(snakemake: Any, stage: Callable[..., None]) -> None:
    """Entry point of a rule script: run ``stage(snakemake)`` under :func:`logged`."""
    log_path = snakemake.log[0] if len(snakemake.log) else None
    with logged(log_path, snakemake.threads):
        log.info("rule %s, wildcards %s", snakemake.rule, dict(snakemake.wildcards))
        stage(snakemake)


# ----------------------------------------------------------------------------- stages
def prepare_data(name: str, spec: dict, out_npz: str, out_json: str) -> None:
    t = time.perf_counter()
    meta = rdata.prepare(name, spec, out_npz, out_json)
    log.info("prepared %s: %d train / %d test examples, %d classes, input %s, in %.1fs", name, meta["n_train"],
             meta["n_test"], meta["num_classes"], meta["input_shape"], time.perf_counter() - t)


def train_run(*, data_dir: str, model_name: str, model_cfg: dict, recipe: dict, seed: int, device: str,
              outputs: dict[str, Any], progress: str = "auto") -> None:
    """Train one baseline run and write its declared outputs (see :func:`fit_and_write`).

    Under ``torchrun`` (``WORLD_SIZE`` > 1: ``python -m reuse train-run SPEC.json``) every process
    calls this: they join one process group and train the run data-parallel, and only rank 0 writes.
    """
    dev = distributed.init(pick_device(device))
    done = False
    try:
        fit_and_write(data=rdata.load(data_dir), model_name=model_name, model_cfg=model_cfg, recipe=recipe,
                      seed=seed, device=dev, outputs=outputs, progress=progress)
        done = True
    finally:
        distributed.teardown(barrier=done)


def train_baseline(*, nproc: int = 1, log_path: str | None = None, threads: int = 1, **train_kwargs: Any) -> None:
    """The baseline rule's stage: :func:`train_run` in this process, or, with ``nproc`` > 1 (config
    ``ddp_processes``), in ``nproc`` data-parallel processes under ``torchrun`` that share the job's
    ``threads`` and append their output to ``log_path``."""
    if int(nproc) <= 1:
        train_run(**train_kwargs)
    else:
        distributed.launch_train_run(train_kwargs, nproc=int(nproc), log_path=log_path, threads=threads)


def fit_and_write(*, data, model_name: str, model_cfg: dict, recipe: dict, seed: int, device: torch.device,
                  outputs: dict[str, Any], progress: str = "auto", method: str = "baseline", variant: str | None = None,
                  algorithms: list[Algorithm] = (), reused: list[dict] = (), method_cfg: dict | None = None,
                  init: dict | None = None, init_id: str | None = None, initial_cost: dict | None = None) -> None:
    """Train one run with ``algorithms`` and write its declared outputs.

    ``outputs``: ``ckpts`` ({epoch: path}), ``metrics``, ``run`` (run.json), ``predictions`` and,
    optionally, ``example_stats`` (per-epoch per-example correctness and loss). The
    run's progress lives in ``state/`` beside them until the run finishes; a rerun after a kill
    resumes from ``state/last.pt``. ``reused`` lists the cost of what the run reused (past runs,
    caches), kept apart from its own cost in run.json.

    ``init``: a state dict the run starts from instead of its fresh initialisation (a warm start, a
    soup), named by ``init_id`` (it joins the trainer's identity, so a resume never mixes starting
    points; on resume the weights come from ``state/last.pt``). ``initial_cost``: work done for the
    run before training (see :class:`reuse.train.Trainer`). A recipe with ``epochs: 0`` evaluates
    and writes the starting model as it is.
    """
    run_dir = Path(outputs["run"]).parent
    state_dir = run_dir / "state"
    spec = {"arch": model_cfg["arch"], "args": model_cfg.get("args", {}), "input_shape": list(data.input_shape),
            "num_classes": data.num_classes}
    check_vocab(spec, data.meta)  # a text dataset's token ids fit the model's embedding table
    seed_everything(seed)
    model = build_model(spec["arch"], spec["input_shape"], spec["num_classes"], **spec["args"])
    n_params = sum(p.numel() for p in model.parameters())
    if init is not None:
        from reuse.methods.weights import check_same_architecture

        check_same_architecture(model.state_dict(), init, init_id or "the initial weights")
        model.load_state_dict(init)
    log.info("%s/%s seed %d: %s with %d parameters on %s, %d epochs", data.name, model_name, seed, spec["arch"],
             n_params, device, recipe["epochs"])
    started = time.time()
    trainer = Trainer(model, data, recipe, seed=seed, state_dir=state_dir, model_spec=spec, device=device,
                      progress=progress, algorithms=algorithms, init_id=init_id, initial_cost=initial_cost)
    state = trainer.fit()

    pred = evaluate(state.model, data.test, recipe.get("eval_batch_size", 1024), device, keep_logits=True,
                    shard=trainer.shard)
    if not distributed.is_main():
        return  # under data parallelism rank 0 writes the run's outputs
    save_npz(outputs["predictions"], idx=np.arange(len(data.test)), target=data.test.y.numpy(), logits=pred["logits"].numpy())
    ckpt_files = {}
    for epoch, path in outputs["ckpts"].items():
        # Link (not move) out of state/, so a kill here leaves state/ whole for the rerun.
        src = state_dir / f"e{epoch}.pt"
        if epoch == "last" or (not src.exists() and int(epoch) == recipe["epochs"]):
            src = state_dir / "last.pt"  # the final epoch is kept even when not in checkpoint_epochs
        _link_or_copy(src, Path(path))
        ckpt_files[str(epoch)] = {"path": str(path), "sha256": sha256_file(path)}
    if outputs.get("example_stats"):
        if trainer.example_stats is None:
            raise ReuseError("example_stats.npz is a declared output but the recipe has example_stats: false")
        save_npz(outputs["example_stats"], correct=trainer.example_stats["correct"].numpy(),
                 loss=trainer.example_stats["loss"].numpy())
    write_jsonl(outputs["metrics"], state.metrics)
    last = state.metrics[-1]
    write_json(outputs["run"], {
        "dataset": data.name, "model": model_name, "method": method, "variant": variant, "seed": seed,
        "config": method_cfg,
        "arch": spec["arch"],
        "args": spec["args"], "num_parameters": n_params, "recipe": recipe,
        "fingerprint": data.train.fingerprint,
        "final": {"test_acc": pred["acc"], "test_loss": pred["loss"], **_calibration(pred["logits"], data.test.y)},
        "best_test_acc": max(m.get("test_acc", 0.0) for m in state.metrics),
        "cost": {k: last[k] for k in ("train_time_s", "eval_time_s", "train_flops", "eval_flops", "examples_seen",
                                      "step")},
        "reused": list(reused), "checkpoints": ckpt_files, "device": str(device), "threads": torch.get_num_threads(),
        "processes": distributed.world_size(),
        "versions": {"reuse": reuse.__version__, "torch": torch.__version__, "python": platform.python_version()},
        "started": started, "finished": time.time()})
    shutil.rmtree(state_dir)
    log.info("finished: test accuracy %.4f, %.1fs training", pred["acc"], last["train_time_s"])


def _calibration(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, Any]:
    """Test NLL (cross-entropy, float64) and expected calibration error over 15 equal-width bins."""
    from reuse import metrics

    lg, t = logits.double().numpy(), targets.numpy()
    return {"test_nll": metrics.nll(lg, t), "test_ece": metrics.ece(lg, t, metrics.ECE_BINS),
            "ece_bins": metrics.ECE_BINS}


def _link_or_copy(src: Path, dst: Path) -> None:
    if not src.exists():
        raise ReuseError(f"{src} is missing, so {dst} cannot be written; delete {src.parent} to retrain the run")
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def logit_cache(*, data_dir: str, checkpoints: list[str], out_dirs: list[str], cache_cfg: dict, device: str) -> None:
    """Write the logit cache of each checkpoint into the matching folder of ``out_dirs``."""
    dev = pick_device(device)
    data = rdata.load(data_dir)
    for checkpoint, out_dir in zip(checkpoints, out_dirs, strict=True):
        ckpt = load_checkpoint(checkpoint, fingerprint=data.train.fingerprint)
        model = build_from_checkpoint(ckpt)
        seed = ckpt["seed"] if cache_cfg.get("seed") is None else cache_cfg["seed"]
        views = views_for(ckpt["recipe"].get("augment"), cache_cfg["views"], seed)
        t = time.perf_counter()
        meta = write_logit_cache(out_dir, model, data.train, views=views, fingerprint=data.train.fingerprint,
                                 source={"path": str(checkpoint), "epoch": ckpt["epoch"], "seed": ckpt["seed"],
                                         "sha256": sha256_file(checkpoint)},
                                 dtype=cache_cfg["dtype"], dense=cache_cfg["dense"], topk=cache_cfg["topk"],
                                 batch_size=cache_cfg["batch_size"], device=dev)
        cache = LogitCache.open(out_dir, fingerprint=data.train.fingerprint)
        clean = cache.logits(np.arange(len(data.train)), 0) if cache.meta["dense"] else \
            cache.probs(np.arange(len(data.train)), 0).log()
        acc = float((clean.argmax(1) == data.train.y).float().mean())
        el2n = float(ops.el2n(clean, data.train.y).mean())
        log.info("%s: cached %d examples x %d views x %d classes (%s) in %.1fs; clean view: train accuracy %.4f, "
                 "mean EL2N %.4f", out_dir, meta["n"], meta["num_views"], meta["num_classes"], meta["dtype"],
                 time.perf_counter() - t, acc, el2n)


def summarize(run_files: list[str], out_csv: str) -> None:
    """One row per finished run (dataset, model, method, variant, seed, accuracy, own cost, reused
    cost) as CSV."""
    import pandas as pd

    from reuse.io import atomic_path

    rows = []
    for f in run_files:
        r = read_json(f)
        reused = r.get("reused", [])
        rows.append({"dataset": r["dataset"], "model": r["model"], "method": r["method"],
                     "variant": r.get("variant") or "", "seed": r["seed"], "arch": r["arch"],
                     "params": r["num_parameters"], "test_acc": r["final"]["test_acc"],
                     "test_loss": r["final"]["test_loss"], "best_test_acc": r["best_test_acc"],
                     "epochs": r["recipe"]["epochs"], **r["cost"],
                     "reused_time_s": sum(x["time_s"] for x in reused), "reused_flops": sum(x["flops"] for x in reused),
                     "reused_cache_bytes": sum(x.get("bytes", 0) for x in reused), "run": str(Path(f).parent),
                     **{f"cfg_{k}": v for k, v in _flat(r.get("config") or {}).items()}})
    df = pd.DataFrame(rows).sort_values(["dataset", "model", "method", "variant", "seed"])
    with atomic_path(out_csv, suffix=".csv") as tmp:
        df.to_csv(tmp, index=False)
    agg = df.groupby(["dataset", "model", "method", "variant"]).agg(
        n=("seed", "count"), acc_mean=("test_acc", "mean"), acc_std=("test_acc", "std"),
        time_s=("train_time_s", "mean"))
    log.info("summary of %d runs:\n%s", len(df), agg.to_string(float_format=lambda v: f"{v:.4f}"))


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}_"))
        else:
            out[f"{prefix}{k}"] = v if not isinstance(v, list) else ",".join(map(str, v))
    return out


def train_kd(*, data_dir: str, variant: str, cfg: dict, student: str, student_cfg: dict, recipe: dict, seed: int,
             teacher_runs: list[str], teacher_epochs: list[int], device: str, outputs: dict[str, Any],
             progress: str = "auto") -> None:
    """Train one student by distillation from past runs (``reuse.methods.kd``) and write its outputs.

    ``teacher_runs``: the past runs' folders; ``teacher_epochs``: the checkpoint epoch whose logit
    cache (or, with ``online``, checkpoint) is the teacher, or two epochs for checkpoint MixUp.
    """
    from reuse.methods.kd import CachedTeacher, CheckpointMixupTeacher, Distill, OnlineTeacher

    dev = pick_device(device)
    data = rdata.load(data_dir)
    fp = data.train.fingerprint
    reused = [{"kind": "past_run", "path": r, "time_s": (c := read_json(f"{r}/run.json")["cost"])["train_time_s"],
               "flops": c["train_flops"]} for r in teacher_runs]
    mixup = cfg.get("mixup") or {}
    common = {"temperature": cfg["temperature"], "seed": seed, "device": dev}
    if cfg["online"]:
        ckpt = load_checkpoint(f"{teacher_runs[0]}/ckpt/e{teacher_epochs[0]}.pt", fingerprint=fp, map_location=dev)
        teacher = OnlineTeacher(build_from_checkpoint(ckpt).to(dev))
    else:
        cache_dirs = [f"{r}/logits/e{e}" for r in teacher_runs for e in teacher_epochs]
        caches = [LogitCache.open(d, fingerprint=fp) for d in cache_dirs]
        for d, c in zip(cache_dirs, caches):
            reused.append({"kind": "logit_cache", "path": d, "time_s": c.meta.get("cost", {}).get("time_s", 0.0),
                           "flops": c.meta.get("cost", {}).get("flops", 0),
                           "bytes": sum(a.nbytes for a in c.arrays.values())})
        if mixup.get("kind") == "checkpoint":
            teacher = CheckpointMixupTeacher(caches[0], caches[1], beta=mixup["beta"], views=cfg["views"], **common)
        else:
            teacher = CachedTeacher(caches, mode=cfg["mode"], views=cfg["views"], **common)
        if teacher.augment != recipe.get("augment"):
            log.info("the student trains on the teacher cache's views: augmentation %s (recipe had %s)",
                     teacher.augment, recipe.get("augment"))
            recipe = {**recipe, "augment": teacher.augment}
    recipe = {**recipe, "checkpoint_epochs": []}
    algo = Distill(teacher, temperature=cfg["temperature"], alpha=cfg["alpha"], until=cfg["until"],
                   input_mixup=mixup["beta"] if mixup.get("kind") == "input" else None, seed=seed)
    log.info("kd variant %s: %s teacher from %d past run(s) at epoch(s) %s, T=%g alpha=%g until=%g", variant,
             "online" if cfg["online"] else cfg["mode"], len(teacher_runs), teacher_epochs, cfg["temperature"],
             cfg["alpha"], cfg["until"])
    fit_and_write(data=data, model_name=student, model_cfg=student_cfg, recipe=recipe, seed=seed, device=dev,
                  outputs=outputs, progress=progress, method="kd", variant=variant, algorithms=[algo], reused=reused,
                  method_cfg=cfg)


# ----------------------------------------------------------------------------- scores and data methods
def score_run(*, data_dir: str, run_dir: str, epochs: list[int], names: list[str], batch_size: int, device: str,
              out_npz: str, out_json: str) -> None:
    """Score every training example at the checkpoints ``epochs`` of one past run (reuse.scores)."""
    from reuse import scores

    data = rdata.load(data_dir)
    meta = scores.score_run(run_dir, data, epochs=epochs, names=names, batch_size=batch_size,
                            device=pick_device(device), out_npz=out_npz, out_json=out_json)
    log.info("scored %d examples of %s at epochs %s in %.1fs", meta["n"], run_dir, epochs, meta["cost"]["time_s"])


def score_table(*, run_npzs: list[str], run_jsons: list[str], out_parquet: str, out_json: str) -> None:
    from reuse import scores

    df = scores.write_score_table(run_npzs, run_jsons, out_parquet, out_json)
    means = df.groupby(["score", "epoch"], observed=True)["value"].mean().unstack("epoch")
    log.info("score table of %d runs, %d rows; mean per score and epoch:\n%s", len(run_npzs), len(df),
             means.to_string(float_format=lambda v: f"{v:.4g}"))


def score_agreement(*, run_npzs: list[str], out_csv: str) -> None:
    """The rank-agreement study of the scores across runs, epochs and numbers of runs."""
    from reuse import scores
    from reuse.io import atomic_path

    df = scores.rank_agreement(run_npzs)
    with atomic_path(out_csv, suffix=".csv") as tmp:
        df.to_csv(tmp, index=False)
    log.info("rank agreement:\n%s", df[df["kind"] == "runs"].to_string(index=False, float_format=lambda v: f"{v:.3f}"))


def rescale_recipe(recipe: dict, epochs: int, time_factor: float) -> dict:
    """``recipe`` with ``epochs`` epochs whose schedule landmarks (warmup, milestones, in epochs) are
    stretched by ``time_factor``, so that they fall on the same fraction of training."""
    sched = dict(recipe["schedule"])
    sched["warmup_epochs"] = sched.get("warmup_epochs", 0) * time_factor
    sched["milestones"] = [m * time_factor for m in sched.get("milestones", [])]
    return {**recipe, "epochs": int(epochs), "schedule": sched, "checkpoint_epochs": []}


def train_data_method(*, data_dir: str, method: str, variant: str, cfg: dict, model_name: str, model_cfg: dict,
                      recipe: dict, seed: int, score_table_path: str | None, score_epoch: int | None, device: str,
                      outputs: dict[str, Any], progress: str = "auto") -> None:
    """Train one run of a data method (prune, curriculum, reweight) with the dataset's score table."""
    import math

    from reuse.methods.curriculum import Curriculum, curriculum_order
    from reuse.methods.prune import Prune, matched_epochs, select
    from reuse.methods.reweight import Reweight, rank_weights
    from reuse.scores import ScoreTable

    data = rdata.load(data_dir)
    n = len(data.train)
    reused: list[dict] = []
    diff = None
    if score_table_path is not None:
        table = ScoreTable.open(score_table_path, fingerprint=data.train.fingerprint)
        diff = table.difficulty(cfg["score"], score_epoch)
        for r in table.meta["runs"]:
            c = read_json(f"{r}/run.json")["cost"]
            reused.append({"kind": "past_run", "path": r, "time_s": c["train_time_s"], "flops": c["train_flops"]})
        reused.append({"kind": "score_table", "path": score_table_path, "time_s": table.meta["cost"]["time_s"],
                       "flops": table.meta["cost"]["flops"]})
    epochs, budget = recipe["epochs"], cfg["budget"]
    if method == "prune":
        ids = select(diff, cfg["keep"], mode=cfg["mode"], drop=cfg["drop"], labels=data.train.y.numpy(),
                     class_balanced=cfg["class_balanced"], seed=seed, n=n)
        new_epochs = matched_epochs(n, len(ids), recipe["batch_size"], epochs, drop_last=recipe["drop_last"],
                                    budget=budget)
        algo = Prune(ids)
        log.info("prune %s: keep %d of %d examples (%s by %s), %d epochs for the same steps as %d x %d epochs",
                 variant, len(ids), n, cfg["mode"], cfg["score"], new_epochs, budget, epochs)
    elif method == "curriculum":
        new_epochs = max(1, math.ceil(budget * epochs))
        algo = Curriculum(curriculum_order(diff, cfg["order"], seed=seed, n=n), pacing=cfg["pacing"],
                          start=cfg["start"], full_at=cfg["full_at"], stages=cfg["stages"])
        log.info("curriculum %s: %s order by %s, %s pacing from %.2f to all data at %.0f%% of %d epochs", variant,
                 cfg["order"], cfg["score"], cfg["pacing"], cfg["start"], 100 * cfg["full_at"], new_epochs)
    elif method == "reweight":
        new_epochs = max(1, math.ceil(budget * epochs))
        w = rank_weights(diff, cfg["strength"])
        algo = Reweight(w)
        log.info("reweight %s: weights %.2f..%.2f by %s rank", variant, w.min(), w.max(), cfg["score"])
    else:
        raise ReuseError(f"unknown data method '{method}' (prune, curriculum, reweight)")
    recipe = rescale_recipe(recipe, new_epochs, new_epochs / epochs)
    fit_and_write(data=data, model_name=model_name, model_cfg=model_cfg, recipe=recipe, seed=seed,
                  device=pick_device(device), outputs=outputs, progress=progress, method=method, variant=variant,
                  algorithms=[algo], reused=reused, method_cfg=cfg)


# ----------------------------------------------------------------------------- adversarial recycling
def adv_cache(*, data_dir: str, checkpoints: list[str], runs: list[str], attack: dict, out_npz: str, out_meta: str,
              batch_size: int, device: str) -> None:
    """Attack every training example once against the past runs' ``checkpoints`` (their mean logits
    when several) and write the adversarial cache (``reuse.methods.adversarial.cache``)."""
    from reuse.methods.adversarial import MeanLogits, input_bounds, write_adv_cache

    dev = pick_device(device)
    data = rdata.load(data_dir)
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


def train_adv(*, data_dir: str, variant: str, cfg: dict, model_name: str, model_cfg: dict, recipe: dict, seed: int,
              cache_dir: str | None, device: str, outputs: dict[str, Any], progress: str = "auto") -> None:
    """Train one run with adversarial examples (``reuse.methods.adversarial``): recycled from the cache
    in ``cache_dir``, or generated online against the run's own model (``cfg["online"]``)."""
    from reuse.methods.adversarial import AdvCache, AdversarialTraining, input_bounds

    dev = pick_device(device)
    data = rdata.load(data_dir)
    reused: list[dict] = []
    if cache_dir is not None:
        cache = AdvCache.open(cache_dir, fingerprint=data.train.fingerprint)
        for s in cache.meta["source"]:
            c = read_json(f"{s['run']}/run.json")["cost"]
            reused.append({"kind": "past_run", "path": s["run"], "time_s": c["train_time_s"],
                           "flops": c["train_flops"]})
        reused.append({"kind": "adv_cache", "path": cache_dir, "time_s": cache.meta["cost"]["time_s"],
                       "flops": cache.meta["cost"]["flops"], "bytes": cache.nbytes})
        algo = AdversarialTraining(use=cfg["use"], ratio=cfg["ratio"], alpha=cfg["alpha"], cache=cache,
                                   train=data.train, seed=seed)
        log.info("adv variant %s: %s with recycled %s examples (eps=%g) from %s", variant, cfg["use"],
                 cache.attack["kind"], cache.attack["eps"], cache_dir)
    else:
        algo = AdversarialTraining(use=cfg["use"], ratio=cfg["ratio"], alpha=cfg["alpha"], online=cfg["online"],
                                   bounds=input_bounds(data), seed=seed)
        log.info("adv variant %s: %s with %s examples (eps=%g) generated online against the model", variant,
                 cfg["use"], cfg["online"]["kind"], cfg["online"]["eps"])
    fit_and_write(data=data, model_name=model_name, model_cfg=model_cfg, recipe={**recipe, "checkpoint_epochs": []},
                  seed=seed, device=dev, outputs=outputs, progress=progress, method="adv", variant=variant,
                  algorithms=[algo], reused=reused, method_cfg=cfg)


def robust_eval_run(*, data_dir: str, checkpoint: str, attack: dict, out_json: str, batch_size: int,
                    device: str) -> None:
    """Robust accuracy of one finished run: ``attack`` (PGD) against the run's own final checkpoint
    on the test split; writes robust.json (robust_acc, clean_acc, attack, n, cost)."""
    from reuse.methods.adversarial import input_bounds, robust_eval

    dev = pick_device(device)
    data = rdata.load(data_dir)
    ckpt = load_checkpoint(checkpoint, fingerprint=data.train.fingerprint, map_location=dev)
    res = robust_eval(build_from_checkpoint(ckpt), data.test, attack, input_bounds(data), batch_size=batch_size,
                      device=dev)
    write_json(out_json, {**res, "checkpoint": str(checkpoint), "epoch": ckpt["epoch"]})
    log.info("%s: clean accuracy %.4f, robust accuracy %.4f under %s %s eps=%g (%d examples, %.1fs)", checkpoint,
             res["clean_acc"], res["robust_acc"], attack["kind"], attack["norm"], attack["eps"], res["n"],
             res["cost"]["time_s"])


def study_adv(*, runs_csv: str, baseline_csv: str, robust_jsons: list[str], variants: dict, out_csv: str) -> None:
    """Per adversarial variant (mean, std, n over seeds): clean and robust accuracy, its own cost, the
    cost with the cache's generation (and with the past runs), beside the baseline runs of its model
    and each online variant of that model: ``robustness_retained`` = (robust - robust_baseline) /
    (robust_online - robust_baseline); ``cost_fraction`` = (own + generation FLOPs) / the online
    run's FLOPs (``cost_fraction_time``: the same in seconds)."""
    import pandas as pd

    from reuse.io import atomic_path

    robust = pd.DataFrame([{"run": str(Path(f).parent), "robust_acc": (r := read_json(f))["robust_acc"],
                            "robust_clean_acc": r["clean_acc"]} for f in robust_jsons])
    runs = pd.read_csv(runs_csv).merge(robust, on="run", how="left")
    runs["gen_time_s"] = runs["run"].map(lambda d: sum(x["time_s"] for x in read_json(f"{d}/run.json")["reused"]
                                                       if x["kind"] == "adv_cache"))
    runs["gen_flops"] = runs["run"].map(lambda d: sum(x["flops"] for x in read_json(f"{d}/run.json")["reused"]
                                                      if x["kind"] == "adv_cache"))
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
    base = pd.read_csv(baseline_csv).merge(robust, on="run", how="left")
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


def study_table(*, runs_csv: str, baseline_csv: str, method: str, out_csv: str) -> None:
    """Aggregate a data method's runs per setting (mean, std, n over seeds), beside the baseline."""
    import pandas as pd

    from reuse.io import atomic_path

    keys = {"prune": ["model", "cfg_score", "cfg_epoch", "cfg_mode", "cfg_keep", "cfg_drop", "cfg_class_balanced",
                      "cfg_budget"],
            "curriculum": ["model", "cfg_score", "cfg_epoch", "cfg_order", "cfg_pacing", "cfg_start", "cfg_full_at",
                           "cfg_budget"],
            "reweight": ["model", "cfg_score", "cfg_epoch", "cfg_strength", "cfg_budget"]}[method]
    runs = pd.read_csv(runs_csv)
    runs["cfg_score"] = runs["cfg_score"].fillna("none")
    agg = runs.groupby(keys + ["variant"], dropna=False).agg(
        n=("seed", "count"), acc_mean=("test_acc", "mean"), acc_std=("test_acc", "std"),
        steps=("step", "mean"), examples_seen=("examples_seen", "mean"), train_time_s=("train_time_s", "mean")
    ).reset_index()
    base = pd.read_csv(baseline_csv)
    base = base[base["model"].isin(agg["model"])].groupby("model").agg(
        baseline_n=("seed", "count"), baseline_acc_mean=("test_acc", "mean"), baseline_acc_std=("test_acc", "std"),
        baseline_steps=("step", "mean")).reset_index()
    agg = agg.merge(base, on="model", how="left")
    agg["acc_delta"] = agg["acc_mean"] - agg["baseline_acc_mean"]
    with atomic_path(out_csv, suffix=".csv") as tmp:
        agg.to_csv(tmp, index=False)
    log.info("%s study:\n%s", method, agg.drop(columns=["model"]).to_string(index=False,
                                                                          float_format=lambda v: f"{v:.4f}"))


# ----------------------------------------------------------------------------- report
def _past_run_cost(run_dir: str) -> list[dict]:
    """What reusing the past run ``run_dir`` costs: its own training, and everything it reused in turn."""
    r = read_json(f"{run_dir}/run.json")
    return [{"kind": "past_run", "path": str(run_dir), "time_s": r["cost"]["train_time_s"],
             "flops": r["cost"]["train_flops"], "test_acc": r["final"]["test_acc"]}] + list(r.get("reused", []))


def train_warm(*, data_dir: str, variant: str, cfg: dict, model_name: str, model_cfg: dict, recipe: dict, seed: int,
               past_run: str, past_ckpt: str, device: str, outputs: dict[str, Any], progress: str = "auto") -> None:
    """Train one run warm-started from a past run's checkpoint (``reuse.methods.weights``): its start
    is ``shrink * past + perturb * fresh``, with ``fresh`` the run's own initialisation (Ash & Adams
    2020; shrink 1, perturb 0 is a plain warm start); ``recipe`` is the new run's (possibly changed)
    recipe. The past run's cost, and what it reused, is counted as reused."""
    from reuse.methods.weights import shrink_perturb

    dev = pick_device(device)
    data = rdata.load(data_dir)
    ckpt = load_checkpoint(past_ckpt, fingerprint=data.train.fingerprint)
    seed_everything(seed)  # the same draw fit_and_write makes: the fresh initialisation of this run
    fresh = build_model(model_cfg["arch"], list(data.input_shape), data.num_classes, **model_cfg.get("args", {}))
    init = shrink_perturb(ckpt["model"], fresh.state_dict(), cfg["shrink"], cfg["perturb"])
    init_id = f"{past_ckpt}@{sha256_file(past_ckpt)[:16]} shrink={cfg['shrink']} perturb={cfg['perturb']}"
    log.info("warm %s: from %s (epoch %d, seed %d), shrink %g perturb %g, %d epochs at lr %g", variant, past_ckpt,
             ckpt["epoch"], ckpt["seed"], cfg["shrink"], cfg["perturb"], recipe["epochs"], recipe["optimizer"]["lr"])
    fit_and_write(data=data, model_name=model_name, model_cfg=model_cfg, recipe=recipe, seed=seed, device=dev,
                  outputs=outputs, progress=progress, method="warm", variant=variant, reused=_past_run_cost(past_run),
                  method_cfg=cfg, init=init, init_id=init_id)


def train_soup(*, data_dir: str, variant: str, cfg: dict, model_name: str, model_cfg: dict, recipe: dict, seed: int,
               ingredient_runs: list[str], device: str, outputs: dict[str, Any], progress: str = "auto") -> None:
    """Average past runs' final weights into one model (a uniform or greedy soup, Wortsman et al.
    2022) and write it as a run (``finetune_epochs`` of training after, 0 by default). Its own cost is
    the mixing, the held-out evaluations of a greedy soup and the BatchNorm recompute; the
    ingredients' cost (with what they reused) is counted as reused, with each ingredient's held-out
    accuracy and whether the soup took it."""
    from reuse.methods.weights import average_state_dicts, greedy_soup, recompute_bn

    dev = pick_device(device)
    data = rdata.load(data_dir)
    if cfg["recipe"] == "greedy" and data.val is None:
        raise ReuseError(f"soup variant {variant}: a greedy soup chooses by held-out accuracy, but dataset "
                         f"'{data.name}' has no val split; set datasets.{data.name}.holdout or use recipe: uniform")
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False):  # its one-off set-up (about 1.5 s) is measurement, not the soup's cost
        torch.ones(1, 1) @ torch.ones(1, 1)
    t0 = time.perf_counter()
    paths = [f"{r}/ckpt/last.pt" for r in ingredient_runs]
    sds = [load_checkpoint(p, fingerprint=data.train.fingerprint)["model"] for p in paths]
    model = build_model(model_cfg["arch"], list(data.input_shape), data.num_classes, **model_cfg.get("args", {}))
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
        lines = _past_run_cost(r)
        lines[0].update(kind="soup_ingredient", chosen=i in chosen,
                        **({"heldout_acc": info["scores"][i]} if info else {}))
        for x in lines:
            reused.setdefault(x["path"], x)
    epochs = cfg["finetune_epochs"]
    recipe = rescale_recipe(recipe, epochs, epochs / recipe["epochs"]) if epochs else {**recipe, "epochs": 0,
                                                                                   "checkpoint_epochs": []}
    init_id = "soup:" + ",".join(sha256_file(p)[:16] for p in paths) + f" {cfg['recipe']} bn={cfg['bn']}"
    log.info("soup %s of %d ingredients (%d taken), %s, in %.2fs; %d fine-tuning epochs", variant, len(sds),
             len(chosen), cfg["recipe"], cost["train_time_s"], epochs)
    fit_and_write(data=data, model_name=model_name, model_cfg=model_cfg, recipe=recipe, seed=seed, device=dev,
                  outputs=outputs, progress=progress, method="soup", variant=variant, reused=list(reused.values()),
                  method_cfg=cfg,
                  init=soup, init_id=init_id, initial_cost=cost)


def train_averaging(*, data_dir: str, variant: str, cfg: dict, model_name: str, model_cfg: dict, recipe: dict,
                    seed: int, device: str, outputs: dict[str, Any], progress: str = "auto") -> None:
    """Train one run from scratch whose final model is the average of its own weights along training
    (SWA per epoch, or EMA per step; ``reuse.methods.weights.WeightAveraging``)."""
    from reuse.methods.weights import WeightAveraging

    data = rdata.load(data_dir)
    bs = recipe["batch_size"]
    algo = WeightAveraging(cfg["kind"], start=cfg["start"], decay=cfg["decay"], swa_lr=cfg["swa_lr"],
                           bn_batches=lambda: data.train.batches(bs))
    log.info("averaging %s: %s from epoch %d of %d%s", variant, cfg["kind"], algo.first_epoch(recipe["epochs"]) + 1,
             recipe["epochs"], f", decay {cfg['decay']}" if cfg["kind"] == "ema" else
             (f", lr {cfg['swa_lr']}" if cfg["swa_lr"] else ""))
    fit_and_write(data=data, model_name=model_name, model_cfg=model_cfg, recipe={**recipe, "checkpoint_epochs": []},
                  seed=seed, device=pick_device(device), outputs=outputs, progress=progress, method="averaging",
                  variant=variant, algorithms=[algo], method_cfg=cfg)


def weights_study(*, runs_csvs: list[str], baseline_csv: str, out_csv: str) -> None:
    """Warm starts, soups and weight averaging side by side with the baseline from scratch: per
    (method, variant) the mean test accuracy over seeds with a 95% t-interval, own and reused time,
    and for soups the mean accuracy of their best ingredient (the soup's bar)."""
    import pandas as pd
    from scipy import stats

    from reuse.io import atomic_path

    runs = pd.concat([pd.read_csv(f) for f in [baseline_csv, *runs_csvs]], ignore_index=True)
    runs = runs[runs["model"].isin(set(pd.concat([pd.read_csv(f) for f in runs_csvs])["model"]))]
    best_ing = {}
    for row in runs[runs["method"] == "soup"].itertuples(index=False):
        accs = [x["test_acc"] for x in read_json(f"{row.run}/run.json")["reused"] if x["kind"] == "soup_ingredient"]
        best_ing[row.run] = max(accs)
    runs["best_ingredient_acc"] = runs["run"].map(best_ing)
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


def report(*, results: str, config: dict | None = None, out_dir: str | None = None) -> dict[str, Any]:
    """The summary table (``<results>/summary.parquet``, ``.csv``) and the report pages from every run
    under ``results``; with ``config``, every run it declares that did not finish is shown missing."""
    from reuse.report import build

    out = build(results, config, out_dir=out_dir)
    runs = out["runs"]
    bad = runs[runs["status"] != "ok"]
    for r in bad.itertuples(index=False):
        log.warning("not finished (%s): %s/%s/%s/%s seed %s %s", r.status, r.dataset, r.model, r.method, r.variant,
                    r.seed, r.error)
    log.info("report: %d of %d runs finished; %s", len(runs) - len(bad), len(runs),
             Path(out_dir or Path(results) / "report") / "index.html")
    return out
