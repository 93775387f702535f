"""The specialists method (reuse.methods.specialists): Hinton et al. (2015)'s JFT experiment at this
project's scale. Functional: the clustering recovers planted confusable groups, the label mapping,
the enriched epochs, the combination (the generalist when no specialist is active, mass moved toward
a confident specialist's class, the objective's minimum). End to end, in process: a baseline run as
the generalist, the stage, its run files and study; a kill during a specialist's training and the
rerun that resumes it, against an uninterrupted run; the groups chosen from the training set (the
test labels replaced leave them unchanged)."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from reuse.config import validate_config
from reuse.io import read_json
from reuse.methods.registry import get
from reuse.methods.specialists import core
from reuse.methods.specialists.core import (Enrich, active_specialists, cluster_classes, combine, coverage,
                                            dustbin_correction, enriched_ids, label_map, objective, others_per_epoch,
                                            specialist_head)
from reuse.plan import run_path
from reuse.workflow import Job
from tests.helpers import method_job, train_baseline

PLANTED = [[0, 4, 7], [1, 2, 9], [3, 5, 6, 8]]


def planted_probs(seed: int, n: int = 3000, c: int = 10, groups=PLANTED) -> np.ndarray:
    """A generalist's predictions that confuse the classes within each planted group: mass 0.4 on the
    true class, 0.5 spread at random over its group, the rest over all classes."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    p = np.full((n, c), 0.1 / c)
    for i, t in enumerate(y):
        g = next(g for g in groups if t in g)
        p[i, g] += rng.dirichlet(np.ones(len(g))) * 0.5
        p[i, t] += 0.4
    return p / p.sum(1, keepdims=True)


# ----------------------------------------------------------------------------- the groups
@pytest.mark.parametrize("seed", range(4))
def test_clustering_recovers_planted_confusable_groups(seed):
    p = planted_probs(seed)
    assert cluster_classes(p, 3, seed=seed) == sorted(PLANTED)
    assert cluster_classes(p, 3, seed=seed, matrix="covariance") == sorted(PLANTED)  # the paper's matrix
    # the same with fixed-size groups: each the 3 classes nearest its centroid (the 4-class group's 3 of 4)
    sized = cluster_classes(p, 3, 3, seed=seed)
    assert sized[:2] == [[0, 4, 7], [1, 2, 9]] and set(sized[2]) < {3, 5, 6, 8} and len(sized[2]) == 3
    assert cluster_classes(p, 3, seed=seed) == cluster_classes(p, 3, seed=seed)  # deterministic


def test_clustering_is_not_fooled_by_class_frequency_alone():
    """Random (unconfused) predictions give no planted structure: the groups are then not the planted ones."""
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(10), size=3000)
    assert cluster_classes(p, 3, seed=0) != sorted(PLANTED)
    with pytest.raises(ValueError, match="groups"):
        cluster_classes(p, 11)
    with pytest.raises(ValueError, match="size"):
        cluster_classes(p, 2, 11)


def test_sized_groups_take_their_cluster_first_then_the_nearest_others():
    # a cluster of 2 filled up to 3 takes the nearest class of another cluster: groups overlap
    p = planted_probs(0, groups=[[0, 1], [2, 3, 4], [5, 6, 7, 8, 9]])
    assert cluster_classes(p, 3, seed=0) == [[0, 1], [2, 3, 4], [5, 6, 7, 8, 9]]
    sized = cluster_classes(p, 3, 3, seed=0)
    assert sorted(map(len, sized)) == [3, 3, 3] and [0, 1] == [c for c in sized[0] if c < 2]
    assert [2, 3, 4] in sized and sum(set(g) <= {5, 6, 7, 8, 9} for g in sized) == 1


def test_coverage_counts_the_groups_holding_each_class():
    groups = [[0, 1], [1, 2], [1, 3]]
    np.testing.assert_array_equal(coverage(groups, np.array([0, 1, 2, 4]), 5), [1, 3, 1, 0])


# ----------------------------------------------------------------------------- a specialist's data
def test_label_map_puts_the_group_first_and_the_rest_in_the_dustbin():
    np.testing.assert_array_equal(label_map([2, 5, 7], 8), [3, 3, 0, 3, 3, 1, 3, 2])
    np.testing.assert_array_equal(label_map([0], 3), [0, 1, 1])


