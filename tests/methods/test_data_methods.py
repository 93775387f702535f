"""Pruning, curricula and loss re-weighting: the functional cores and the methods in the trainer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reuse.methods.curriculum import Curriculum, curriculum_order, pacing, step_batches
from reuse.methods.prune import Prune, matched_epochs, select
from reuse.methods.reweight import Reweight, rank_weights, weighted_cross_entropy
from reuse.models import build_model
from reuse.train import Event, Trainer, seed_everything
from tests.helpers import Record, recipe

RECIPE = recipe(checkpoint_epochs=[], example_stats=True)


def batch_ids():
    """A spy that keeps the example ids of each batch, with its step: (step, idx)."""
    return Record(Event.BATCH, what=lambda state: (state.step, state.batch[2].clone()))


def fit(data, tmp_path, algorithms, recipe=RECIPE, seed=0):
    seed_everything(seed)
    model = build_model("mlp", data.input_shape, data.num_classes, hidden=[16])
    spec = {"arch": "mlp", "args": {"hidden": [16]}}
    trainer = Trainer(model, data, recipe, seed=seed, state_dir=tmp_path / "state", model_spec=spec,
                      algorithms=algorithms, progress="off")
    return trainer, trainer.fit()


# ----------------------------------------------------------------------------- pruning
def test_select_hardest_easiest_and_ties_by_id():
    d = np.array([0.1, 0.9, 0.5, 0.9, 0.3, 0.0])
    assert select(d, 0.5).tolist() == [1, 2, 3]
    assert select(d, 0.5, mode="easiest").tolist() == [0, 4, 5]
    assert select(d, 1 / 6).tolist() == [1]  # the tie between ids 1 and 3 goes to the lower id
    assert select(d, 1.0).tolist() == list(range(6))


def test_drop_noisy_skips_the_top_tail_then_keeps_the_hardest():
    d = np.arange(100, dtype=float)  # id i has difficulty i
    kept = select(d, 0.5, mode="drop_noisy", drop=0.1)
    assert kept.tolist() == list(range(40, 90))  # ids 90..99 dropped as likely noise


def test_random_selection_is_seeded_and_ignores_scores():
    a, b = select(None, 0.3, mode="random", seed=1, n=100), select(None, 0.3, mode="random", seed=1, n=100)
    assert np.array_equal(a, b) and len(a) == 30 and len(set(a.tolist())) == 30
    assert not np.array_equal(a, select(None, 0.3, mode="random", seed=2, n=100))


def test_class_balanced_keeps_the_same_fraction_of_each_class():
    labels = np.array([0] * 60 + [1] * 40)
    d = np.where(labels == 0, 10.0, 0.0) + np.random.default_rng(0).random(100)  # class 0 is all harder
    plain = select(d, 0.5, labels=labels)
    assert (labels[plain] == 0).all()
    bal = select(d, 0.5, labels=labels, class_balanced=True)
    assert np.bincount(labels[bal]).tolist() == [30, 20]
    within = bal[labels[bal] == 1]
    assert set(within.tolist()) == set(np.flatnonzero(labels == 1)[np.argsort(-d[labels == 1])[:20]].tolist())


@pytest.mark.parametrize("bad, msg", [
    (dict(keep=0.0), "keep must lie in"), (dict(keep=1.5), "keep must lie in"),
    (dict(keep=0.5, mode="hardest_first"), "unknown pruning mode"),
    (dict(keep=0.5, class_balanced=True), "needs the labels")])
def test_select_rejects_bad_arguments(bad, msg):
    with pytest.raises(ValueError, match=msg):
        select(np.ones(10), **bad)


@pytest.mark.parametrize("n_full, n_kept, bs, epochs, drop_last", [(4000, 1200, 128, 40, False), (240, 120, 64, 3, False),
                                                                   (1000, 333, 50, 7, True), (100, 100, 32, 5, False)])
def test_matched_epochs_give_at_least_the_full_runs_steps_and_no_epoch_more(n_full, n_kept, bs, epochs, drop_last):
    def spe(n):
        return n // bs if drop_last else math.ceil(n / bs)

    e = matched_epochs(n_full, n_kept, bs, epochs, drop_last=drop_last)
    assert e * spe(n_kept) >= spe(n_full) * epochs > (e - 1) * spe(n_kept)
    assert matched_epochs(n_full, n_kept, bs, epochs, drop_last=drop_last, budget=0.5) <= math.ceil(e / 2)


def test_pruned_run_trains_on_the_kept_examples_only(tiny_data, tmp_path):
    kept = np.arange(0, len(tiny_data.train), 3)  # 80 of 240
    rec = batch_ids()
    trainer, state = fit(tiny_data, tmp_path, [Prune(kept), rec])
    assert state.steps_per_epoch == 3 and state.step == 6
    for epoch in range(2):
        seen = torch.cat([ids for step, ids in rec.seen if step // 3 == epoch])
        assert sorted(seen.tolist()) == kept.tolist()  # each kept example once per epoch
    stats = trainer.example_stats["correct"]
    assert (stats[:, kept] >= 0).all() and (np.delete(stats.numpy(), kept, axis=1) == -1).all()
    first = [ids for step, ids in rec.seen if step < 3]
    second = [ids for step, ids in rec.seen if step >= 3]
    assert not all(torch.equal(a, b) for a, b in zip(first, second))  # reshuffled each epoch


# ----------------------------------------------------------------------------- curricula
def test_pacing_functions():
    kw = dict(start=0.2, full_at=0.5)
    for kind in ("linear", "exp", "step"):
        assert pacing(kind, 0, 100, **kw) == pytest.approx(0.2)
        assert pacing(kind, 50, 100, **kw) == pytest.approx(1.0) and pacing(kind, 99, 100, **kw) == 1.0
        vals = [pacing(kind, t, 100, **kw) for t in range(100)]
        assert all(a <= b for a, b in zip(vals, vals[1:]))  # never shrinks
    assert pacing("linear", 25, 100, **kw) == pytest.approx(0.6)
    assert pacing("exp", 25, 100, **kw) == pytest.approx(0.2 * 5 ** 0.5)
    assert pacing("step", 24, 100, stages=4, **kw) == pytest.approx(0.2 + 0.8 * 1 / 4)
    assert pacing("linear", 0, 100, start=0.5, full_at=0.0) == 1.0
    with pytest.raises(ValueError, match="unknown pacing"):
        pacing("quadratic", 0, 10, **kw)


def test_curriculum_orders():
    d = np.array([0.3, 0.1, 0.3, 0.9])
    assert curriculum_order(d, "easy").tolist() == [1, 0, 2, 3]
    assert curriculum_order(d, "anti").tolist() == [3, 0, 2, 1]
    r = curriculum_order(None, "random", seed=4, n=50)
    assert sorted(r.tolist()) == list(range(50))
    assert np.array_equal(r, curriculum_order(np.random.default_rng(0).random(50), "random", seed=4))  # scores unused


def test_step_batches_draw_from_the_paced_prefix():
    order = np.arange(1000)[::-1].copy()  # easiest first = id 999
    ids = step_batches(order, range(0, 10), [20] * 10, 100, seed=0, kind="linear", start=0.1, full_at=0.5)
    for t in range(10):
        batch = ids[20 * t:20 * (t + 1)]
        avail = math.ceil(pacing("linear", t, 100, start=0.1, full_at=0.5) * 1000)
        assert len(set(batch.tolist())) == 20 and set(batch.tolist()) <= set(order[:avail].tolist())
    again = step_batches(order, range(0, 10), [20] * 10, 100, seed=0, kind="linear", start=0.1, full_at=0.5)
    assert torch.equal(ids, again)


def test_curriculum_in_the_trainer_feeds_easy_examples_first(tiny_data, tmp_path):
    n = len(tiny_data.train)
    order = np.random.default_rng(0).permutation(n)
    rec = batch_ids()
    recipe = {**RECIPE, "epochs": 4}
    _, state = fit(tiny_data, tmp_path, [Curriculum(order, start=0.2, full_at=0.5), rec], recipe=recipe)
    assert state.step == 4 * 8 and [len(ids) for _, ids in rec.seen[:8]] == [32] * 7 + [16]
    for step, ids in rec.seen:
        avail = max(32, math.ceil(pacing("linear", step, 32, start=0.2, full_at=0.5) * n))
        assert set(ids.tolist()) <= set(order[:avail].tolist())
    assert len(set(torch.cat([ids for _, ids in rec.seen]).tolist())) > 0.9 * n  # all data in later on


# ----------------------------------------------------------------------------- re-weighting
def test_rank_weights_have_mean_one_and_follow_difficulty():
    d = np.random.default_rng(1).normal(size=101)
    w = rank_weights(d, 0.5)
    assert w.mean() == pytest.approx(1.0) and w.min() > 0.5 - 1e-9 and w.max() < 1.5 + 1e-9
    assert (np.diff(w[np.argsort(d)]) > 0).all()
    assert (np.diff(rank_weights(d, -0.5)[np.argsort(d)]) < 0).all()
    assert np.allclose(rank_weights(np.ones(7), 0.9), 1.0)  # ties share the middle rank
    with pytest.raises(ValueError, match="strength"):
        rank_weights(d, 1.5)


def test_weighted_cross_entropy_written_out():
    torch.manual_seed(0)
    s, y, w = torch.randn(6, 4), torch.randint(0, 4, (6,)), torch.rand(6) + 0.5
    want = sum(w[i] * -F.log_softmax(s[i], 0)[y[i]] for i in range(6)) / 6
    torch.testing.assert_close(weighted_cross_entropy(s, y, w), want)


def test_reweight_replaces_the_trainers_loss(tiny_data, tmp_path):
    weights = np.linspace(0.5, 1.5, len(tiny_data.train))

    def check(state):
        x, y, idx = state.batch
        w = torch.as_tensor(weights, dtype=torch.float32)[idx]
        want = (F.cross_entropy(state.outputs, y, reduction="none") * w).mean()
        torch.testing.assert_close(state.loss, want)
        return state.loss.detach()

    rec = Record(Event.LOSS, what=check)
    _, state = fit(tiny_data, tmp_path, [Reweight(weights), rec])
    assert len(rec.seen) == state.step == 16


# ----------------------------------------------------------------------------- example statistics
def test_example_stats_record_every_example_each_epoch(tiny_data, tmp_path):
    trainer, state = fit(tiny_data, tmp_path, [])
    st = trainer.example_stats
    assert st["correct"].shape == (2, len(tiny_data.train)) and (st["correct"] >= 0).all()
    assert torch.isfinite(st["loss"].float()).all()
    # the epoch's accuracy is the mean of the recorded per-example correctness
    assert state.metrics[-1]["train_acc"] == pytest.approx(st["correct"][1].float().mean().item())
