"""The workflow stages of ``transfer``: one source run and its two transfers to the target, the
influence table built from the subset runs, and the three study tables (counterfactuals, class
influences, the source classes that most influence each target class).

Every choice reads the target's validation split (its ``holdout`` examples), never its test split:
the influences are estimated on the transfers' predictions of the validation examples, and the
counterfactual runs' classes are picked from those influences; the test split only scores the
transfers (their reported accuracies)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reuse import data as rdata
from reuse.data.datasets import DatasetPair, TensorData
from reuse.data.fingerprint import hash_array, make_fingerprint
from reuse.errors import ReuseError
from reuse.io import atomic_path, read_csv, read_json, save_npz, sha256_file, write_json
from reuse.safeload import read_npz
from reuse.methods.prune.prune import Prune
from reuse.methods.transfer import influence as inf
from reuse.methods.transfer.spec import FULL, SUBSETS, takes
from reuse.models import build_model
from reuse.models.heads import head_name, split_head
from reuse.train import Trainer, build_from_checkpoint, evaluate, load_checkpoint, seed_everything
from reuse.train.flops import FlopCounterMode
from reuse.workflow import Job

log = logging.getLogger("reuse")

TRANSFERS = ("probe", "finetune")
#: the target splits a transfer predicts: ``val`` (the influences and every choice read it), ``test``
#: (reported accuracies only)
SPLITS = ("val", "test")
#: the split the influences (and so the counterfactuals' picks) are estimated on
INFLUENCE_SPLIT = "val"
# recipe keys of the fast pipeline that a transfer takes from its source run's recipe
PIPELINE_KEYS = ("eval_batch_size", "data_on_device", "amp", "channels_last")


# ----------------------------------------------------------------------------- one run
def run_classes(cfg: dict, params: dict, seed: int, scores: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The source classes a run trains on and those it leaves out (sorted ids): subset ``seed`` of
    the subsets, every class for the full source, or all but the k a counterfactual removes
    (``scores``: the influence of each class, for the harmful and helpful kinds)."""
    c, kind = params["classes"], cfg["kind"]
    if kind == SUBSETS:
        kept = inf.subset_classes(c, params["fraction"], params["subset_seed"], seed)
    elif kind == FULL:
        kept = np.arange(c)
    else:
        removed = inf.removed_classes(np.zeros(c) if scores is None else scores, kind, params["k"],
                                      seed=params["subset_seed"], run_seed=seed)
        kept = np.setdiff1d(np.arange(c), removed)
    return kept, np.setdiff1d(np.arange(c), kept)


