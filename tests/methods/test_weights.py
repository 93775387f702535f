"""Warm starts, shrink and perturb, soups and weight averaging: the functional cores, the trainer
hook (with resume), the held-out split, the config checks, and the choices made on validation only
(the greedy soup's ingredients, the study's best ingredient: neither moves with the test labels)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from reuse.config import validate_config
from reuse.methods.registry import get
from reuse.errors import ConfigError, ReuseError
from reuse.io import read_json
from reuse.methods.weights import (
    WeightAveraging,
    average_state_dicts,
    check_same_architecture,
    greedy_soup,
    recompute_bn,
    shrink_perturb,
)
from reuse.models import build_model
from reuse.train import Algorithm, Event, Trainer, seed_everything
from tests.helpers import Kill, recipe

RECIPE = recipe(epochs=4, checkpoint_epochs=[], example_stats=False, checkpoint_every=1)
SPEC = {"arch": "mlp", "args": {"hidden": [16]}}


def mlp(data, seed=0, hidden=(16,)):
    seed_everything(seed)
    return build_model("mlp", data.input_shape, data.num_classes, hidden=list(hidden))


def fit(data, state_dir, algorithms, recipe=RECIPE, seed=0):
    trainer = Trainer(mlp(data, seed), data, recipe, seed=seed, state_dir=state_dir, model_spec=SPEC,
                      algorithms=algorithms, progress="off")
    return trainer, trainer.fit()


# ----------------------------------------------------------------------------- warm starts
def test_shrink_perturb_formula(tiny_data):
    past, fresh = mlp(tiny_data, 1).state_dict(), mlp(tiny_data, 2).state_dict()
    plain = shrink_perturb(past, fresh, 1.0, 0.0)
    assert all(torch.equal(plain[k], past[k]) for k in past)
    sp = shrink_perturb(past, fresh, 0.4, 0.1)
    for k in past:
        torch.testing.assert_close(sp[k], 0.4 * past[k] + 0.1 * fresh[k], rtol=0, atol=0)
    assert not torch.equal(sp["1.weight"], past["1.weight"])


def test_architecture_mismatch_names_the_parameter(tiny_data):
    small, wide = mlp(tiny_data).state_dict(), mlp(tiny_data, hidden=(32,)).state_dict()
    with pytest.raises(ReuseError, match=r"parameter '1.weight' has shape \(32, 40\).*\(16, 40\)"):
        shrink_perturb(wide, small)
    deep = mlp(tiny_data, hidden=(16, 16)).state_dict()
    with pytest.raises(ReuseError, match="parameter '.*' is (missing from|not in the new model)"):
        check_same_architecture(small, deep)


# ----------------------------------------------------------------------------- soups
def test_uniform_soup_is_the_mean(tiny_data):
    sds = [mlp(tiny_data, s).state_dict() for s in range(3)]
    soup = average_state_dicts(sds)
    for k in sds[0]:
        torch.testing.assert_close(soup[k], (sds[0][k] + sds[1][k] + sds[2][k]) / 3)


def test_greedy_soup_orders_by_heldout_and_never_loses_to_its_best_ingredient():
    # A score that is known in closed form: minus the distance of the weights to a target.
    target = torch.zeros(4)
    sds = [{"w": torch.tensor(v)} for v in ([1.0, 0, 0, 0], [3.0, 3, 3, 3], [-1.0, 0, 0, 0], [0, 2.0, 0, 0])]
    score = lambda sd: -float((sd["w"] - target).norm())  # noqa: E731
    out = greedy_soup(sds, score)
    assert out["order"][:2] == [0, 2]  # ties (distance 1) by position; then [0, 2, 0] (distance 2); then 3
    assert out["order"] == sorted(range(4), key=lambda i: (-score(sds[i]), i))
    assert out["chosen"] == [0, 2]  # the mean of 0 and 2 is the target itself; 3 and 1 would move away
    assert out["score"] == 0.0 >= max(out["scores"])
    torch.testing.assert_close(out["state_dict"]["w"], target)
    assert out["evaluations"] == 4 + 3


def test_bn_recompute_matches_the_data_statistics():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5))
    x = torch.randn(64, 3) * 2 + 1
    batches = [(x[i:i + 16],) for i in range(0, 64, 16)]
    out = recompute_bn(model, batches)
    assert out["done"] and out["flops"] > 0
    h = model[0](x).detach()
    torch.testing.assert_close(model[1].running_mean, h.mean(0), rtol=1e-5, atol=1e-5)
    # update_bn averages the per-batch (unbiased) variances with equal weights
    var = torch.stack([h[i:i + 16].var(0, unbiased=True) for i in range(0, 64, 16)]).mean(0)
    torch.testing.assert_close(model[1].running_var, var, rtol=1e-5, atol=1e-5)
    assert recompute_bn(nn.Linear(3, 2), batches) == {"done": False, "time_s": 0.0, "flops": 0}


# ----------------------------------------------------------------------------- SWA and EMA
class Snapshots(Algorithm):
    """Record the weights at the end of every epoch and after every optimizer step."""

    name = "snapshots"

    def __init__(self):
        self.epochs, self.steps = [], []

    def on_event(self, event, state):
        if event in (Event.BATCH, Event.EPOCH_END) and len(self.steps) < state.step:
            self.steps.append(copy.deepcopy(state.model.state_dict()))  # the weights after each step, once
        if event is Event.EPOCH_END:
            self.epochs.append(copy.deepcopy(state.model.state_dict()))


def test_swa_is_the_mean_of_the_epoch_snapshots(tiny_data, tmp_path):
    snap = Snapshots()
    swa = WeightAveraging("swa", start=0.5)
    _, state = fit(tiny_data, tmp_path / "s", [snap, swa])
    assert swa.first_epoch(4) == 2 and swa.snapshots == 2
    mean = average_state_dicts(snap.epochs[2:])  # the ends of epochs 3 and 4
    for k, v in state.model.state_dict().items():
        torch.testing.assert_close(v, mean[k])
    row = state.metrics[-1]
    assert row["test_acc_before"] is not None and "test_acc" in row


def test_ema_follows_the_recursion(tiny_data, tmp_path):
    snap = Snapshots()
    ema = WeightAveraging("ema", start=0.0, decay=0.9)
    _, state = fit(tiny_data, tmp_path / "e", [snap, ema])
    assert len(snap.steps) == state.step == ema.snapshots
    e = {k: v.clone() for k, v in snap.steps[0].items()}
    for sd in snap.steps[1:]:
        e = {k: 0.9 * e[k] + 0.1 * sd[k] for k in e}
    for k, v in state.model.state_dict().items():
        torch.testing.assert_close(v, e[k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["swa", "ema"])
def test_averaging_resumes_to_the_same_weights(tiny_data, tmp_path, kind):
    make = lambda: WeightAveraging(kind, start=0.25, decay=0.9)  # noqa: E731
    _, whole = fit(tiny_data, tmp_path / "whole", [make()])
    with pytest.raises(KeyboardInterrupt):
        fit(tiny_data, tmp_path / "cut", [make(), Kill(epoch=3)])  # killed at epoch 3's end, before its checkpoint
    trainer, resumed = fit(tiny_data, tmp_path / "cut", [make(), Kill()])
    assert trainer.resumed_from == 2
    for k, v in whole.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[k], v, rtol=0, atol=0)
    # a resume that finds the run complete keeps the averaged weights as they are
    trainer, again = fit(tiny_data, tmp_path / "cut", [make(), Kill()])
    assert trainer.resumed_from == 4
    for k, v in whole.model.state_dict().items():
        torch.testing.assert_close(again.model.state_dict()[k], v, rtol=0, atol=0)


def test_init_joins_the_identity_and_zero_epochs_evaluate(tiny_data, tmp_path):
    seed_everything(0)
    model = mlp(tiny_data)
    a = Trainer(model, tiny_data, RECIPE, seed=0, state_dir=tmp_path / "a", model_spec=SPEC, progress="off",
                init_id="past-run-A")
    b = Trainer(model, tiny_data, RECIPE, seed=0, state_dir=tmp_path / "a", model_spec=SPEC, progress="off",
                init_id="past-run-B")
    assert a.identity != b.identity
    t = Trainer(mlp(tiny_data), tiny_data, {**RECIPE, "epochs": 0}, seed=0, state_dir=tmp_path / "z",
                model_spec=SPEC, progress="off", initial_cost={"train_time_s": 1.5, "train_flops": 7})
    state = t.fit()
    assert len(state.metrics) == 1 and state.metrics[0]["epoch"] == 0 and state.step == 0
    assert state.metrics[0]["train_time_s"] == 1.5 and state.metrics[0]["train_flops"] == 7
    assert 0 <= state.metrics[0]["test_acc"] <= 1 and (tmp_path / "z" / "last.pt").exists()


# ----------------------------------------------------------------------------- held-out split
def test_holdout_split_is_disjoint_stratified_and_fingerprinted(tmp_path):
    from reuse.data import load, prepare
    from reuse.data.sources import holdout_ids

    spec = {"kind": "mnist1d", "mnist1d": {"num_samples": 500, "seed": 3}}
    prepare("t", spec, tmp_path / "a" / "data.npz", tmp_path / "a" / "dataset.json")
    prepare("t", {**spec, "holdout": 50}, tmp_path / "b" / "data.npz", tmp_path / "b" / "dataset.json")
    full, held = load(tmp_path / "a"), load(tmp_path / "b")
    assert full.val is None and len(held.val) == 50 and len(held.train) == len(full.train) - 50
    ids = np.array(held.meta["holdout"]["source_ids"])
    assert np.array_equal(ids, holdout_ids(full.train.y.numpy(), 50))
    rest = np.setdiff1d(np.arange(len(full.train)), ids)
    assert np.array_equal(held.val.x.numpy(), full.train.x.numpy()[ids])  # val: the held-out rows
    assert np.array_equal(held.train.x.numpy(), full.train.x.numpy()[rest])  # train: the others, in order
    counts, val_counts = np.bincount(full.train.y.numpy(), minlength=10), np.bincount(held.val.y.numpy(), minlength=10)
    assert np.all(np.abs(val_counts - counts * 50 / len(full.train)) < 1)  # stratified
    assert held.train.fingerprint["digest"] != full.train.fingerprint["digest"]
    assert held.val.fingerprint["split"] == "val" and held.meta["n_val"] == 50
    assert full.test.fingerprint["digest"] == held.test.fingerprint["digest"]


# ----------------------------------------------------------------------------- config
def base_config(**blocks):
    cfg = {"datasets": {"d": {"kind": "mnist1d", "holdout": 20}},
           "models": {"c": {"arch": "cnn1d", "args": {"channels": 8}}, "c2": {"arch": "cnn1d", "args": {"channels": 8}},
                      "m": {"arch": "mlp"}},
           "baseline": {"seeds": [0, 1, 2]},
           "prune": {"variants": {"half": {"model": "c", "mode": "random", "keep": 0.5}}}}
    cfg.update(copy.deepcopy(blocks))
    return cfg


def test_weights_config_is_valid_and_resolves_past_runs():
    cfg = validate_config(base_config(
        warm={"variants": {"same": {"model": "c", "from": {"model": "c2"}, "train": {"epochs": 5}},
                           "more": {"model": "c", "from": {"model": "c", "method": "prune", "variant": "half"}},
                           "one": {"model": "c", "from": {"model": "c", "seed": 0}}}},
        soup={"variants": {"g": {"model": "c", "ingredients": {"variant": "one", "runs": 2}, "recipe": "greedy"}}},
        averaging={"variants": {"swa": {"model": "c", "kind": "swa"}}}))
    warm, soup = get("warm"), get("soup")
    assert warm.source(cfg, "same", "d", 2) == {"run": "d/c2/baseline/s0", "ckpt": "d/c2/baseline/s0/ckpt/e30.pt",
                                                "seed": 0}
    assert warm.source(cfg, "more", "d", 0) == {"run": "d/c/prune/half/s1", "ckpt": "d/c/prune/half/s1/ckpt/last.pt",
                                                "seed": 1}
    assert warm.source(cfg, "one", "d", 1)["seed"] == 0
    assert warm.recipe(cfg, "same")["epochs"] == 5 and warm.recipe(cfg, "same")["checkpoint_epochs"] == []
    assert soup.ingredient_seeds(cfg, "g", 2) == [2, 0]
    assert soup.inputs(cfg, "d", "g", 2) == {"ingredients": ["d/c/warm/one/s2/ckpt/last.pt", "d/c/warm/one/s2/run.json",
                                                             "d/c/warm/one/s0/ckpt/last.pt", "d/c/warm/one/s0/run.json"]}


@pytest.mark.parametrize("blocks, message", [
    ({"warm": {"variants": {"w": {"model": "c", "from": {"model": "m"}}}}}, "differ in architecture"),
    ({"warm": {"variants": {"w": {"model": "c", "from": {"model": "cc"}}}}}, "from.model: no model named 'cc'"),
    ({"warm": {"variants": {"w": {"model": "c", "from": {"model": "c", "method": "prune", "variant": "haf"}}}}},
     "no prune variant named 'haf' \\(did you mean 'half'\\?\\)"),
    ({"warm": {"variants": {"w": {"model": "c", "from": {"model": "c", "epoch": 7}}}}}, "not a checkpoint epoch"),
    ({"soup": {"variants": {"s": {"model": "c", "ingredients": {"variant": "nope"}}}}}, "no warm variant named 'nope'"),
    ({"warm": {"variants": {"w": {"model": "c", "from": {"model": "c", "seed": 0}}}},
      "soup": {"variants": {"s": {"model": "c", "ingredients": {"variant": "w", "runs": 4}}}}},
     "ingredients.runs: 4 runs asked for, but warm has 3 seeds"),
    ({"warm": {"variants": {"w": {"model": "c", "from": {"model": "c"}}}},
      "soup": {"variants": {"s": {"model": "c", "ingredients": {"variant": "w", "runs": 2}}}}},
     "start from different past runs .* set warm.variants.w.from.seed"),
])
def test_weights_config_problems(blocks, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(base_config(**blocks))


def test_greedy_soup_without_holdout_is_a_config_error():
    cfg = base_config(warm={"variants": {"w": {"model": "c", "from": {"model": "c", "seed": 0}}}},
                      soup={"variants": {"g": {"model": "c", "ingredients": {"variant": "w", "runs": 2},
                                               "recipe": "greedy"}}})
    cfg["datasets"]["d"]["holdout"] = 0
    with pytest.raises(ConfigError, match="holds no examples out; set datasets.d.holdout"):
        validate_config(cfg)


# ----------------------------------------------------------------------------- validation only (issue 25)
def _ingredients(val_key: str = "val_acc") -> list[dict]:
    """A soup run's ``reused`` records: three ingredients whose best by validation (the second) is not
    the best by test (the third), and the past run they share."""
    accs = [(0.80, 0.81), (0.90, 0.84), (0.85, 0.88)]  # (validation, test) per ingredient
    return [{"kind": "soup_ingredient", "path": f"w/s{i}", "time_s": 1.0, "flops": 1, "test_acc": t, val_key: v}
            for i, (v, t) in enumerate(accs)] + [{"kind": "past_run", "path": "b/s0", "time_s": 2.0, "flops": 2}]


@pytest.mark.parametrize("val_key", ["val_acc", "heldout_acc"])
def test_the_best_ingredient_is_chosen_on_validation_never_on_test(val_key):
    """The soup's bar (the study's best_ingredient_acc): the ingredient with the highest validation
    accuracy, whatever the test accuracies say; with none recorded, no ingredient is chosen."""
    from reuse.methods.weights.stage import best_ingredient
    from tests.methods.choices import assert_choice_ignores_test

    reused = _ingredients(val_key)
    assert best_ingredient(reused)["path"] == "w/s1"  # not w/s2, the best by test accuracy

    def replaced(key):
        return lambda recs, rng: [{**x, key: float(rng.uniform())} if x["kind"] == "soup_ingredient" else x
                                  for x in recs]

    assert_choice_ignores_test(lambda recs: best_ingredient(recs)["path"], reused, replaced("test_acc"), trials=5,
                               perturb_val=replaced(val_key))
    assert best_ingredient([{**x, val_key: None} for x in reused]) is None
    assert best_ingredient([x for x in reused if x["kind"] != "soup_ingredient"]) is None


def test_the_study_reports_the_test_accuracy_of_the_best_ingredient_by_validation(tmp_path):
    import json

    import pandas as pd

    from reuse.methods.weights.stage import study

    soup_dir = tmp_path / "d" / "m" / "soup" / "g" / "s0"
    soup_dir.mkdir(parents=True)
    (soup_dir / "run.json").write_text(json.dumps({"reused": _ingredients()}))
    row = {"dataset": "d", "model": "m", "seed": 0, "epochs": 0, "train_time_s": 1.0, "reused_time_s": 3.0}
    pd.DataFrame([{**row, "method": "baseline", "variant": "", "test_acc": 0.8, "run": str(tmp_path / "b")}]).to_csv(
        tmp_path / "baselines.csv", index=False)
    pd.DataFrame([{**row, "method": "soup", "variant": "g", "test_acc": 0.86, "run": str(soup_dir)}]).to_csv(
        tmp_path / "soup.csv", index=False)
    study(runs_csvs=[str(tmp_path / "soup.csv")], baseline_csv=str(tmp_path / "baselines.csv"),
          extra={"soup_runs": [str(soup_dir / "run.json")]}, params={}, out_csv=str(tmp_path / "warm.csv"))
    out = pd.read_csv(tmp_path / "warm.csv").set_index("method")
    assert out.loc["soup", "best_ingredient_acc"] == pytest.approx(0.84)  # ingredient 1's test accuracy, not 0.88


GREEDY = {"datasets": {"d": {"kind": "mnist1d", "mnist1d": {"num_samples": 400, "seed": 3}, "holdout": 60}},
          "models": {"m": {"arch": "mlp", "args": {"hidden": [16]}}},
          "train": {"epochs": 2, "batch_size": 32, "checkpoint_epochs": [], "optimizer": {"lr": 0.05}},
          "baseline": {"seeds": [0, 1, 2]},
          "warm": {"variants": {"tune": {"model": "m", "from": {"model": "m", "seed": 0},
                                         "train": {"epochs": 1, "optimizer": {"lr": 0.2}}}}},
          "soup": {"variants": {"g": {"model": "m", "ingredients": {"variant": "tune", "runs": 3},
                                      "recipe": "greedy"}}}}


def test_the_greedy_soup_chooses_its_ingredients_on_validation(tmp_path):
    """A greedy soup of three fine-tunes of one past run, made again on a copy of the data whose test
    labels are permuted: it takes the same ingredients after the same held-out accuracies. With the
    validation labels replaced instead, the held-out accuracies (and so the choice) move."""
    from reuse.data import prepare
    from reuse.methods.weights.stage import train_soup, train_warm
    from reuse.plan import run_path
    from reuse.workflow import Job
    from tests.helpers import method_job, train_baseline
    from tests.methods.choices import assert_choice_ignores_test, fresh_dir, with_split_labels

    cfg = validate_config(copy.deepcopy(GREEDY))
    res = tmp_path / "res"
    data_dir = res / "d" / "data"
    prepare("d", GREEDY["datasets"]["d"], data_dir / "data.npz", data_dir / "dataset.json")
    train_baseline(cfg, data_dir, res / run_path("d", "m", seed=0), "m")
    for seed in (0, 1, 2):
        train_warm(Job(**method_job(cfg, "warm", "d", "tune", seed, res, data_dir)))

    def choose(data: Path) -> dict:
        out = fresh_dir(tmp_path, "soup")
        train_soup(Job(**method_job(cfg, "soup", "d", "g", 0, res, data, out=out)))
        run = read_json(out / get("soup", cfg).run_dir(cfg, "d", "g", 0) / "run.json")
        ings = [x for x in run["reused"] if x["kind"] == "soup_ingredient"]
        return {"chosen": [x["chosen"] for x in ings], "heldout_acc": [x["heldout_acc"] for x in ings]}

    def labels(split):
        return lambda d, rng: with_split_labels(d, fresh_dir(tmp_path, "data"), rng, split, how="relabel")

    got = assert_choice_ignores_test(choose, data_dir, labels("test"), perturb_val=labels("val"))
    assert any(got["chosen"])