def test_enriched_epochs_hold_every_group_example_and_a_fresh_draw_of_the_others():
    group, others = np.arange(0, 40), np.arange(40, 400)
    e0, e1 = enriched_ids(group, others, 0.5, seed=3, epoch=0), enriched_ids(group, others, 0.5, seed=3, epoch=1)
    for e in (e0, e1):
        assert len(e) == 80 and len(set(e.tolist())) == 80 and set(group) <= set(e.tolist())
    assert set(e0.tolist()) - set(group) != set(e1.tolist()) - set(group)  # other examples drawn afresh
    np.testing.assert_array_equal(e0, enriched_ids(group, others, 0.5, seed=3, epoch=0))
    assert others_per_epoch(40, 360, 0.25) == 120 and others_per_epoch(40, 30, 0.5) == 30
    alg = Enrich(group, others, 0.5)
    assert alg.examples_per_epoch(400) == 80
    # the dustbin's prior: 360 others, 40 drawn per epoch: log(9); no correction when all are drawn
    assert dustbin_correction(40, 360, 0.5) == pytest.approx(math.log(9))
    assert dustbin_correction(40, 30, 0.5) == 0.0


def test_specialist_head_keeps_the_group_rows_and_sums_the_rest_in_the_dustbin():
    w, b = torch.randn(6, 4), torch.randn(6)
    hw, hb = specialist_head(w, b, [1, 4])
    torch.testing.assert_close(hw[:2], w[[1, 4]])
    torch.testing.assert_close(hw[2], w[[0, 2, 3, 5]].mean(0))
    torch.testing.assert_close(hb[2], b[[0, 2, 3, 5]].mean() + math.log(4))
    # equal logits of the rest: the dustbin's logit is exactly their log-sum-exp
    w0, b0 = torch.zeros(6, 4), torch.zeros(6)
    _, hb0 = specialist_head(w0, b0, [1, 4])
    assert float(hb0[2]) == pytest.approx(float(torch.logsumexp(torch.zeros(4), 0)))


# ----------------------------------------------------------------------------- the combination
GROUPS = [[0, 1, 2], [3, 4, 5]]


def test_combination_is_the_generalist_when_no_specialist_is_active():
    torch.manual_seed(0)
    lg = torch.log_softmax(torch.randn(5, 8, dtype=torch.float64), 1)
    ls = [torch.log_softmax(torch.randn(5, len(g) + 1, dtype=torch.float64), 1) for g in GROUPS]
    active = torch.zeros(5, 2, dtype=torch.bool)
    torch.testing.assert_close(combine(lg, ls, GROUPS, active), lg)
    active[1, 0] = True  # one active example changes; the others stay the generalist's exactly
    out = combine(lg, ls, GROUPS, active)
    torch.testing.assert_close(out[[0, 2, 3, 4]], lg[[0, 2, 3, 4]])
    assert not torch.allclose(out[1], lg[1])


def test_a_confident_specialist_moves_mass_toward_its_class():
    # the generalist hesitates between 0, 1 and 2; the specialist of group [0, 1, 2] is sure of 1
    pg = torch.tensor([[0.3, 0.3, 0.3, 0.02, 0.02, 0.02, 0.02, 0.02]], dtype=torch.float64)
    ps = [torch.tensor([[0.02, 0.95, 0.02, 0.01]], dtype=torch.float64), torch.full((1, 4), 0.25, dtype=torch.float64)]
    active = active_specialists(pg, torch.tensor(core.membership(GROUPS, 8)), top_n=1)
    assert active.tolist() == [[True, False]]
    q = combine(pg.log(), [p.log() for p in ps], GROUPS, active, steps=300).exp()[0]
    assert q.argmax() == 1 and q[1] > 0.6 > pg[0, 1]
    assert float(q.sum()) == pytest.approx(1.0)
    # the classes outside the group keep their share relative to each other
    torch.testing.assert_close(q[3:] / q[3:].sum(), pg[0, 3:] / pg[0, 3:].sum(), rtol=1e-6, atol=1e-9)


def test_combination_reaches_the_objectives_minimum():
    """Against a long run of L-BFGS on the same objective: the default 100 steps come within 1%."""
    torch.manual_seed(1)
    lg = torch.log_softmax(2 * torch.randn(16, 8, dtype=torch.float64), 1)
    ls = [torch.log_softmax(2 * torch.randn(16, 4, dtype=torch.float64), 1) for _ in GROUPS]
    active = torch.rand(16, 2) > 0.3
    got = objective(combine(lg, ls, GROUPS, active), lg, ls, GROUPS, active).sum()
    z = lg.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([z], max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-14)

    def closure():
        opt.zero_grad()
        loss = objective(torch.log_softmax(z, 1), lg, ls, GROUPS, active).sum()
        loss.backward()
        return loss

    opt.step(closure)
    best = objective(torch.log_softmax(z.detach(), 1), lg, ls, GROUPS, active).sum()
    start = objective(lg, lg, ls, GROUPS, active).sum()
    assert best <= got <= best * 1.01 + 1e-9 and got < start


