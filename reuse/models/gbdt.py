"""Gradient-boosted trees (arch ``gbdt``, LightGBM) as baselines of tabular datasets and as teachers.

A practitioner's first model for a table is a gradient-boosted tree ensemble, so a benchmark of
reusing past tabular runs needs one among its past runs. A ``gbdt`` model trains only as a baseline
(``results/<dataset>/<model>/baseline/s<seed>/``) and only on tabular datasets; it is reused only
through its logit cache (a kd teacher ``{model: <gbdt model>}``), which it writes in the format of
any past run's (:mod:`reuse.cache`), so distilling trees into a network reads it exactly as it reads
an MLP's cache. Everything that needs a network's gradients or checkpoint (scores, a method training
it, an online teacher) is refused by :func:`config_problems`, naming the key.

Files of a run, beside the usual ``run.json``, ``metrics.jsonl`` and ``predictions.npz``:
``ckpt/e<R>.txt``, the booster in LightGBM's text model format (no pickle: loading it runs no code),
where ``R`` is the number of boosting rounds (``n_estimators``), the tree's one "checkpoint epoch"
(:func:`reuse.plan.checkpoint_epochs`), and ``logits/e<R>/``, its logit cache.

Logits. LightGBM's raw score is the margin: for ``C > 2`` classes one score per class, whose softmax
is LightGBM's predicted probability, stored as they are; for two classes one margin ``f`` with
``P(class 1) = sigmoid(f)``, stored as the two logits ``[0, f]``, because ``softmax([0, f]) =
[1 - sigmoid(f), sigmoid(f)]``. Log-probabilities ``[log(1 - p), log p]`` differ from ``[0, f]`` by
the same constant in both entries of a row, so they give the same soft targets at every temperature
(``softmax(z / T)`` ignores a constant shift); ``[0, f]`` keeps the margin itself (the tree's raw
output, summed over its trees) and no rounding of a log of a probability near 1.

Cost, in run.json like a network's: ``train_time_s`` is LightGBM's measured fit time; FLOPs are
FLOP-equivalents, since a tree does comparisons and additions, not multiply-adds:
``train_flops = 2 N F R`` (building the gradient and hessian histograms, one addition each per
example, feature and round: the dominant work of histogram boosting) and ``eval_flops`` (and a
cache's ``flops``) ``= n x`` the mean leaf depth summed over the trees (the comparisons of one
prediction). ``num_parameters`` is the trees' node count (split thresholds and leaf values).
"""

from __future__ import annotations

import logging
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from reuse.plan import TREE_ROUNDS, is_tree, runs

log = logging.getLogger("reuse")

#: LightGBM's settings of the ``args`` a config may give (their defaults here)
DEFAULTS = {"n_estimators": TREE_ROUNDS, "learning_rate": 0.05, "num_leaves": 15, "max_depth": -1,
            "min_child_samples": 20, "subsample": 1.0, "colsample": 1.0, "reg_lambda": 0.0}
WHY = "a gradient-boosted tree model (arch gbdt) has no gradients and no network checkpoint"


# ----------------------------------------------------------------------------- config (no torch, no lightgbm)
def config_problems(config: dict, methods: list) -> list[str]:
    """Tree models on data that is not a table, and every use of a tree model but a baseline and a
    cached teacher: scored runs, a method training one, a method reading one otherwise than through
    its logit cache (``Method.cached_models``)."""
    trees = {m for m in config["models"] if is_tree(config, m)}
    if not trees:
        return []
    problems = []
    for ds, model in runs(config):
        kind = config["datasets"][ds]["kind"]
        if model in trees and kind != "tabular":
            problems.append(f"models.{model}: arch '{config['models'][model]['arch']}' (gradient-boosted trees) "
                            f"trains only on tabular datasets, not on {kind} dataset '{ds}'; list tabular "
                            "`datasets` for the model")
    if config["scores"]["model"] in trees:
        problems.append(f"scores.model: '{config['scores']['model']}' is {WHY}: EL2N, GraNd and forgetting "
                        "score a network's runs; name a network model")
    for method in methods:
        for name in method.block(config).get("variants", {}):
            models = method.needs_models(config, name)
            if any(m not in config["models"] for m in models):
                continue  # the method's own check names the missing model
            trained = method.model(config, name)
            if trained in trees:
                problems.append(f"{method.name}.variants.{name}.model: '{trained}' is {WHY}; {method.name} "
                                "trains a network by gradient: name a network model (trees train as baselines)")
            cached = set(method.cached_models(config, name))
            for m in models:
                if m in trees and m != trained and m not in cached:
                    problems.append(f"{method.name}.variants.{name}: reads tree model '{m}', but {WHY}; it can "
                                    "be reused only through its logit cache (a kd teacher)")
    return problems


