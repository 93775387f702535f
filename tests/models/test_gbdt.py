"""Gradient-boosted trees (arch ``gbdt``, :mod:`reuse.models.gbdt`): their logits, the config checks
that keep them to tabular baselines and cached teachers, and a tiny end-to-end run in which a
network distils the trees' logit caches."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from reuse.cache import LogitCache
from reuse.config import validate_config
from reuse.data import load
from reuse.errors import ConfigError
from reuse.models import gbdt
from tests.data.test_tabular import rows, spec, write
from tests.helpers import smk


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize("classes", [2, 3])
def test_logits_reproduce_the_trees_probabilities(classes):
    """softmax of the cached logits is LightGBM's predicted probability ([0, f] for two classes)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4))
    y = np.digitize(x[:, 0] + 0.5 * x[:, 1] + 0.3 * rng.normal(size=300), [0.0] if classes == 2 else [-0.5, 0.5])
    booster = gbdt.fit(x, y, classes, {"n_estimators": 30, "num_leaves": 4}, seed=0)
    lg = gbdt.logits(booster, x, classes)
    assert lg.shape == (300, classes) and lg.dtype == np.float32
    p = booster.predict(x)  # P(class 1) for binary, (N, C) for multiclass
    p = np.stack([1 - p, p], 1) if classes == 2 else p
    np.testing.assert_allclose(_softmax(lg.astype(np.float64)), p, atol=1e-5)
    if classes == 2:
        assert (lg[:, 0] == 0).all()
    assert (lg.argmax(1) == y).mean() > 0.8  # it learned the rule
    again = gbdt.logits(gbdt.fit(x, y, classes, {"n_estimators": 30, "num_leaves": 4}, seed=0), x, classes)
    np.testing.assert_array_equal(lg, again)  # deterministic given the seed
    s = gbdt.structure(booster)
    assert s["trees"] == 30 * (1 if classes == 2 else classes) and s["nodes"] >= s["trees"]


def test_trees_are_named_once_and_never_built_as_networks():
    from reuse.models import build_model
    from reuse.models.catalog import TREE_ARGS, check_arch
    from reuse.plan import TREE_ARCHS

    assert tuple(TREE_ARGS) == TREE_ARCHS and set(TREE_ARGS["gbdt"]) == set(gbdt.DEFAULTS)
    check_arch("gbdt", {"n_estimators": 5})
    with pytest.raises(ConfigError, match="gradient-boosted trees .* never built as a network"):
        build_model("gbdt", (4,), 2)


def _base(root, **more) -> dict:
    cfg = {"datasets": {"t": spec(root)}, "models": {"mlp": {"arch": "mlp"}, "gb": {"arch": "gbdt"}},
           "train": {"augment": {"translate": 0, "flip": False}}, "baseline": {"seeds": [0, 1]}}
    for k, v in more.items():
        cfg[k] = v if not isinstance(v, dict) or k not in cfg else {**cfg[k], **v}
    return cfg


def _problems(cfg: dict) -> str:
    with pytest.raises(ConfigError) as e:
        validate_config(cfg)
    return str(e.value)


def test_config_keeps_trees_to_tabular_baselines_and_cached_teachers(tmp_path):
    write(tmp_path / "train.csv", rows(40, 0))
    write(tmp_path / "test.csv", rows(20, 1))
    ok = validate_config(_base(tmp_path, kd={"variants": {"k": {"model": "mlp", "teacher": {"model": "gb"}}}}))
    assert ok["models"]["gb"]["arch"] == "gbdt"
    from reuse.plan import checkpoint_epochs
    assert checkpoint_epochs(ok, "gb") == [100]  # one checkpoint: the final model, at its boosting rounds
    msg = _problems(_base(tmp_path, datasets={"m": {"kind": "mnist1d"}}))
    assert "models.gb: arch 'gbdt' (gradient-boosted trees) trains only on tabular datasets, not on mnist1d " \
           "dataset 'm'" in msg
    msg = _problems(_base(tmp_path, scores={"model": "gb"}))
    assert "scores.model: 'gb' is a gradient-boosted tree model" in msg
    msg = _problems(_base(tmp_path, kd={"variants": {"s": {"model": "gb", "teacher": {"model": "mlp"}},
                                                      "o": {"model": "mlp", "teacher": {"model": "gb"}, "online": True}}}))
    assert "kd.variants.s.model: 'gb' is a gradient-boosted tree model" in msg
    assert "kd.variants.o.online: teacher 'gb' is a gradient-boosted tree model" in msg
    msg = _problems(_base(tmp_path, prune={"variants": {"p": {"model": "gb", "mode": "random", "keep": 0.5}}}))
    assert "prune.variants.p.model: 'gb' is a gradient-boosted tree model" in msg
    msg = _problems(_base(tmp_path, models={"gb": {"arch": "gbdt", "args": {"n_trees": 5}}}))
    assert "models.gb: model arch 'gbdt' has no argument 'n_trees'" in msg