def test_active_specialists_meet_the_top_n_classes():
    member = torch.tensor(core.membership([[0, 1], [2, 3], [1, 4]], 5))
    p = torch.tensor([[0.5, 0.1, 0.3, 0.05, 0.05], [0.05, 0.05, 0.1, 0.1, 0.7]])
    assert active_specialists(p, member, 1).tolist() == [[True, False, False], [False, False, True]]
    assert active_specialists(p, member, 2).tolist() == [[True, True, False], [False, True, True]]


# ----------------------------------------------------------------------------- end to end
DATASET = {"kind": "mnist1d", "mnist1d": {"num_samples": 600, "seed": 3}}
CONFIG = {
    "datasets": {"d": DATASET},
    "models": {"m": {"arch": "mlp", "args": {"hidden": [32]}}},
    "train": {"epochs": 4, "batch_size": 64, "checkpoint_epochs": [2], "optimizer": {"lr": 0.05}},
    "baseline": {"seeds": [0, 1]},
    "specialists": {"seeds": [0, 1], "variants": {"g3": {"model": "m", "from": {"model": "m"}, "groups": 2, "size": 3,
                                                         "top_n": 1, "train": {"epochs": 3, "checkpoint_every": 1}}}},
}


def _train_baselines(cfg, res, data_dir):
    for seed in (0, 1):
        train_baseline(cfg, data_dir, res / run_path("d", "m", seed=seed), "m", seed)


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """Two baseline runs (the generalists), then both specialists runs."""
    from reuse.data import prepare
    from reuse.methods.specialists.stage import train

    cfg = validate_config(copy.deepcopy(CONFIG))
    res = tmp_path_factory.mktemp("specialists")
    data_dir = res / "d" / "data"
    prepare("d", DATASET, data_dir / "data.npz", data_dir / "dataset.json")
    _train_baselines(cfg, res, data_dir)
    for seed in (0, 1):
        train(Job(**method_job(cfg, "specialists", "d", "g3", seed, res, data_dir)))
    return cfg, res, data_dir


def test_the_run_is_the_combination_of_the_generalist_and_its_specialists(done):
    cfg, res, _ = done
    m = get("specialists", cfg)
    run_dir = res / m.run_dir(cfg, "d", "g3", 0)
    run = read_json(run_dir / "run.json")
    sp = run["specialists"]
    assert len(sp["groups"]) == 2 and all(len(g) == 3 for g in sp["groups"])
    z = np.load(run_dir / "specialists.npz")
    pred = np.load(run_dir / "predictions.npz")
    np.testing.assert_allclose(pred["logits"], z["combined"], atol=1e-5)  # the run's predictions: the combination
    assert run["final"]["test_acc"] == pytest.approx(sp["combined_test_acc"])
    # the generalist part is the past run's predictions (softmaxed), and it is the past run the cost reuses
    past = res / run_path("d", "m", seed=1)  # seed 0's generalist: the next baseline seed, cyclically
    gp = np.load(past / "predictions.npz")["logits"]
    np.testing.assert_allclose(z["generalist"], torch.log_softmax(torch.tensor(gp), 1).numpy(), atol=1e-5)
    assert [r["path"] for r in run["reused"] if r["kind"] == "past_run"] == [str(past)]
    assert sp["generalist_test_acc"] == pytest.approx(read_json(past / "run.json")["final"]["test_acc"])
    # its own cost: the specialists' training (3 epochs each of half group, half others)
    assert run["cost"]["train_flops"] > 0 and run["recipe"]["epochs"] == 0
    for s in sp["specialists"]:
        assert s["epochs"] == 3 and s["train_examples_per_epoch"] == 2 * s["group_examples"]
    np.testing.assert_array_equal(z["covering"], coverage(sp["groups"], z["target"], 10))
    # examples with no active specialist keep the generalist's prediction exactly
    idle = z["active"] == 0
    assert idle.any() and (~idle).any()
    np.testing.assert_allclose(z["combined"][idle], z["generalist"][idle], atol=1e-5)
    assert not get("specialists", cfg).plain_checkpoint