def params(args: dict, num_classes: int, seed: int, threads: int = 1) -> dict[str, Any]:
    """LightGBM's parameters for a ``gbdt`` model's ``args``: deterministic given ``seed``."""
    a = {**DEFAULTS, **args}
    p = {"objective": "binary"} if num_classes == 2 else {"objective": "multiclass", "num_class": num_classes}
    p.update(learning_rate=float(a["learning_rate"]), num_leaves=int(a["num_leaves"]), max_depth=int(a["max_depth"]),
             min_data_in_leaf=int(a["min_child_samples"]), feature_fraction=float(a["colsample"]),
             bagging_fraction=float(a["subsample"]), bagging_freq=1 if a["subsample"] < 1 else 0,
             lambda_l2=float(a["reg_lambda"]), seed=int(seed), deterministic=True, force_row_wise=True,
             num_threads=max(1, int(threads)), verbose=-1)
    return p


# ----------------------------------------------------------------------------- the model
def fit(x: np.ndarray, y: np.ndarray, num_classes: int, args: dict, seed: int, threads: int = 1):
    """A LightGBM booster trained on ``(x, y)`` for ``n_estimators`` rounds (no early stopping)."""
    import lightgbm as lgb

    rounds = int({**DEFAULTS, **args}["n_estimators"])
    ds = lgb.Dataset(np.asarray(x, dtype=np.float64), label=np.asarray(y), free_raw_data=True)
    return lgb.train(params(args, num_classes, seed, threads), ds, num_boost_round=rounds)


def load(path: str | Path):
    """A booster from its text model file (LightGBM's own format: parsing it runs no code)."""
    import lightgbm as lgb

    from reuse.errors import CorruptArtifact

    try:
        return lgb.Booster(model_file=str(path))
    except lgb.basic.LightGBMError as e:
        raise CorruptArtifact(f"{path} is not a readable LightGBM model ({e}); delete the run folder and re-run "
                              "snakemake to train it again") from e


def logits(booster, x: np.ndarray, num_classes: int) -> np.ndarray:
    """``(N, C)`` float32 logits: the raw margins, ``[0, f]`` for two classes (module docstring)."""
    raw = np.asarray(booster.predict(np.asarray(x, dtype=np.float64), raw_score=True), dtype=np.float64)
    if num_classes == 2:
        raw = np.stack([np.zeros_like(raw), raw], axis=1)
    return raw.reshape(len(x), num_classes).astype(np.float32)


def _depths(node: dict, d: int = 0) -> list[int]:
    if "split_index" not in node:  # a leaf (a tree of no split is one leaf without leaf_index)
        return [d]
    return _depths(node["left_child"], d + 1) + _depths(node["right_child"], d + 1)


def structure(booster) -> dict[str, float]:
    """The trees' node count and the mean leaf depth summed over the trees (comparisons per prediction)."""
    trees = booster.dump_model()["tree_info"]
    nodes, depth = 0, 0.0
    for t in trees:
        d = _depths(t["tree_structure"])
        nodes += 2 * len(d) - 1
        depth += float(np.mean(d))
    return {"trees": len(trees), "nodes": nodes, "depth_sum": depth}


