"""A small, hand-made results tree (no training): run.json, metrics.jsonl and predictions.npz written
directly, so each run's accuracy and cost are known exactly; plus a score table and study tables.

Dataset ``toy`` (40 test examples, 4 classes), models ``small`` and ``big``, seeds 0-3:

==========================  =====================  ========  =================================
aggregate                   accuracy (seed s)      own time  reused
==========================  =====================  ========  =================================
baseline (small)            0.600 + 0.025 (s%2)    10 s      -
baseline/b0.5 (small)       small - 0.100          5 s       -       (the budget curve: budgets
baseline/b2 (small)         small + 0.050          20 s      -        0.5, 1 and 2)
baseline (big)              0.800 + 0.025 (s%2)    40 s      -
baseline/b0.5 (big)         big - 0.100            20 s      -
baseline/b2 (big)           big + 0.025            80 s      -
kd/T1, kd/T4 (small)        small + 0.100, +0.025s 11 s      one big run (40 s) + a cache (1 s)
prune/keep50 (big)          big - 0.050 - 0.025 s  40 s      two big runs + score table (2 s)
prune/keep70 (big)          big +/- 0.025          40 s      same; seed 3 missing
warmstart/w (small)         small + 0.150          5 s       one small run (10 s)  [not in config]
solo/x (small)              0.5, seed 0 only       3 s       -                     [not in config]
==========================  =====================  ========  =================================

Every run's validation accuracy is its test accuracy plus ``VAL_SHIFT`` (a fixed, seed-dependent offset
in [-0.01, 0.01]), except kd/T4, whose validation accuracy is that of kd/T1 minus 0.02 while its test
accuracy equals T1's: a choice made on validation picks T1 where test accuracy could not tell them apart.
kd/T4 seed 2 failed (a log with an error, no run.json).
"""


from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

N_TEST, CLASSES, EPOCHS, SEEDS = 40, 4, 4, [0, 1, 2, 3]
# a seed's validation accuracy differs from its test accuracy by this (never by enough to flip a verdict)
VAL_SHIFT = {0: 0.005, 1: -0.005, 2: 0.01, 3: -0.01}
FP = {"digest": "toy0", "name": "toy", "n": 80, "split": "train", "kind": "mnist1d", "num_classes": 4,
      "input_shape": [1, 8], "inputs_sha256": "0", "labels_sha256": "0"}


def _digest() -> None:
    from reuse.data.fingerprint import digest

    FP["digest"] = digest(FP)


_digest()


def toy_config(results: str) -> dict:
    from reuse.config import validate_config

    cfg = {"results": results, "device": "cpu",
           "datasets": {"toy": {"kind": "mnist1d", "mnist1d": {"num_samples": 120}}},
           "models": {"small": {"arch": "mlp", "args": {"hidden": [8]}},
                      "big": {"arch": "mlp", "args": {"hidden": [32]}}},
           "train": {"epochs": EPOCHS, "checkpoint_epochs": [2]},
           "baseline": {"seeds": SEEDS, "budgets": [0.5, 1, 2]},
           "kd": {"variants": {"T1": {"model": "small", "teacher": {"model": "big"}, "temperature": 1},
                               "T4": {"model": "small", "teacher": {"model": "big"}, "temperature": 4}}},
           "scores": {"model": "big", "runs": 2, "names": ["el2n", "loss"]},
           "prune": {"variants": {"keep50": {"model": "big", "score": "el2n", "keep": 0.5},
                                  "keep70": {"model": "big", "score": "el2n", "keep": 0.7}}},
           "report": {"targets": [0.5], "figures": ["svg"]}}
    return validate_config(cfg)