def test_the_study_breaks_the_gain_down_by_specialists_covering_the_true_class(done, tmp_path):
    import pandas as pd

    from reuse.methods.registry import resolve
    from reuse.methods.specialists.spec import STUDY

    cfg, res, _ = done
    extra = {k: [str(res / f) for f in v] for k, v in STUDY.extra(cfg, "d").items()}
    out = tmp_path / "specialists.csv"
    resolve(STUDY.build)(runs_csvs=[], baseline_csv="", extra=extra, params=STUDY.params(cfg), out_csv=str(out))
    t = pd.read_csv(out, dtype={"covering": str})
    assert t["covering"].iloc[0] == "all" and (t["seeds"] == 2).all()
    z = [np.load(f) for f in extra["specialist_predictions"]]
    for _, r in t.iterrows():
        on = [np.ones(len(a["target"]), bool) if r["covering"] == "all" else a["covering"] == int(r["covering"])
              for a in z]
        want = np.mean([(a["combined"][o].argmax(1) == a["target"][o]).mean() for a, o in zip(z, on)])
        assert r["acc_combined"] == pytest.approx(want)
        gen = [(a["generalist"][o].argmax(1) == a["target"][o]).mean() for a, o in zip(z, on)]
        assert r["gain"] == pytest.approx(want - np.mean(gen))
    from reuse.methods.specialists.stage import charts

    assert charts(t)[0][1].to_dict()  # the chart renders


def test_a_killed_run_resumes_its_specialists_and_matches_an_uninterrupted_one(done, tmp_path, monkeypatch):
    from reuse.methods.specialists import stage

    cfg, res, data_dir = done
    calls = {"n": 0}
    original = Enrich.epoch_ids

    def killing(self, state):
        calls["n"] += 1
        if calls["n"] == 5:  # the second specialist's second epoch: the first is done, the second half
            raise KeyboardInterrupt
        return original(self, state)

    monkeypatch.setattr(Enrich, "epoch_ids", killing)
    job = method_job(cfg, "specialists", "d", "g3", 0, res, data_dir, out=tmp_path)
    with pytest.raises(KeyboardInterrupt):
        stage.train(Job(**job))
    state = tmp_path / get("specialists", cfg).run_dir(cfg, "d", "g3", 0) / "state" / "specialists"
    assert (state / "g0" / "last.pt").exists() and (state / "g1" / "last.pt").exists()
    monkeypatch.setattr(Enrich, "epoch_ids", original)
    stage.train(Job(**job))
    mine = tmp_path / get("specialists", cfg).run_dir(cfg, "d", "g3", 0)
    ref = res / get("specialists", cfg).run_dir(cfg, "d", "g3", 0)
    a, b = read_json(mine / "run.json"), read_json(ref / "run.json")
    assert [s["resumed_from"] for s in a["specialists"]["specialists"]] == [3, 1]
    np.testing.assert_array_equal(np.load(mine / "predictions.npz")["logits"],
                                  np.load(ref / "predictions.npz")["logits"])
    assert a["final"] == b["final"] and a["cost"]["train_flops"] == b["cost"]["train_flops"]
    assert not (mine / "state").exists()


def test_the_groups_come_from_the_training_set_never_from_test(done, tmp_path):
    """The run made again on a copy of the data whose test labels are replaced: the same groups (the
    generalist's predictions of the training set decide them) and the same specialists' training;
    only the reported test accuracies move."""
    from reuse.methods.specialists.stage import train
    from tests.methods.choices import assert_choice_ignores_test, fresh_dir, with_split_labels

    cfg, res, data_dir = done

    def choose(data: Path) -> dict:
        out = fresh_dir(tmp_path, "run")
        train(Job(**method_job(cfg, "specialists", "d", "g3", 0, res, data, out=out)))
        sp = read_json(out / get("specialists", cfg).run_dir(cfg, "d", "g3", 0) / "run.json")["specialists"]
        return {"groups": sp["groups"], "examples": [s["train_examples_per_epoch"] for s in sp["specialists"]]}

    ref = read_json(res / get("specialists", cfg).run_dir(cfg, "d", "g3", 0) / "run.json")["specialists"]
    assert_choice_ignores_test(choose, data_dir, lambda d, rng: with_split_labels(d, fresh_dir(tmp_path, "data"), rng,
                                                                                  "test", how="relabel"),
                               reference={"groups": ref["groups"],
                                          "examples": [s["train_examples_per_epoch"] for s in ref["specialists"]]})


def test_groups_beyond_the_data_are_refused_naming_the_key():
    from reuse.errors import ConfigError

    cfg = copy.deepcopy(CONFIG)
    cfg["specialists"]["variants"]["g3"].update(groups=12, size=10)
    with pytest.raises(ConfigError) as e:
        validate_config(cfg)
    assert "specialists.variants.g3.groups: 12 groups of the 10 classes of dataset 'd'" in str(e.value)
    assert "specialists.variants.g3.size: a group of 10 of the 10 classes of dataset 'd'" in str(e.value)