# ----------------------------------------------------------------------------- workflow stages
def train_run(*, data_dir: str, model_name: str, model_cfg: dict, recipe: dict, seed: int, threads: int,
              outputs: dict[str, str]) -> None:
    """Train one tree baseline on the training split and write its outputs: ``model`` (the text model),
    ``metrics``, ``run``, ``predictions`` (test logits), as a network baseline writes them."""
    import torch

    import reuse
    from reuse import metrics as rm
    from reuse.data import load as load_data
    from reuse.io import save_npz, sha256_file, write_json, write_jsonl

    data = load_data(data_dir)
    if data.meta["kind"] != "tabular":
        from reuse.errors import ReuseError
        raise ReuseError(f"models.{model_name}: a gbdt model trains only on tabular data, not {data.meta['kind']}")
    args = dict(model_cfg.get("args", {}))
    x, y = data.train.x.numpy(), data.train.y.numpy()
    started = time.time()
    t = time.perf_counter()
    booster = fit(x, y, data.num_classes, args, seed, threads)
    train_time = time.perf_counter() - t
    rounds = booster.current_iteration()
    shape = structure(booster)
    t = time.perf_counter()
    test_logits = logits(booster, data.test.x.numpy(), data.num_classes)
    eval_time = time.perf_counter() - t
    train_logits = logits(booster, x, data.num_classes)
    target = data.test.y.numpy()
    lg = torch.from_numpy(test_logits).double()
    test_loss = float(torch.nn.functional.cross_entropy(lg, torch.from_numpy(target)))
    test_acc = float((test_logits.argmax(1) == target).mean())
    train_flops = 2 * len(x) * x.shape[1] * rounds
    eval_flops = int(round(len(target) * shape["depth_sum"]))
    val, val_time, val_flops = {}, 0.0, 0
    if data.val is not None and len(data.val):  # the held-out examples: an evaluation, charged as one
        t = time.perf_counter()
        val_logits, val_y = logits(booster, data.val.x.numpy(), data.num_classes), data.val.y.numpy()
        val_time = time.perf_counter() - t
        val_flops = int(round(len(val_y) * shape["depth_sum"]))
        val = {"val_acc": float((val_logits.argmax(1) == val_y).mean()),
               "val_loss": float(torch.nn.functional.cross_entropy(torch.from_numpy(val_logits).double(),
                                                                   torch.from_numpy(val_y)))}
    cost = {"train_time_s": train_time, "eval_time_s": eval_time + val_time, "train_flops": train_flops,
            "eval_flops": eval_flops + val_flops, "examples_seen": len(x) * rounds, "step": rounds}
    model_path = Path(outputs["model"])
    model_path.parent.mkdir(parents=True, exist_ok=True)
    booster.save_model(str(model_path))
    save_npz(outputs["predictions"], idx=np.arange(len(target)), target=target, logits=test_logits)
    write_jsonl(outputs["metrics"], [{"epoch": rounds, "step": rounds, "examples_seen": len(x) * rounds,
                                      "train_acc": float((train_logits.argmax(1) == y).mean()),
                                      "train_loss": float(torch.nn.functional.cross_entropy(
                                          torch.from_numpy(train_logits).double(), torch.from_numpy(y))),
                                      "test_acc": test_acc, "test_loss": test_loss, "lr": float({**DEFAULTS, **args}["learning_rate"]),
                                      "epoch_time_s": train_time, "train_time_s": train_time, "eval_time_s": eval_time,
                                      "train_flops": train_flops, "eval_flops": eval_flops}])
    import lightgbm

    write_json(outputs["run"], {
        "dataset": data.name, "model": model_name, "method": "baseline", "variant": None, "seed": seed,
        "config": None, "arch": model_cfg["arch"], "args": args, "num_parameters": shape["nodes"],
        "recipe": {**recipe, "epochs": rounds}, "fingerprint": data.train.fingerprint, "budget": 1.0,
        "final": {"test_acc": test_acc, "test_loss": test_loss, "test_nll": rm.nll(test_logits.astype(np.float64), target),
                  "test_ece": rm.ece(test_logits.astype(np.float64), target, rm.ECE_BINS), "ece_bins": rm.ECE_BINS,
                  **val},
        "best_test_acc": test_acc, "cost": cost,
        "cost_note": "FLOP-equivalents: train 2*N*F*rounds histogram additions, eval n x summed mean leaf depth "
                     "comparisons (reuse.models.gbdt)",
        "trees": {**shape, "lightgbm": params(args, data.num_classes, seed, threads)},
        "reused": [], "checkpoints": {str(rounds): {"path": str(model_path), "sha256": sha256_file(model_path)}},
        "device": "cpu", "threads": int(threads), "processes": 1,
        "versions": {"reuse": reuse.__version__, "lightgbm": lightgbm.__version__, "torch": torch.__version__,
                     "python": platform.python_version()},
        "stopped": None, "started": started, "finished": time.time()})
    log.info("%s/%s seed %d: gbdt of %d trees (%d nodes) in %.2fs: test accuracy %.4f", data.name, model_name, seed,
             shape["trees"], shape["nodes"], train_time, test_acc)