def transfer_recipe(cfg: dict, source_recipe: dict, augment: dict | None = None) -> dict:
    """The full training recipe of one transfer from its block (epochs, batch size, optimizer, lr,
    weight decay; a cosine schedule) and the source run's pipeline keys; resume state every tenth of it."""
    epochs = cfg["epochs"]
    return {"epochs": epochs, "batch_size": cfg["batch_size"], "drop_last": False, "eval_every": epochs,
            "label_smoothing": 0.0, "checkpoint_epochs": [], "example_stats": False,
            "checkpoint_every": max(1, epochs // 10), "compile": False, "augment": augment,
            "optimizer": {"name": cfg["optimizer"], "lr": cfg["lr"], "weight_decay": cfg["weight_decay"],
                          "momentum": 0.9, "nesterov": False, "betas": [0.9, 0.999]},
            "schedule": {"name": "cosine", "warmup_epochs": 0},
            **{k: source_recipe[k] for k in PIPELINE_KEYS if k in source_recipe}}


@torch.no_grad()
def features(encoder: torch.nn.Module, split, batch_size: int, device: torch.device) -> tuple[np.ndarray, dict]:
    """The encoder's features of every example of ``split`` in id order ``[N, D]`` (float32), and
    their cost (forward FLOPs, measured once per batch size, and wall-clock)."""
    t0 = time.perf_counter()
    was = encoder.training
    encoder.eval()
    out, flops, measured = [], 0, {}
    for x, _, _ in split.batches(batch_size):
        x = x.to(device)
        if x.shape[0] not in measured:
            with FlopCounterMode(display=False) as counter:
                f = encoder(x)
            measured[x.shape[0]] = counter.get_total_flops()
        else:
            f = encoder(x)
        flops += measured[x.shape[0]]
        out.append(f.float().flatten(1).cpu())
    encoder.train(was)
    return torch.cat(out).numpy(), {"time_s": time.perf_counter() - t0, "flops": int(flops)}


def feature_pair(name: str, train: np.ndarray, y_train: np.ndarray, test: np.ndarray, y_test: np.ndarray,
                 num_classes: int, val: np.ndarray | None = None, y_val: np.ndarray | None = None) -> DatasetPair:
    """Features as a dataset of their own (standardised with the training split's statistics;
    a feature constant on it is left unscaled), fingerprinted by their values; ``val``: the
    validation split's features, where the target has one."""
    mean, std = train.mean(0), train.std(0)
    std[std == 0] = 1.0
    splits = {}
    parts = [("train", train, y_train), ("test", test, y_test)] + ([("val", val, y_val)] if val is not None else [])
    for split, x, y in parts:
        fp = make_fingerprint(name=name, kind="features", split=split, labels=y, inputs_sha256=hash_array(x),
                              num_classes=num_classes, input_shape=[x.shape[1]])
        splits[split] = TensorData(x, y, num_classes=num_classes, mean=mean.tolist(), std=std.tolist(), fingerprint=fp)
    return DatasetPair(name=name, meta={"num_classes": num_classes, "input_shape": [train.shape[1]]}, **splits)


def _fit(trainer: Trainer) -> dict:
    """Train (or resume, or find done) one transfer; its training cost and final test accuracy."""
    state = trainer.fit()
    last = state.metrics[-1]
    if trainer.resumed_from is not None:
        log.info("transfer resumed from epoch %d of %d (%s)", trainer.resumed_from, trainer.recipe["epochs"],
                 trainer.state_dir)
    return {"epochs": state.epoch, "train_time_s": last["train_time_s"], "train_flops": last["train_flops"],
            "eval_time_s": last["eval_time_s"], "eval_flops": last["eval_flops"]}


def _predict(model: torch.nn.Module, split, batch_size: int, device: torch.device) -> tuple[np.ndarray, dict]:
    t0 = time.perf_counter()
    fl: dict = {}
    pred = evaluate(model, split, batch_size, device, keep_logits=True, flops=fl)
    return pred["logits"].double().numpy(), {"time_s": time.perf_counter() - t0, "flops": int(fl["eval_flops"])}


def _predict_splits(model: torch.nn.Module, data: DatasetPair, batch_size: int, device: torch.device,
                    cost: dict, extra: dict[str, dict] | None = None) -> dict[str, np.ndarray]:
    """The logits of ``model`` on the target's validation and test splits (:data:`SPLITS`), by split;
    their cost goes into ``cost`` as ``<split>_time_s`` and ``<split>_flops`` (plus ``extra[split]``'s,
    e.g. the features' forward passes)."""
    out = {}
    for split in SPLITS:
        out[split], c = _predict(model, getattr(data, split), batch_size, device)
        more = (extra or {}).get(split, {"time_s": 0.0, "flops": 0})
        cost.update({f"{split}_time_s": c["time_s"] + more["time_s"], f"{split}_flops": c["flops"] + more["flops"]})
    return out


def linear_probe(source: torch.nn.Module, target: DatasetPair, cfg: dict, source_recipe: dict, *, seed: int,
                 state_dir: Path, device: torch.device, progress: str) -> tuple[dict[str, np.ndarray], dict]:
    """A linear classifier on the source model's frozen features of the target, trained by the
    trainer (so it resumes exactly); its logits on the target's validation and test splits (by
    split, ``[N, K]`` each) and its record."""
    probe_x = next(iter(target.train.batches(2)))[0].to(device)
    encoder, _ = split_head(source, probe=probe_x)  # removes the source head: `source` is the encoder now
    bs = source_recipe.get("eval_batch_size", 1024)
    f_train, c_train = features(encoder, target.train, bs, device)
    f_test, c_test = features(encoder, target.test, bs, device)
    f_val, c_val = features(encoder, target.val, bs, device)
    data = feature_pair(f"{target.name}:features", f_train, target.train.y.numpy(), f_test, target.test.y.numpy(),
                        target.num_classes, val=f_val, y_val=target.val.y.numpy())
    recipe = transfer_recipe(cfg, source_recipe)
    seed_everything(seed)
    head = torch.nn.Linear(f_train.shape[1], target.num_classes)
    trainer = Trainer(head, data, recipe, seed=seed, state_dir=state_dir, device=device, progress=progress,
                      model_spec={"arch": "linear", "in_features": int(f_train.shape[1]),
                                  "num_classes": target.num_classes},
                      initial_cost={"train_time_s": c_train["time_s"], "train_flops": c_train["flops"]})
    cost = _fit(trainer)
    cost["feature_dim"] = int(f_train.shape[1])
    logits = _predict_splits(trainer.state.model, data, recipe.get("eval_batch_size", 1024), device, cost,
                             extra={"val": c_val, "test": c_test})
    return logits, {"recipe": recipe, "cost": cost}


def finetune(source_sd: dict, spec: dict, target: DatasetPair, cfg: dict, source_recipe: dict, *, seed: int,
             init_id: str, state_dir: Path, device: torch.device, progress: str) -> tuple[dict[str, np.ndarray], dict]:
    """Every layer of the source model, with a new classifier for the target's classes, trained on
    the target by the trainer (resumes exactly); its logits on the target's validation and test
    splits (by split) and its record."""
    shape = list(target.input_shape)
    seed_everything(seed)
    model = build_model(spec["arch"], shape, target.num_classes, **spec.get("args", {}))
    head = head_name(model)
    body = {k: v for k, v in source_sd.items() if not k.startswith(f"{head}.")}
    missing, unexpected = model.load_state_dict(body, strict=False)
    if unexpected or {k.rsplit(".", 1)[0] for k in missing} - {head}:
        raise ReuseError(f"the source model's weights do not fit the {spec['arch']} built for the target (missing "
                         f"{missing}, unexpected {unexpected})")
    recipe = transfer_recipe(cfg, source_recipe, cfg.get("augment"))
    trainer = Trainer(model, target, recipe, seed=seed, state_dir=state_dir, device=device, progress=progress,
                      model_spec={"arch": spec["arch"], "args": spec.get("args", {}), "input_shape": shape,
                                  "num_classes": target.num_classes}, init_id=init_id)
    cost = _fit(trainer)
    logits = _predict_splits(trainer.state.model, target, recipe.get("eval_batch_size", 1024), device, cost)
    return logits, {"recipe": recipe, "cost": cost}


def _class_names(meta: dict, n: int) -> list[str]:
    names = meta.get("classes")
    return [str(c) for c in names] if isinstance(names, list) and len(names) == n else [str(c) for c in range(n)]


def train(job: Job) -> None:
    """One source run: train the model on its source classes (the trainer: resumes after a kill; every
    subset run starts from the same initial weights, drawn from ``subset_seed``, so that the spread of
    initialisations adds nothing to the influence estimates; its seed still orders and augments its data),
    then transfer it to the target by a linear probe and by a full fine-tune (each by the trainer,
    in ``state/probe`` and ``state/finetune``: a rerun resumes them and redoes neither) and write
    both transfers' predictions of the target's validation and test examples (``transfer.npz``) and
    their record (``transfer.json``). A harmful or helpful counterfactual picks its classes from the
    influence table, which the validation predictions alone decide."""
    p, cfg = job.params, job.cfg
    data = job.data()
    c = p["classes"]
    if data.num_classes != c:
        raise ReuseError(f"transfer.classes: {c} source classes expected, but dataset '{data.name}' has "
                         f"{data.num_classes}; set transfer.classes to {data.num_classes} (or null)")
    target = rdata.load(Path(job.inputs["target"][0]).parent)
    if target.val is None:
        raise ReuseError(f"transfer.target: dataset '{target.name}' has no validation split; the influences (and "
                         "the counterfactuals' choice of classes) are estimated on it, never on the test split that "
                         f"scores the transfers; set datasets.{target.name}.holdout")
    spec = job.model_cfg
    if not takes(spec["arch"], list(data.input_shape), list(target.input_shape)):
        raise ReuseError(f"transfer.target: dataset '{target.name}' has inputs of shape {list(target.input_shape)}, "
                         f"which {spec['arch']} built for the source's {list(data.input_shape)} cannot take")
    scores, reused = None, []
    if "influence" in job.inputs:
        table, meta_file = job.inputs["influence"]
        scores = _influence_scores(table, c)
        meta = read_json(meta_file)
        reused.append({"kind": "influence_table", "path": str(table), "time_s": meta["cost"]["time_s"],
                       "flops": meta["cost"]["flops"], "runs": meta["runs"],
                       "note": "the subset runs and their transfers that the influence table reads"})
    kept, removed = run_classes(cfg, p, job.seed, scores)
    names = _class_names(data.meta, c)
    train_ids = np.flatnonzero(np.isin(data.train.y.numpy(), kept))
    log.info("transfer %s seed %d: source '%s' on %d of %d classes (%d examples)%s, then to '%s'", job.variant,
             job.seed, data.name, len(kept), c, len(train_ids),
             f" without {', '.join(names[i] for i in removed)}" if cfg["kind"] != SUBSETS and len(removed) else "",
             target.name)
    init = init_id = None
    if cfg["kind"] == SUBSETS:  # common initial weights: the subset runs differ in their classes, not their start
        seed_everything(p["subset_seed"])
        init = build_model(spec["arch"], list(data.input_shape), c, **spec.get("args", {})).state_dict()
        init_id = f"the subset runs' initial weights (subset_seed {p['subset_seed']})"
    run_dir = Path(job.outputs["run"]).parent
    state_dir = run_dir / "state"

    def finish(trainer) -> dict:
        ckpt_path = state_dir / "last.pt"
        ckpt = load_checkpoint(ckpt_path, fingerprint=data.train.fingerprint)  # refuses another dataset's run
        init_id = f"source {sha256_file(ckpt_path)[:16]}"
        src = build_from_checkpoint(ckpt).to(job.device)
        src_logits, _ = _predict(src, data.test, job.recipe.get("eval_batch_size", 1024), job.device)
        mine = np.isin(data.test.y.numpy(), kept)
        sub = src_logits[mine][:, kept].argmax(1)
        source_acc = float((kept[sub] == data.test.y.numpy()[mine]).mean()) if mine.any() else float("nan")
        ys = {split: getattr(target, split).y.numpy() for split in SPLITS}
        arrays: dict[str, np.ndarray] = {}
        for split, y in ys.items():  # test under the plain names, validation under val_*
            arrays[_key(split, "y")], arrays[_key(split, "idx")] = y, np.arange(len(y))
        record: dict[str, Any] = {}
        logits, record["probe"] = linear_probe(build_from_checkpoint(ckpt).to(job.device), target, p["probe"],
                                               job.recipe, seed=job.seed, state_dir=state_dir / "probe",
                                               device=job.device, progress=job.progress)
        per = {"probe": {split: inf.per_example(logits[split], ys[split]) for split in SPLITS}}
        logits, record["finetune"] = finetune(ckpt["model"], ckpt["model_spec"], target, p["finetune"], job.recipe,
                                              seed=job.seed, init_id=init_id, state_dir=state_dir / "finetune",
                                              device=job.device, progress=job.progress)
        per["finetune"] = {split: inf.per_example(logits[split], ys[split]) for split in SPLITS}
        for t in TRANSFERS:
            for split in SPLITS:
                for metric, v in per[t][split].items():
                    arrays[_key(split, f"{t}_{metric}")] = v.astype(np.float32 if metric != "correct" else np.int8)
                pre = "" if split == "test" else f"{split}_"
                record[t].update({f"{pre}acc": float(per[t][split]["correct"].mean()),
                                  f"{pre}mean_prob": float(per[t][split]["prob"].mean()),
                                  f"{pre}mean_margin": float(per[t][split]["margin"].mean())})
        last = trainer.state.metrics[-1]
        own = {"time_s": last["train_time_s"], "flops": last["train_flops"]}
        total_t = own["time_s"] + sum(r["cost"]["train_time_s"] + sum(r["cost"][f"{s}_time_s"] for s in SPLITS)
                                      for r in record.values())
        total_f = own["flops"] + sum(r["cost"]["train_flops"] + sum(r["cost"][f"{s}_flops"] for s in SPLITS)
                                     for r in record.values())
        summary = {"source": data.name, "target": target.name, "kind": cfg["kind"], "k": cfg["k"], "seed": job.seed,
                   "num_classes": c, "classes": kept.tolist(), "removed": removed.tolist(),
                   "class_names": [names[i] for i in kept], "removed_names": [names[i] for i in removed],
                   "source_subset_acc": source_acc, "source_checkpoint": init_id,
                   "target_fingerprint": {s: getattr(target, s).fingerprint["digest"] for s in ("train", *SPLITS)},
                   "target_classes": _class_names(target.meta, target.num_classes),
                   **{t: record[t] for t in TRANSFERS},
                   "cost": {"source_time_s": own["time_s"], "source_flops": own["flops"], "time_s": total_t,
                            "flops": total_f}}
        npz, js = job.outputs["extra"]
        save_npz(npz, **arrays)
        write_json(js, summary)
        log.info("transfer to '%s': linear probe %.4f, fine-tune %.4f test accuracy (validation %.4f, %.4f; source "
                 "accuracy on its %d classes %.4f)", target.name, record["probe"]["acc"], record["finetune"]["acc"],
                 record["probe"]["val_acc"], record["finetune"]["val_acc"], len(kept), source_acc)
        return {"transfer": {k: summary[k] for k in ("source", "target", "kind", "k", "classes", "removed",
                                                     "source_subset_acc")}
                | {t: {"acc": record[t]["acc"], "val_acc": record[t]["val_acc"], **record[t]["cost"]}
                   for t in TRANSFERS} | {"cost": summary["cost"]}}

    job.fit(data, recipe=job.recipe, algorithms=[Prune(train_ids)] if len(kept) < c else [], reused=reused,
            init=init, init_id=init_id, finish=finish)


def _key(split: str, name: str) -> str:
    """The key of an array of ``transfer.npz``: the test split's under its plain name (``y``,
    ``probe_prob``, ...), the validation split's as ``val_<name>``."""
    return name if split == "test" else f"{split}_{name}"


def _influence_scores(table: str, num_classes: int) -> np.ndarray:
    """The influence of each source class, by id, from the influence table."""
    df = read_csv(table).sort_values("class")  # empty or cut short: CorruptArtifact naming it and the fix
    if list(df["class"]) != list(range(num_classes)):
        raise ReuseError(f"{table} lists classes {list(df['class'])}, not the {num_classes} source classes; delete it "
                         "and re-run snakemake: the workflow builds it again")
    return df["influence"].to_numpy(dtype=np.float64)


# ----------------------------------------------------------------------------- the influence table
def influence_table(*, run_jsons: list[str], value_files: list[str], source_meta: str, out_table: str,
                    out_by_class: str, out_meta: str, using: str, metric: str, resamples: int = 1000,
                    confidence: float = 0.95) -> None:
    """The influence of every source class on the target, from the subset runs: per class, the sum
    over the target's **validation** examples of the mean of ``f`` (the transfer ``using``'s
    ``metric``) over the runs with the class minus that over the runs without it, with a percentile
    bootstrap interval over the runs (``resamples``, seed 0; ``out_table``); the same per target class
    (``out_by_class``); and what it was built from (``out_meta``). It reads no test prediction: the counterfactual runs pick their
    classes from it and are then scored on the test split, which no choice has read."""
    import pandas as pd

    runs = [read_json(f) for f in run_jsons]
    if not runs:
        raise ReuseError("transfer: no subset runs to build the influence table from; set transfer.subsets")
    old = [str(Path(f).parent) for f, r in zip(run_jsons, runs) if INFLUENCE_SPLIT not in r["target_fingerprint"]]
    if old:
        raise ReuseError(f"the subset runs {old} hold no predictions of the target's validation split (they were "
                         "made when the influences were estimated on the test split); delete their folders and re-run "
                         "snakemake to redo them")
    c = runs[0]["num_classes"]
    fps = {r["target_fingerprint"][INFLUENCE_SPLIT] for r in runs}
    if len(fps) > 1 or {r["num_classes"] for r in runs} != {c}:
        raise ReuseError(f"the subset runs {[str(Path(f).parent) for f in run_jsons]} were transferred to different "
                         "target data or trained on sources of different classes; rerun them on one config")
    masks = np.zeros((len(runs), c), dtype=bool)
    for i, r in enumerate(runs):
        masks[i, r["classes"]] = True
    values, labels = {}, None
    keys = {"y": _key(INFLUENCE_SPLIT, "y"), **{t: _key(INFLUENCE_SPLIT, f"{t}_{metric}") for t in TRANSFERS}}
    for f in value_files:
        z = read_npz(f, list(keys.values()), what="transfer values")
        labels = z[keys["y"]] if labels is None else labels
        for t in TRANSFERS:
            values.setdefault(t, []).append(z[keys[t]].astype(np.float64))
    values = {t: np.stack(v) for t, v in values.items()}
    names = _class_names(read_json(source_meta), c)
    target_names = runs[0]["target_classes"]
    k = len(target_names)
    boot = {"resamples": int(resamples), "confidence": float(confidence), "seed": 0}
    totals = {t: v.sum(1, keepdims=True) for t, v in values.items()}  # [M, 1]: the sum over target examples
    score = {t: inf.influences(masks, totals[t])[:, 0] for t in TRANSFERS}
    lo, hi = (a[:, 0] for a in inf.bootstrap_influence(masks, totals[using], **boot))
    n_in = masks.sum(0)
    order = np.argsort(-score[using], kind="stable")
    rank = np.empty(c, dtype=int)
    rank[order] = np.arange(1, c + 1)
    n_t = values[using].shape[1]
    table = pd.DataFrame({"class": np.arange(c), "name": names, "influence": score[using], "influence_lo": lo,
                          "influence_hi": hi, "per_example": score[using] / n_t, "rank": rank, "n_in": n_in,
                          "n_out": len(runs) - n_in, "using": using, "metric": metric, "split": INFLUENCE_SPLIT,
                          **{f"influence_{t}": score[t] for t in TRANSFERS}})
    groups = inf.group_sums(values[using], labels, k)  # [M, K]
    by = inf.influences(masks, groups)                 # [C, K]
    by_lo, by_hi = inf.bootstrap_influence(masks, groups, **boot)
    rows = []
    for j in range(k):
        order_j = np.argsort(-by[:, j], kind="stable")
        for r, i in enumerate(order_j, 1):
            rows.append({"target_class": j, "target_name": target_names[j], "source_class": int(i),
                         "source_name": names[i], "influence": by[i, j], "influence_lo": by_lo[i, j],
                         "influence_hi": by_hi[i, j], "rank": r, "n_target": int((labels == j).sum()),
                         "using": using, "metric": metric, "split": INFLUENCE_SPLIT})
    with atomic_path(out_table, suffix=".csv") as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(out_by_class, suffix=".csv") as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    write_json(out_meta, {"runs": len(runs), "classes": c, "using": using, "metric": metric, "split": INFLUENCE_SPLIT,
                          "target_examples": n_t, "target_fingerprint": fps.pop(),
                          "subset_runs": [str(Path(f).parent) for f in run_jsons],
                          "bootstrap": boot, "cost": {"time_s": sum(r["cost"]["time_s"] for r in runs),
                                                      "flops": sum(r["cost"]["flops"] for r in runs)},
                          "val_accuracy": {t: float(np.mean([r[t]["val_acc"] for r in runs])) for t in TRANSFERS},
                          # the subset runs' mean test accuracy: reported, never read by a choice
                          "accuracy": {t: float(np.mean([r[t]["acc"] for r in runs])) for t in TRANSFERS}})
    shown = table.sort_values("rank")[["name", "influence", "influence_lo", "influence_hi", "n_in", "n_out"]]
    log.info("influence of the %d source classes on %d target validation examples (%s, %s; %d subset runs):\n%s", c,
             n_t, using, metric, len(runs), shown.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


def influence_rule(sm: Any) -> None:
    """The ``transfer_influence`` rule: :func:`influence_table` of the staged subset runs."""
    influence_table(run_jsons=list(sm.input.runs), value_files=list(sm.input.values), source_meta=sm.input.source[0],
                    out_table=sm.output.table, out_by_class=sm.output.by_class, out_meta=sm.output.meta,
                    using=sm.params.using, metric=sm.params.metric, resamples=sm.params.resamples,
                    confidence=sm.params.confidence)


# ----------------------------------------------------------------------------- studies
def _write(df, out_csv: str) -> None:
    with atomic_path(out_csv, suffix=".csv") as tmp:
        df.to_csv(tmp, index=False)


def counterfactual_rows(run_jsons: list[str]):
    """One row per (full-source or counterfactual run, transfer): kind, k, seed, target accuracy."""
    import pandas as pd

    rows = []
    for f in run_jsons:
        r = read_json(f)
        for t in TRANSFERS:
            rows.append({"source": r["source"], "target": r["target"], "kind": r["kind"], "k": r["k"],
                         "seed": r["seed"], "transfer": t, "acc": r[t]["acc"], "removed": ", ".join(r["removed_names"]),
                         "time_s": r["cost"]["time_s"]})
    return pd.DataFrame(rows)


def counterfactual_study(*, runs_csvs: list[str], baseline_csv: str, extra: dict[str, list[str]], params: dict,
                         out_csv: str) -> None:
    """``transfer_counterfactual.csv``: per (kind, k, transfer), the target test accuracy over the
    seeds (mean, Student-t interval) and its difference from the full source's, paired by seed."""
    import pandas as pd

    df = counterfactual_rows(extra["transfer_runs"])
    from reuse.stats import mean_ci

    confidence = float(params.get("confidence", 0.95))
    full = df[df["kind"] == FULL].set_index(["transfer", "seed"])["acc"]
    rows = []
    for (kind, k, t), g in df.groupby(["kind", "k", "transfer"], sort=False):
        lo, hi = mean_ci(g["acc"].to_numpy(), confidence) if len(g) > 1 else (np.nan, np.nan)
        paired = g[g["seed"].map(lambda s: (t, s) in full.index)]
        diff = paired["acc"].to_numpy() - np.array([full[(t, s)] for s in paired["seed"]])
        d_lo, d_hi = mean_ci(diff, confidence) if len(diff) > 1 else (np.nan, np.nan)
        removed = g["removed"].unique()
        rows.append({"method": "transfer", "source": g["source"].iloc[0], "target": g["target"].iloc[0],
                     "transfer": t, "kind": kind, "k": int(k), "n": len(g), "acc": g["acc"].mean(),
                     "acc_std": g["acc"].std(ddof=1), "acc_lo": lo, "acc_hi": hi,
                     "diff_vs_full": diff.mean() if len(diff) else np.nan, "diff_lo": d_lo, "diff_hi": d_hi,
                     "n_pairs": len(diff), "removed": removed[0] if len(removed) == 1 else "drawn per seed",
                     "time_s": g["time_s"].mean()})
    out = pd.DataFrame(rows)
    order = {FULL: 0, "harmful": 1, "helpful": 2, "random": 3}
    out = out.sort_values(["transfer", "kind", "k"], key=lambda s: s.map(order) if s.name == "kind" else s)
    _write(out, out_csv)
    log.info("target accuracy without k source classes:\n%s", out[["transfer", "kind", "k", "n", "acc", "acc_lo",
                                                                    "acc_hi", "diff_vs_full", "removed"]].to_string(
        index=False, float_format=lambda v: f"{v:.4f}"))


def influence_study(*, runs_csvs: list[str], baseline_csv: str, extra: dict[str, list[str]], params: dict,
                    out_csv: str) -> None:
    """``transfer_influence.csv``: the influence table, most helpful class first."""
    import pandas as pd

    df = read_csv(extra["table"][0]).sort_values("rank")
    df.insert(0, "method", "transfer")
    _write(df, out_csv)


def subpopulation_study(*, runs_csvs: list[str], baseline_csv: str, extra: dict[str, list[str]], params: dict,
                        out_csv: str) -> None:
    """``transfer_subpopulations.csv``: per target class, the ``top`` source classes that most raise
    its examples' predictions (the paper's subpopulations) and the one that most lowers them."""
    import pandas as pd

    df = read_csv(extra["by_class"][0])
    worst = df.sort_values("rank").groupby("target_class").tail(1).assign(role="most harmful")
    top = df[df["rank"] <= params["top"]].assign(role="most helpful")
    out = pd.concat([top, worst]).sort_values(["target_class", "rank"])
    out.insert(0, "method", "transfer")
    _write(out, out_csv)