def predictions(acc: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Test logits whose accuracy is exactly ``acc`` (a multiple of 1/40)."""
    rng = np.random.default_rng(seed)
    target = np.arange(N_TEST) % CLASSES
    k = int(round(acc * N_TEST))
    logits = rng.normal(0, 0.5, (N_TEST, CLASSES)).astype(np.float32)
    pred = target.copy()
    pred[k:] = (target[k:] + 1) % CLASSES
    logits[np.arange(N_TEST), pred] += 3.0
    return logits, target


def write_run(root: Path, ds: str, model: str, method: str, variant: str | None, seed: int, *, acc: float,
              time_s: float, flops: float, reused: list[dict] = (), config: dict | None = None,
              val_acc: float | None = None, budget: float = 1.0) -> Path:
    folder = root / ds / model / method / (f"{variant}/" if variant else "") / f"s{seed}"
    folder = Path(str(folder).replace("//", "/"))
    folder.mkdir(parents=True, exist_ok=True)
    logits, target = predictions(acc, seed)
    np.savez(folder / "predictions.npz", idx=np.arange(N_TEST), target=target, logits=logits)
    steps = 10
    curve = []
    for e in range(1, EPOCHS + 1):
        # accuracy rises linearly to its final value: (e / EPOCHS) of the way from 0.25
        a = round(0.25 + (acc - 0.25) * e / EPOCHS, 6)
        curve.append({"epoch": e, "step": e * steps, "test_acc": a, "test_loss": 1.0, "train_acc": a,
                      "train_loss": 1.0, "train_time_s": time_s * e / EPOCHS, "train_flops": flops * e / EPOCHS,
                      "examples_seen": 80 * e, "lr": 0.1, "epoch_time_s": time_s / EPOCHS,
                      "eval_time_s": 0.1 * e, "eval_flops": 1e6 * e})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in curve))
    run = {"dataset": ds, "model": model, "method": method, "variant": variant, "seed": seed, "config": config,
           "arch": "mlp", "args": {}, "num_parameters": 100, "recipe": {"epochs": EPOCHS}, "fingerprint": FP,
           "final": {"test_acc": acc, "test_loss": 1.0,
                     "val_acc": round(acc + VAL_SHIFT.get(seed, 0.0), 6) if val_acc is None else val_acc, "val_loss": 1.0},
           "best_test_acc": acc, "budget": budget,
           "cost": {"train_time_s": time_s, "eval_time_s": 0.4, "train_flops": flops, "eval_flops": 4e6,
                    "examples_seen": 80 * EPOCHS, "step": steps * EPOCHS},
           "reused": list(reused), "checkpoints": {}, "device": "cpu"}
    (folder / "run.json").write_text(json.dumps(run))
    (folder / "train.log").write_text("finished\n")
    return folder


def past(root: Path, model: str, seed: int, time_s: float, flops: float) -> dict:
    return {"kind": "past_run", "path": str(root / "toy" / model / "baseline" / f"s{seed}"), "time_s": time_s,
            "flops": flops}


def make_tree(root: Path) -> dict:
    """Write the tree above under ``root`` (the results folder); return its config."""
    cfg = toy_config(str(root))
    small = {s: 0.6 + 0.025 * (s % 2) for s in SEEDS}
    big = {s: 0.8 + 0.025 * (s % 2) for s in SEEDS}
    for s in SEEDS:
        write_run(root, "toy", "small", "baseline", None, s, acc=small[s], time_s=10, flops=1e9)
        write_run(root, "toy", "big", "baseline", None, s, acc=big[s], time_s=40, flops=4e9)
        for b, d_small, d_big in ((0.5, -0.1, -0.1), (2, 0.05, 0.025)):
            write_run(root, "toy", "small", "baseline", f"b{b:g}", s, acc=small[s] + d_small, time_s=10 * b,
                      flops=1e9 * b, budget=b)
            write_run(root, "toy", "big", "baseline", f"b{b:g}", s, acc=big[s] + d_big, time_s=40 * b, flops=4e9 * b,
                      budget=b)
        for v in ("T1", "T4"):
            if v == "T4" and s == 2:
                f = root / "toy" / "small" / "kd" / "T4" / "s2"
                f.mkdir(parents=True)
                (f / "train.log").write_text("10:00:00 INFO started\n10:00:01 ERROR boom: teacher cache missing\n")
                continue
            kd_acc = small[s] + 0.1 + 0.025 * (s % 3 == 0)
            write_run(root, "toy", "small", "kd", v, s, acc=kd_acc, time_s=11,
                      val_acc=None if v == "T1" else round(kd_acc + VAL_SHIFT[s] - 0.02, 6),
                      flops=1.1e9, reused=[past(root, "big", (s + 1) % 4, 40, 4e9),
                                           {"kind": "logit_cache", "path": "x", "time_s": 1.0, "flops": 1e8,
                                            "bytes": 1000}],
                      config=cfg["kd"]["variants"][v])
        scored = [past(root, "big", 0, 40, 4e9), past(root, "big", 1, 40, 4e9),
                  {"kind": "score_table", "path": str(root / "toy" / "scores.parquet"), "time_s": 2.0, "flops": 2e8}]
        write_run(root, "toy", "big", "prune", "keep50", s, acc=big[s] - 0.05 - 0.025 * (s % 2), time_s=40,
                  flops=4e9, reused=scored, config=cfg["prune"]["variants"]["keep50"])
        if s != 3:
            write_run(root, "toy", "big", "prune", "keep70", s, acc=big[s] + (0.025 if s == 0 else -0.025 * (s == 1)),
                      time_s=40, flops=4e9, reused=scored, config=cfg["prune"]["variants"]["keep70"])
        w = write_run(root, "toy", "small", "warmstart", "w", s, acc=small[s] + 0.15, time_s=5, flops=5e8,
                      reused=[past(root, "small", s, 10, 1e9)], config={"model": "small", "shrink": 0.5})
        # an extra evaluation beside run.json: accuracy under attack (warmstart and the small baseline)
        for folder, robust in ((w, 0.3 + 0.01 * s), (root / "toy" / "small" / "baseline" / f"s{s}", 0.1 + 0.01 * s)):
            (folder / "robust.json").write_text(json.dumps({"robust_acc": robust, "clean_acc": 0.0, "n": N_TEST}))
    write_run(root, "toy", "small", "solo", "x", 0, acc=0.5, time_s=3, flops=3e8, config={"model": "small"})
    _scores_and_studies(root)
    return cfg


def _scores_and_studies(root: Path) -> None:
    from reuse.scores import rank_agreement, write_score_table

    npzs, jsons = [], []
    rng = np.random.default_rng(0)
    for s in (0, 1):
        d = root / "toy" / "big" / "baseline" / f"s{s}"
        base = np.linspace(0, 1, 80)
        np.savez(d / "scores.npz", epochs=np.array([2, 4]), el2n=np.stack([base + rng.normal(0, .1, 80)] * 2),
                 loss=np.stack([2 * base + rng.normal(0, .2, 80)] * 2))
        (d / "scores.json").write_text(json.dumps({"fingerprint": FP, "run": str(d), "n": 80,
                                                   "cost": {"time_s": 1.0, "flops": 1e8}}))
        npzs.append(str(d / "scores.npz"))
        jsons.append(str(d / "scores.json"))
    write_score_table(npzs, jsons, root / "toy" / "scores.parquet", root / "toy" / "scores.json")
    (root / "toy" / "studies").mkdir(exist_ok=True)
    rank_agreement(npzs).to_csv(root / "toy" / "studies" / "score_agreement.csv", index=False)
    (root / "toy" / "studies" / "prune.csv").write_text("variant,cfg_keep,n,acc_mean\nkeep50,0.5,4,0.76\n")
    # a study shared by several methods, one row each (as studies/warm.csv is for warm, soup, averaging)
    (root / "toy" / "studies" / "shared.csv").write_text(
        "method,variant,acc_mean\nbaseline,,0.61\nwarmstart,w,0.76\nother,z,0.5\n")


@pytest.fixture(scope="session")
def toy(tmp_path_factory):
    """The tree above and its report, built once (tests copy it before changing anything)."""
    from reuse.report import build

    root = tmp_path_factory.mktemp("toy") / "results"
    cfg = make_tree(root)
    out = build(root, cfg)
    return root, cfg, out