def write_cache(*, data_dir: str, model_file: str, out_dir: str, cache_cfg: dict) -> dict:
    """The logit cache of the tree in ``model_file`` on every training example, in the format of
    :func:`reuse.cache.write_logit_cache` (one clean view: trees see the features as they are)."""
    import torch

    from reuse.cache import LogitCache, views_for, write_logit_cache
    from reuse.data import load as load_data
    from reuse.io import read_json, sha256_file, write_json

    data = load_data(data_dir)
    booster = load(model_file)
    run = read_json(Path(model_file).parent.parent / "run.json")

    class Margins(torch.nn.Module):
        """The booster as a module of the cache writer: features in, logits out."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(logits(booster, x.cpu().numpy(), data.num_classes))

    meta = write_logit_cache(out_dir, Margins(), data.train, views=views_for(None, 0, 0),
                             fingerprint=data.train.fingerprint,
                             source={"path": str(model_file), "epoch": booster.current_iteration(), "seed": run["seed"],
                                     "sha256": sha256_file(model_file), "arch": "gbdt",
                                     "logits": "raw margins ([0, f] for two classes)"},
                             dtype=cache_cfg["dtype"], dense=cache_cfg["dense"], topk=cache_cfg["topk"],
                             batch_size=cache_cfg["batch_size"])
    meta["cost"]["flops"] = int(round(len(data.train) * structure(booster)["depth_sum"]))
    meta["cost"]["flops_note"] = "FLOP-equivalents: comparisons of one prediction (reuse.models.gbdt)"
    write_json(Path(out_dir) / "meta.json", meta)
    cache = LogitCache.open(out_dir, fingerprint=data.train.fingerprint)
    if cache.meta["dense"]:
        acc = float((cache.logits(np.arange(len(data.train)), 0).argmax(1) == data.train.y).float().mean())
        log.info("%s: cached %d examples x %d classes from the trees; train accuracy %.4f", out_dir, meta["n"],
                 meta["num_classes"], acc)
    return meta


def rule_train(snakemake: Any) -> None:
    from reuse.workflow import run_rule

    run_rule(snakemake, lambda sm: train_run(
        data_dir=str(Path(sm.input.npz).parent), model_name=sm.params.model, model_cfg=dict(sm.params.model_cfg),
        recipe=dict(sm.params.recipe), seed=int(sm.wildcards.seed), threads=sm.threads,
        outputs={"model": sm.output.model, "metrics": sm.output.metrics, "run": sm.output.run,
                 "predictions": sm.output.predictions}))


def rule_cache(snakemake: Any) -> None:
    from reuse.workflow import run_rule

    run_rule(snakemake, lambda sm: write_cache(
        data_dir=str(Path(sm.input.npz).parent), model_file=sm.input.model,
        out_dir=str(next(Path(p).parent for p in sm.output if p.endswith("meta.json"))),
        cache_cfg=dict(sm.params.cache)))


__all__ = ["DEFAULTS", "config_problems", "fit", "load", "logits", "params", "structure", "train_run",
           "write_cache"]
