"""Distillation from past runs: the functional core, the teachers, and the method in the trainer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reuse.cache import LogitCache, views_for, write_logit_cache
from reuse.errors import ReuseError
from reuse.methods.kd import (CachedTeacher, CheckpointMixupTeacher, Distill, OnlineTeacher, beta_draws,
                              ensemble_probs, mix, mixup_permutation, pick_teacher)
from reuse.models import build_model
from reuse.train import Event, Trainer, seed_everything
from tests.helpers import Kill, Record, recipe

T = 4.0


def hinton_loss(s, t_probs, y, temperature, alpha):
    """The KD loss of Hinton et al. (2015), written out: alpha*T^2*KL(p_t || softmax(s/T)) + (1-alpha)*CE."""
    log_ps = F.log_softmax(s / temperature, dim=1)
    kl = (t_probs * (t_probs.clamp_min(1e-30).log() - log_ps)).sum(1).mean()
    return alpha * temperature**2 * kl + (1 - alpha) * F.cross_entropy(s, y)


# ----------------------------------------------------------------------------- functional
def test_ensemble_averages_probabilities_not_logits():
    a, b = torch.tensor([[4.0, 0.0]]), torch.tensor([[0.0, 2.0]])
    p = ensemble_probs([a, b], 1.0)
    torch.testing.assert_close(p, (a.softmax(1) + b.softmax(1)) / 2)
    assert not torch.allclose(p, ((a + b) / 2).softmax(1))


def test_random_teacher_is_a_function_of_seed_and_step():
    picks = [pick_teacher(4, 3, s) for s in range(400)]
    assert picks == [pick_teacher(4, 3, s) for s in range(400)]
    assert set(picks) == {0, 1, 2, 3} and max(np.bincount(picks)) < 140
    assert picks != [pick_teacher(4, 4, s) for s in range(400)]


def test_beta_draws_and_permutations_are_reproducible():
    torch.manual_seed(0)
    state = torch.get_rng_state()
    lam = beta_draws(0.4, 1000, 1, 7)
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is untouched
    assert torch.equal(lam, beta_draws(0.4, 1000, 1, 7)) and not torch.equal(lam, beta_draws(0.4, 1000, 1, 8))
    assert 0.45 < lam.mean() < 0.55 and ((lam < 0.1) | (lam > 0.9)).float().mean() > 0.4  # Beta(0.4,0.4) is U-shaped
    assert sorted(mixup_permutation(9, 1, 2).tolist()) == list(range(9))


def test_mix_per_example_and_scalar():
    a, b = torch.ones(3, 2), torch.zeros(3, 2)
    torch.testing.assert_close(mix(a, b, torch.tensor([0.0, 0.5, 1.0])), torch.tensor([[0.0, 0], [0.5, 0.5], [1, 1]]))
    torch.testing.assert_close(mix(a, b, torch.tensor(0.25)), torch.full((3, 2), 0.25))


# ----------------------------------------------------------------------------- teachers from caches
@pytest.fixture(scope="module")
def caches(tmp_path_factory, tiny_data):
    """Three past 'runs' (differently initialised CNNs), each cached at two epochs, 2 augmented views."""
    out = []
    for run in range(3):
        torch.manual_seed(run)
        model = build_model("cnn1d", tiny_data.input_shape, 10, channels=8).eval()
        for epoch in (1, 2):
            d = tmp_path_factory.mktemp(f"run{run}_e{epoch}")
            write_logit_cache(d, model, tiny_data.train, views=views_for({"translate": 2}, 2, seed=0),
                              fingerprint=tiny_data.train.fingerprint, source={"epoch": epoch})
            out.append(LogitCache.open(d))
    return out  # [run0 e1, run0 e2, run1 e1, run1 e2, run2 e1, run2 e2]


def test_single_teacher_serves_the_epochs_view(caches):
    t = CachedTeacher([caches[1]], temperature=T)
    assert t.augment == {"translate": 2, "flip": False}
    assert [t.augment_key(e) for e in range(4)] == [(0, 0), (0, 1), (0, 0), (0, 1)]
    idx = torch.tensor([3, 0, 7])
    kind, payload = t(idx, None, epoch=1, step=0)
    assert kind == "logits" and payload.dtype == torch.float16
    torch.testing.assert_close(payload.float(), caches[1].logits(idx, 2))  # view 1 is cache row 2
    assert CachedTeacher([caches[1]], views=0).augment_key(5) is None
    with pytest.raises(ReuseError, match="caches hold 2"):
        CachedTeacher([caches[1]], views=3)


def test_ensemble_and_random_teachers(caches):
    idx = torch.arange(5)
    ens = CachedTeacher(caches[1::2], mode="ensemble", temperature=T)
    kind, p = ens(idx, None, epoch=0, step=0)
    expect = torch.stack([torch.softmax(c.logits(idx, 1) / T, 1) for c in caches[1::2]]).mean(0)
    assert kind == "probs"
    torch.testing.assert_close(p, expect)
    rnd = CachedTeacher(caches[1::2], mode="random", temperature=T, seed=5)
    for step in range(6):
        _, t = rnd(idx, None, epoch=0, step=step)
        torch.testing.assert_close(t.float(), caches[1::2][pick_teacher(3, 5, step)].logits(idx, 1))


def test_topk_cache_serves_the_sparse_form(tmp_path, tiny_data, caches):
    model = build_model("cnn1d", tiny_data.input_shape, 10, channels=8).eval()
    write_logit_cache(tmp_path, model, tiny_data.train, views=[{"kind": "clean"}], dense=False, topk=3,
                      fingerprint=tiny_data.train.fingerprint, source={})
    kind, (v, i, lse) = CachedTeacher([LogitCache.open(tmp_path)])(torch.arange(4), None, 0, 0)
    assert kind == "topk" and v.shape == i.shape == (4, 3) and lse.shape == (4,)


def test_checkpoint_mixup_mixes_two_checkpoints_per_example(caches):
    t = CheckpointMixupTeacher(caches[0], caches[1], beta=0.4, temperature=T, seed=2)
    idx = torch.arange(6)
    kind, p = t(idx, None, epoch=0, step=3)
    lam = beta_draws(0.4, 6, 2, 3)[:, None]
    pa, pb = (torch.softmax(c.logits(idx, 1) / T, 1) for c in caches[:2])
    assert kind == "probs"
    torch.testing.assert_close(p, lam * pa + (1 - lam) * pb)
    torch.testing.assert_close(p.sum(1), torch.ones(6))


def test_mismatched_views_are_refused(tmp_path, tiny_data, caches):
    model = build_model("cnn1d", tiny_data.input_shape, 10, channels=8).eval()
    write_logit_cache(tmp_path, model, tiny_data.train, views=views_for({"translate": 2}, 2, seed=1),
                      fingerprint=tiny_data.train.fingerprint, source={})
    with pytest.raises(ReuseError, match="cache.seed"):
        CachedTeacher([caches[1], LogitCache.open(tmp_path)], mode="ensemble")


# ----------------------------------------------------------------------------- in the trainer
RECIPE = recipe(augment={"translate": 2})


def train(tiny_data, tmp_path, algorithm, recipe=RECIPE):
    """The loss the trainer backpropagated at each step, and the batch it was computed on:
    (step, epoch, x, idx, outputs, loss)."""
    seed_everything(0)
    model = build_model("mlp", tiny_data.input_shape, 10, hidden=[16])
    spy = Record(Event.AFTER_BACKWARD, what=lambda s: (s.step, s.epoch, s.batch[0].clone(), s.batch[2].clone(),
                                                       s.outputs.detach().clone(), s.loss.item()))
    Trainer(model, tiny_data, recipe, seed=0, state_dir=tmp_path, algorithms=[algorithm, spy], progress="off",
            model_spec={"arch": "mlp"}).fit()
    return spy.seen


def test_distill_loss_is_hintons_on_the_cached_view(tiny_data, tmp_path, caches):
    teacher = CachedTeacher([caches[1]], temperature=T)
    seen = train(tiny_data, tmp_path, Distill(teacher, temperature=T, alpha=0.7))
    for step, epoch, x, idx, s, loss in seen[::5]:
        t = caches[1].logits(idx, 1 + epoch % 2)
        expect = hinton_loss(s, torch.softmax(t / T, 1), tiny_data.train.y[idx], T, 0.7)
        assert loss == pytest.approx(expect.item(), rel=2e-3)
        # the student's input is exactly the cached view the teacher's logits were computed on
        x_view = tiny_data.train.get(idx, teacher_aug(teacher), 0, epoch % 2)[0]
        assert torch.equal(x, x_view)


def teacher_aug(teacher):
    from reuse.data import Augment

    return Augment.from_spec(teacher.augment)


def test_until_switches_to_cross_entropy(tiny_data, tmp_path, caches):
    seen = train(tiny_data, tmp_path, Distill(CachedTeacher([caches[1]], temperature=T), temperature=T, alpha=1.0,
                                              until=0.5))
    total = len(seen)
    for step, epoch, x, idx, s, loss in seen:
        ce = F.cross_entropy(s, tiny_data.train.y[idx]).item()
        if step < total / 2:
            assert loss != pytest.approx(ce, rel=1e-4)
        else:
            assert loss == pytest.approx(ce, rel=1e-5)


def test_input_mixup_mixes_inputs_targets_and_labels(tiny_data, tmp_path, caches):
    teacher = CachedTeacher([caches[1]], temperature=T, views=0)
    seen = train(tiny_data, tmp_path, Distill(teacher, temperature=T, alpha=0.5, input_mixup=0.4, seed=3),
                 {**RECIPE, "augment": None})
    step, epoch, x, idx, s, loss = seen[2]
    lam = beta_draws(0.4, 1, 3, step)[0]
    perm = mixup_permutation(len(idx), 3, step)
    clean = tiny_data.train.get(idx)[0]
    torch.testing.assert_close(x, lam * clean + (1 - lam) * clean[perm])
    p = lam * teacher.probs(idx, 0) + (1 - lam) * teacher.probs(idx[perm], 0)
    y = tiny_data.train.y[idx]
    expect = 0.5 * hinton_loss(s, p, y, T, 1.0) + 0.5 * (lam * F.cross_entropy(s, y) + (1 - lam) * F.cross_entropy(s, y[perm]))
    assert loss == pytest.approx(expect.item(), rel=2e-3)


def test_online_teacher_runs_the_model_on_the_batch(tiny_data, tmp_path):
    torch.manual_seed(9)
    tmodel = build_model("cnn1d", tiny_data.input_shape, 10, channels=8)
    seen = train(tiny_data, tmp_path, Distill(OnlineTeacher(tmodel), temperature=T, alpha=0.9))
    step, epoch, x, idx, s, loss = seen[3]
    with torch.no_grad():
        t = tmodel(x)
    assert loss == pytest.approx(hinton_loss(s, torch.softmax(t / T, 1), tiny_data.train.y[idx], T, 0.9).item(), rel=2e-3)
    assert not any(p.requires_grad for p in tmodel.parameters())


def test_distillation_pulls_the_student_towards_its_teacher(tiny_data, tmp_path, caches):
    """Trained on the cache, a student ends much closer to the teacher (KL at temperature T on the
    training set) than the same student trained on hard labels: the loss reaches the optimizer."""
    teacher = CachedTeacher([caches[1]], temperature=T, views=0)
    p_t = teacher.probs(torch.arange(len(tiny_data.train)), 0)
    kl = {}
    for name, algos in (("ce", []), ("kd", [Distill(teacher, temperature=T, alpha=1.0)])):
        seed_everything(1)
        m = build_model("mlp", tiny_data.input_shape, 10, hidden=[32])
        Trainer(m, tiny_data, {**RECIPE, "epochs": 10, "augment": None}, seed=1, state_dir=tmp_path / name,
                algorithms=algos, progress="off", model_spec={}).fit()
        with torch.no_grad():
            log_ps = F.log_softmax(m.eval()(tiny_data.train.get(torch.arange(len(tiny_data.train)))[0]) / T, 1)
        kl[name] = (p_t * (p_t.log() - log_ps)).sum(1).mean().item()
    assert kl["kd"] < 0.5 * kl["ce"]


def test_resumed_distillation_matches_an_uninterrupted_one(tiny_data, tmp_path, caches):
    """Random teacher per step and input MixUp draw from (seed, step): a run interrupted after epoch 2
    and resumed ends with the same weights as one that was not."""
    recipe = {**RECIPE, "epochs": 3, "augment": None, "checkpoint_every": 1}

    def run(state_dir, at_step):
        seed_everything(0)
        model = build_model("mlp", tiny_data.input_shape, 10, hidden=[16], dropout=0.2)
        kd = Distill(CachedTeacher(caches[1::2], mode="random", temperature=T, seed=4, views=0), temperature=T,
                     alpha=0.8, input_mixup=0.4, seed=4)
        t = Trainer(model, tiny_data, recipe, seed=0, state_dir=state_dir, algorithms=[kd, Kill(step=at_step)],
                    progress="off", model_spec={"arch": "mlp"})
        return t, t.fit

    t, fit = run(tmp_path / "a", 2 * 8 + 5)
    with pytest.raises(KeyboardInterrupt):
        fit()
    t, fit = run(tmp_path / "a", None)
    resumed = fit()
    assert t.resumed_from == 2
    straight = run(tmp_path / "b", None)[1]()
    for (k, a), b in zip(resumed.model.state_dict().items(), straight.model.state_dict().values()):
        assert torch.equal(a, b), k
