"""The workflow stage of ``kd``: train one student by distillation from past runs."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from reuse.cache import LogitCache
from reuse.errors import ReuseError
from reuse.io import read_json
from reuse.methods.kd.algorithm import Distill
from reuse.methods.kd.teachers import CachedTeacher, CheckpointMixupTeacher, OnlineTeacher
from reuse.methods.prune.prune import Prune
from reuse.train import build_from_checkpoint, load_checkpoint
from reuse.workflow import Job

log = logging.getLogger("reuse")


def train(job: Job) -> None:
    """Train one student (``job.model``) by distillation and write its outputs.

    ``job.inputs["teachers"]``: each teacher run's run.json (the past runs, as staged), then their
    logit caches or, with ``online``, checkpoints; ``job.params["teacher_epochs"]``: the checkpoint
    epoch whose logit cache (or checkpoint) is the teacher, or two epochs for checkpoint MixUp;
    ``job.params["teacher_caches"]``: the cache folders read in each teacher run (``logits/e<epoch>``,
    or ``logits/final`` of a method's run).
    """
    cfg, seed, recipe = job.cfg, job.seed, job.recipe
    teacher_runs = [str(Path(f).parent) for f in job.inputs["teachers"] if Path(f).name == "run.json"]
    teacher_epochs = list(job.params["teacher_epochs"])
    dev = job.device
    data = job.data()
    fp = data.train.fingerprint
    reused = [{"kind": "past_run", "path": r, "time_s": (c := read_json(f"{r}/run.json")["cost"])["train_time_s"],
               "flops": c["train_flops"]} for r in teacher_runs]
    mixup = cfg.get("mixup") or {}
    common = {"temperature": cfg["temperature"], "seed": seed, "device": dev}
    if cfg["online"]:
        ckpt = load_checkpoint(f"{teacher_runs[0]}/ckpt/e{teacher_epochs[0]}.pt", fingerprint=fp, map_location=dev)
        teacher = OnlineTeacher(build_from_checkpoint(ckpt).to(dev))
    else:
        # logits/e<epoch> of a baseline run, logits/final of a method run (the spec's teacher_caches)
        names = job.params.get("teacher_caches") or [f"logits/e{e}" for e in teacher_epochs]
        cache_dirs = [f"{r}/{c}" for r in teacher_runs for c in names]
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
    algorithms = []
    if cfg["omit_classes"]:
        labels = data.train.y.numpy()
        absent = sorted(set(cfg["omit_classes"]) - set(np.unique(labels).tolist()))
        keep = np.flatnonzero(~np.isin(labels, cfg["omit_classes"]))
        if absent or len(keep) == 0:
            raise ReuseError(f"kd.variants.{job.variant}.omit_classes: {cfg['omit_classes']} " + (
                f"names classes {absent} that no training example of '{data.name}' has" if absent else
                "leaves no training example") + "; list classes of the dataset that are not all of them")
        algorithms.append(Prune(keep))  # the transfer set: every other class's examples, in a fresh order each epoch
        log.info("transfer set without classes %s: %d of %d training examples", cfg["omit_classes"], len(keep),
                 len(data.train))
    algo = Distill(teacher, temperature=cfg["temperature"], alpha=cfg["alpha"], until=cfg["until"],
                   input_mixup=mixup["beta"] if mixup.get("kind") == "input" else None, seed=seed)
    log.info("kd variant %s: %s teacher from %d past run(s) at epoch(s) %s, T=%g alpha=%g until=%g", job.variant,
             "online" if cfg["online"] else cfg["mode"], len(teacher_runs), teacher_epochs, cfg["temperature"],
             cfg["alpha"], cfg["until"])
    job.fit(data, recipe=recipe, algorithms=[*algorithms, algo], reused=reused)