@pytest.mark.workflow
def test_tiny_tabular_run_with_a_tree_teacher(tmp_path):
    """A gbdt baseline, its logit caches, and KD from one tree and from the ensemble of two, on a CSV;
    then KD from the tree-taught students' runs (a teacher of a method's runs, ``teacher.method``)."""
    (tmp_path / "data").mkdir()
    write(tmp_path / "data" / "table.csv", rows(240, 5))
    cfg = {"results": "results", "device": "cpu", "progress": "log",
           "datasets": {"tab": {"kind": "tabular", "root": str(tmp_path / "data"), "file": "table.csv",
                                "target": "label", "test_fraction": 0.25}},
           "models": {"mlp": {"arch": "mlp", "args": {"hidden": [16]}},
                      "gb": {"arch": "gbdt", "args": {"n_estimators": 40, "num_leaves": 4, "subsample": 0.8}}},
           "train": {"epochs": 3, "batch_size": 32, "optimizer": {"name": "adamw", "lr": 0.01},
                     "schedule": {"name": "constant"}, "augment": {"translate": 0, "flip": False},
                     "checkpoint_epochs": [1], "checkpoint_every": 1},
           "baseline": {"seeds": [0, 1]}, "cache": {"views": 0, "topk": 0}, "scores": {"model": None},
           "kd": {"variants": {"tree": {"model": "mlp", "teacher": {"model": "gb"}},
                               "trees": {"model": "mlp", "teacher": {"model": "gb", "runs": 2}, "mode": "ensemble"},
                               "again": {"model": "mlp", "teacher": {"model": "mlp", "method": "kd",
                                                                     "variant": "tree"}}}}}
    path = tmp_path / "tab.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = smk(tmp_path, config=path)
    assert r.returncode == 0, r.stderr[-4000:]
    res = tmp_path / "results" / "tab"
    data = load(res / "data")
    tree = res / "gb" / "baseline" / "s0"
    run = json.loads((tree / "run.json").read_text())
    assert run["arch"] == "gbdt" and run["cost"]["step"] == 40 and run["cost"]["train_time_s"] > 0
    assert run["cost"]["train_flops"] == 2 * len(data.train) * data.train.x.shape[1] * 40
    booster = gbdt.load(tree / "ckpt" / "e40.txt")  # the text model, as the run wrote it
    pred = np.load(tree / "predictions.npz")
    assert run["final"]["test_acc"] == pytest.approx(float((pred["logits"].argmax(1) == pred["target"]).mean()))
    # the cache reproduces the tree's predicted probabilities on every training example
    cache = LogitCache.open(tree / "logits" / "e40", fingerprint=data.train.fingerprint)
    p1 = booster.predict(data.train.x.numpy().astype(np.float64))
    cached = _softmax(cache.logits(np.arange(len(data.train)), 0).double().numpy())
    np.testing.assert_allclose(cached[:, 1], p1, atol=2e-3)  # float16 margins
    assert cache.meta["source"]["arch"] == "gbdt" and cache.meta["cost"]["flops"] > 0
    # the students read the trees' caches (and account for them) as they read an MLP's
    for variant, n in (("tree", 1), ("trees", 2)):
        kd = json.loads((res / "mlp" / "kd" / variant / "s0" / "run.json").read_text())
        kinds = [x["kind"] for x in kd["reused"]]
        assert kinds.count("past_run") == n and kinds.count("logit_cache") == n
        assert all("/gb/baseline/" in x["path"] for x in kd["reused"])
    # a student of the students: the cache of kd/tree seed 1's final checkpoint teaches seed 0
    kd = json.loads((res / "mlp" / "kd" / "again" / "s0" / "run.json").read_text())
    assert [x["path"].split("tab/", 1)[1] for x in kd["reused"]] == ["mlp/kd/tree/s1",
                                                                            "mlp/kd/tree/s1/logits/final"]
    student = json.loads((res / "mlp" / "kd" / "tree" / "s1" / "run.json").read_text())
    cache = LogitCache.open(res / "mlp" / "kd" / "tree" / "s1" / "logits" / "final", fingerprint=data.train.fingerprint)
    assert cache.meta["source"]["sha256"] == student["checkpoints"]["3"]["sha256"]
    summary = pd.read_csv(tmp_path / "results" / "summary.csv")
    runs = summary[summary["row"] == "run"] if "row" in summary else summary
    assert set(runs["model"]) == {"mlp", "gb"} and runs["test_acc"].notna().all() and len(runs) == 10
    majority = np.bincount(data.test.y.numpy()).max() / len(data.test)
    assert (runs["test_acc"] > majority + 0.1).all(), runs[["model", "method", "seed", "test_acc"]]
    again = smk(tmp_path, "-n", config=path)
    assert "Nothing to be done" in again.stdout + again.stderr
