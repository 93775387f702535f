"""Adversarial recycling: the attacks' guarantees, the cache, each way of training with adversarial
examples, resume, and the config's checks."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reuse.config import validate_config
from reuse.data.augment import keyed_seed
from reuse.errors import ConfigError, CorruptArtifact, FingerprintMismatch, ReuseError
from reuse.methods.adversarial import (AdvCache, AdversarialTraining, AuxBatchNorm, MeanLogits, attack,
                                       batchnorm_layers, fgsm, input_bounds, mix_batch, mix_positions, mixup_batch,
                                       pgd, robust_eval, sample_lambda, write_adv_cache)
from reuse.methods.adversarial.recycle import STREAM_LAMBDA, STREAM_MIX
from reuse.models import build_model
from reuse.train import Event, Trainer, seed_everything
from tests.helpers import Kill, Record, recipe

RECIPE = recipe(checkpoint_epochs=[], checkpoint_every=1)
PGD = {"kind": "pgd", "norm": "linf", "eps": 0.3, "step": None, "steps": 3, "random_start": None}


def _fit(data, tmp_path, algorithms, model=None, recipe=RECIPE, seed=0, name="state"):
    seed_everything(seed)
    model = model if model is not None else build_model("mlp", data.input_shape, data.num_classes, hidden=[16])
    trainer = Trainer(model, data, recipe, seed=seed, state_dir=tmp_path / name, model_spec={"arch": "mlp"},
                      algorithms=algorithms, progress="off")
    return trainer, trainer.fit()


class BNNet(torch.nn.Module):
    """A tiny 1-D conv net with BatchNorm (for the auxiliary-BatchNorm tests)."""

    def __init__(self, c_in=1, length=40, classes=10):
        super().__init__()
        self.conv = torch.nn.Conv1d(c_in, 4, 3, padding=1)
        self.bn = torch.nn.BatchNorm1d(4)
        self.head = torch.nn.Linear(4 * length, classes)

    def forward(self, x):
        return self.head(F.relu(self.bn(self.conv(x))).flatten(1))


def batches():
    """A spy that keeps a copy of each batch as the trainer feeds it to the model: (x, y, idx, step)."""
    return Record(Event.BATCH, what=lambda state: tuple(t.clone() for t in state.batch[:3]) + (state.step,))


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    """An MLP trained on the tiny data for a few epochs (seconds)."""
    _, state = _fit(tiny_data, tmp_path_factory.mktemp("trained"), [], recipe={**RECIPE, "epochs": 8})
    return state.model.eval()


@pytest.fixture(scope="module")
def bounds(tiny_data):
    return input_bounds(tiny_data)


@pytest.fixture(scope="module")
def cache(tiny_data, trained, bounds, tmp_path_factory):
    d = tmp_path_factory.mktemp("adv_cache")
    write_adv_cache(d / "adv.npz", d / "meta.json", trained, tiny_data.train, spec=PGD, bounds=bounds,
                    fingerprint=tiny_data.train.fingerprint, source=[{"run": "past", "epoch": 8}], batch_size=100)
    return AdvCache.open(d, fingerprint=tiny_data.train.fingerprint)


def _within(x, x_adv, eps, norm, bounds, tol=1e-5):
    d = (x_adv - x).flatten(1)
    size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
    lo, hi = bounds
    return bool((size <= eps + tol).all()) and bool((x_adv >= lo - tol).all()) and bool((x_adv <= hi + tol).all())


# ----------------------------------------------------------------------------- attacks
def test_input_bounds_are_the_per_channel_range_of_the_normalised_training_inputs(tiny_data, bounds):
    x = tiny_data.train.get(torch.arange(len(tiny_data.train)))[0]
    lo, hi = bounds
    assert lo.shape == (1, 1) and torch.allclose(lo, x.amin(dim=(0, 2)).view(1, 1), atol=1e-5)
    assert torch.allclose(hi, x.amax(dim=(0, 2)).view(1, 1), atol=1e-5)


def test_image_folder_bounds_are_the_normalised_pixel_range():
    from reuse.data.datasets import ImageFolderData

    split = ImageFolderData("unused", np.array(["a.png"]), np.array([0]), num_classes=2, mean=[0.5, 0.4, 0.3],
                            std=[0.2, 0.2, 0.25], fingerprint={})
    lo, hi = input_bounds(split)
    assert lo.shape == (3, 1, 1) and torch.allclose(lo.flatten(), torch.tensor([-2.5, -2.0, -1.2]))
    assert torch.allclose(hi.flatten(), torch.tensor([2.5, 3.0, 2.8]))


@pytest.mark.parametrize("norm, eps", [("linf", 0.3), ("l2", 1.5)])
@pytest.mark.parametrize("which", ["random", "trained"])
@pytest.mark.parametrize("kind", ["fgsm", "pgd"])
def test_attacks_never_leave_the_eps_ball_or_the_input_range(tiny_data, trained, bounds, norm, eps, which, kind):
    torch.manual_seed(1)
    model = trained if which == "trained" else build_model("mlp", tiny_data.input_shape, 10, hidden=[16])
    x, y, _ = tiny_data.train.get(torch.arange(64))
    for step, steps in ((eps / 2, 10), (3 * eps, 4)):  # small steps, and steps that overshoot the ball
        g = torch.Generator().manual_seed(0)
        spec = {"kind": kind, "norm": norm, "eps": eps, "step": step, "steps": steps, "random_start": True}
        x_adv = attack(model, x, y, spec, bounds, g)
        assert _within(x, x_adv, eps, norm, bounds)
        assert not torch.equal(x_adv, x)


def test_inputs_outside_the_bounds_stay_within_eps_of_themselves(trained, bounds):
    lo, hi = bounds
    x = torch.linspace(float(lo) - 1, float(hi) + 1, 40).view(1, 1, 40).repeat(8, 1, 1)
    x_adv = pgd(trained, x, torch.arange(8), eps=0.2, step=0.1, steps=5, bounds=bounds,
                generator=torch.Generator().manual_seed(0))
    assert (x_adv - x).abs().max() <= 0.2 + 1e-6
    inside = (x >= lo) & (x <= hi)
    assert ((x_adv[inside] >= lo - 1e-6) & (x_adv[inside] <= hi + 1e-6)).all()


def test_attacks_increase_the_loss_of_a_trained_model(tiny_data, trained, bounds):
    x, y, _ = tiny_data.train.get(torch.arange(len(tiny_data.train)))
    with torch.no_grad():
        clean = F.cross_entropy(trained(x), y).item()
    losses = {}
    for kind, spec in (("fgsm", {"kind": "fgsm", "eps": 0.3}), ("pgd", {**PGD, "steps": 10})):
        x_adv = attack(trained, x, y, spec, bounds, torch.Generator().manual_seed(0))
        with torch.no_grad():
            losses[kind] = F.cross_entropy(trained(x_adv), y).item()
    assert losses["fgsm"] > clean * 1.5 and losses["pgd"] >= losses["fgsm"]
    res = robust_eval(trained, tiny_data.test, {**PGD, "steps": 10}, bounds, batch_size=25)
    assert res["n"] == 60 and res["robust_acc"] < res["clean_acc"] and res["cost"]["flops"] > 0


def test_attacks_are_seeded_restore_the_mode_and_leave_parameter_gradients_alone(tiny_data):
    model = build_model("mlp", tiny_data.input_shape, 10, hidden=[16], dropout=0.5).train()
    x, y, _ = tiny_data.train.get(torch.arange(16))
    a = pgd(model, x, y, eps=0.3, step=0.1, steps=3, generator=torch.Generator().manual_seed(5))
    b = pgd(model, x, y, eps=0.3, step=0.1, steps=3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)  # eval mode: no dropout draws; the random start from the generator
    assert model.training and all(p.grad is None for p in model.parameters())
    ens = MeanLogits([model, copy.deepcopy(model)])
    assert torch.allclose(ens.eval()(x), model.eval()(x))
    with pytest.raises(ValueError, match="unknown attack norm"):
        fgsm(model, x, y, eps=0.1, norm="l1")


# ----------------------------------------------------------------------------- the cache
def test_cache_round_trip_holds_float16_perturbations_within_eps_after_rounding(tiny_data, cache, bounds):
    assert cache.delta.dtype == np.float16 and cache.delta.shape == (240, 1, 40)
    assert cache.meta["attack"]["eps"] == 0.3 and cache.meta["cost"]["flops"] > 0 and cache.meta["cost"]["time_s"] > 0
    assert cache.meta["source_adv_acc"] < cache.meta["source_clean_acc"]
    # float16(0.3) = 0.30005 > 0.3: the stored perturbation leaves the ball, the one used does not.
    assert np.abs(cache.delta.astype(np.float32)).max() > 0.3
    idx = torch.arange(0, 240, 7)
    x = tiny_data.train.get(idx)[0]
    x_adv = cache.adversarial(x, idx)
    assert _within(x, x_adv, 0.3, "linf", bounds, tol=1e-6)  # float32 rounding only, not 5e-5
    assert torch.allclose(x_adv - x, torch.from_numpy(cache.delta[idx.numpy()].astype(np.float32)), atol=1e-3)


def test_cache_refuses_other_data_and_damaged_files(tiny_data, cache, tmp_path):
    other = dict(tiny_data.train.fingerprint, n=999, digest="0000000000000000")
    with pytest.raises(FingerprintMismatch, match="adversarial cache .* was made for other data"):
        AdvCache.open(cache.path, fingerprint=other)
    with pytest.raises(ReuseError, match="no adversarial cache .* build it with snakemake"):
        AdvCache.open(tmp_path)
    (tmp_path / "meta.json").write_text((cache.path / "meta.json").read_text())
    (tmp_path / "adv.npz").write_bytes(b"not an npz")
    with pytest.raises(CorruptArtifact, match="delete .* and re-run snakemake"):
        AdvCache.open(tmp_path)


# ----------------------------------------------------------------------------- batch transformations
@pytest.mark.parametrize("b, ratio", [(32, 0.5), (31, 0.5), (10, 0.25), (7, 1.0), (5, 0.0)])
def test_mix_replaces_exactly_the_ratio_of_each_batch(b, ratio):
    mask = mix_positions(b, ratio, torch.Generator().manual_seed(0))
    assert int(mask.sum()) == round(ratio * b)
    x, x_adv = torch.zeros(b, 3), torch.ones(b, 3)
    out = mix_batch(x, x_adv, mask)
    assert (out[mask] == 1).all() and (out[~mask] == 0).all()
    assert torch.equal(mix_batch(x, x_adv[mask], mask), out)  # one adversarial row per replaced position


def test_mixup_is_a_convex_combination_with_beta_lambda():
    x, x_adv = torch.randn(6, 4), torch.randn(6, 4)
    lams = [sample_lambda(0.4, s) for s in range(200)]
    assert all(0 <= v <= 1 for v in lams) and sample_lambda(0.4, 3) == lams[3]
    assert np.mean(lams) == pytest.approx(0.5, abs=0.07)
    out = mixup_batch(x, x_adv, 0.3)
    assert torch.allclose(out, 0.3 * x + 0.7 * x_adv)


def test_recycled_mix_in_the_trainer_uses_the_cached_examples_of_the_same_ids(tiny_data, cache, tmp_path):
    before, after = batches(), batches()
    algo = AdversarialTraining(use="mix", ratio=0.5, cache=cache, train=tiny_data.train, seed=3)
    _fit(tiny_data, tmp_path, [before, algo, after])
    for (x0, y0, i0, step), (x1, y1, i1, _) in zip(before.seen, after.seen):
        assert torch.equal(y0, y1) and torch.equal(i0, i1) and x0.shape == x1.shape
        mask = mix_positions(len(i0), 0.5, torch.Generator().manual_seed(keyed_seed(3, step, STREAM_MIX)))
        assert torch.equal(x1[~mask], x0[~mask])
        clean = tiny_data.train.get(i0[mask])[0]
        assert torch.equal(x1[mask], cache.adversarial(clean, i0[mask]))


def test_recycled_mixup_mixes_each_input_with_its_own_adversarial_version(tiny_data, cache, tmp_path):
    before, after = batches(), batches()
    algo = AdversarialTraining(use="mixup", alpha=0.4, cache=cache, train=tiny_data.train, seed=3)
    _fit(tiny_data, tmp_path, [before, algo, after], recipe={**RECIPE, "epochs": 1})
    for (x0, _, i0, step), (x1, _, i1, _) in zip(before.seen, after.seen):
        lam = sample_lambda(0.4, keyed_seed(3, step, STREAM_LAMBDA))
        adv = cache.adversarial(tiny_data.train.get(i0)[0], i0)
        assert torch.allclose(x1, lam * x0 + (1 - lam) * adv, atol=1e-6)


def test_auxiliary_batchnorm_routes_the_adversarial_rows():
    torch.manual_seed(0)
    model = BNNet()
    fresh_main = copy.deepcopy(model.bn)
    aux = AuxBatchNorm(model)
    aux.attach()
    x = torch.randn(8, 4, 40)
    mask = torch.tensor([True, False] * 4)
    aux.mask = mask
    out = model.bn(x)
    ref_main, ref_aux = copy.deepcopy(fresh_main), copy.deepcopy(fresh_main)
    assert torch.allclose(out[~mask], ref_main(x[~mask]), atol=1e-6)
    assert torch.allclose(out[mask], ref_aux(x[mask]), atol=1e-6)
    assert torch.allclose(model.bn.running_mean, ref_main.running_mean)  # main statistics: clean rows only
    assert torch.allclose(aux.aux["bn"].running_mean, ref_aux.running_mean)
    aux.detach()
    assert "forward" not in model.bn.__dict__ and set(model.state_dict()) == set(BNNet().state_dict())
    with pytest.raises(ReuseError, match="advprop needs a model with BatchNorm.*use `use: mix`"):
        AuxBatchNorm(build_model("mlp", (1, 40), 10, hidden=[8]))


def test_advprop_run_saves_a_plain_model_and_resumes_exactly(tiny_data, cache, tmp_path):
    recipe = {**RECIPE, "epochs": 3}

    def run(state_dir, at_step):
        seed_everything(0)
        algo = AdversarialTraining(use="advprop", ratio=0.5, cache=cache, train=tiny_data.train, seed=1)
        t = Trainer(BNNet(), tiny_data, recipe, seed=0, state_dir=state_dir, algorithms=[algo, Kill(step=at_step)],
                    progress="off", model_spec={"arch": "bnnet"})
        return t, t.fit

    t, fit = run(tmp_path / "a", 2 * 8 + 3)
    with pytest.raises(KeyboardInterrupt):
        fit()
    t, fit = run(tmp_path / "a", None)
    resumed = fit()
    assert t.resumed_from == 2 and not batchnorm_layers(resumed.model)["bn"].__dict__.get("forward")
    straight = run(tmp_path / "b", None)[1]()
    for (k, a), b in zip(resumed.model.state_dict().items(), straight.model.state_dict().values()):
        assert torch.equal(a, b), k
    saved = torch.load(tmp_path / "a" / "last.pt", weights_only=False)["model"]
    BNNet().load_state_dict(saved)  # a standard model: no auxiliary keys
    with pytest.raises(ReuseError, match="advprop needs a model with BatchNorm"):
        _fit(tiny_data, tmp_path, [AdversarialTraining(use="advprop", cache=cache, train=tiny_data.train)],
             name="nobn")


def test_online_attacks_the_current_model_and_its_cost_is_counted(tiny_data, tmp_path):
    before, after = batches(), batches()
    online = {"kind": "pgd", "norm": "linf", "eps": 0.3, "step": None, "steps": 2, "random_start": True}
    algo = AdversarialTraining(use="mix", ratio=1.0, online=online, bounds=input_bounds(tiny_data), seed=0)
    t_adv, _ = _fit(tiny_data, tmp_path, [before, algo, after], recipe={**RECIPE, "epochs": 1}, name="adv")
    t_plain, _ = _fit(tiny_data, tmp_path, [], recipe={**RECIPE, "epochs": 1}, name="plain")
    for (x0, *_), (x1, *_) in zip(before.seen, after.seen):
        assert 0 < (x1 - x0).abs().max() <= 0.3 + 1e-6
    # two attack steps (forward + input backward each) on every row: well over twice a plain step
    assert t_adv.totals["train_flops"] > 2 * t_plain.totals["train_flops"]


@pytest.mark.parametrize("use", ["mix", "mixup"])
def test_resumed_adversarial_runs_match_uninterrupted_ones(tiny_data, cache, tmp_path, use):
    recipe = {**RECIPE, "epochs": 3}
    online = {"kind": "fgsm", "norm": "linf", "eps": 0.3, "step": None, "random_start": True}

    def run(state_dir, at_step, kind):
        seed_everything(0)
        model = build_model("mlp", tiny_data.input_shape, 10, hidden=[16], dropout=0.2)
        algo = (AdversarialTraining(use=use, cache=cache, train=tiny_data.train, seed=2) if kind == "cache" else
                AdversarialTraining(use=use, online=online, bounds=input_bounds(tiny_data), seed=2))
        t = Trainer(model, tiny_data, recipe, seed=0, state_dir=state_dir, algorithms=[algo, Kill(step=at_step)],
                    progress="off", model_spec={"arch": "mlp"})
        return t, t.fit

    for kind in ("cache", "online"):
        t, fit = run(tmp_path / kind / "a", 2 * 8 + 5, kind)
        with pytest.raises(KeyboardInterrupt):
            fit()
        t, fit = run(tmp_path / kind / "a", None, kind)
        resumed = fit()
        assert t.resumed_from == 2
        straight = run(tmp_path / kind / "b", None, kind)[1]()
        for (k, a), b in zip(resumed.model.state_dict().items(), straight.model.state_dict().values()):
            assert torch.equal(a, b), (kind, k)


def test_hook_rejects_bad_arguments(cache, tiny_data):
    with pytest.raises(ValueError, match="either a cache .* or an online attack"):
        AdversarialTraining(use="mix")
    with pytest.raises(ValueError, match="unknown adversarial use"):
        AdversarialTraining(use="swap", cache=cache, train=tiny_data.train)
    with pytest.raises(ValueError, match="need the training split"):
        AdversarialTraining(use="mix", cache=cache)


# ----------------------------------------------------------------------------- config
def _config(adv):
    return {"datasets": {"d": {"kind": "mnist1d"}}, "models": {"cnn": {"arch": "cnn1d"}, "mlp": {"arch": "mlp"}},
            "baseline": {"seeds": [0, 1]}, "adv": adv}


def test_adversarial_config_defaults_and_valid_blocks():
    cfg = validate_config(_config({"caches": {"p": {"source": {"model": "cnn"}, "attack": {"kind": "pgd", "eps": 0.1}}},
                                   "variants": {"v": {"model": "mlp", "cache": "p"},
                                                "o": {"model": "mlp", "online": {"kind": "fgsm", "eps": 0.1}}}}))
    adv = cfg["adv"]
    assert adv["robust"]["kind"] == "pgd" and adv["caches"]["p"]["attack"]["steps"] == 5
    assert adv["caches"]["p"]["source"] == {"model": "cnn", "runs": 1, "epoch": "last"}
    assert adv["variants"]["v"]["use"] == "mix" and adv["variants"]["v"]["ratio"] == 0.5
    assert adv["variants"]["o"]["online"]["norm"] == "linf"


def test_adversarial_config_problems_name_the_key_and_the_fix():
    bad = {"caches": {"p": {"source": {"model": "cnn", "runs": 3, "epoch": 7}, "attack": {"kind": "pgd", "eps": 0.1}},
                      "q": {"source": {"model": "cnm"}, "attack": {"kind": "fgsm", "eps": 0.1}}},
           "variants": {"a": {"model": "mlp", "cache": "pp"},
                        "b": {"model": "mlp"},
                        "c": {"model": "mlp", "cache": "p", "online": {"kind": "fgsm", "eps": 0.1}},
                        "d": {"model": "mlp", "cache": "p", "ratio": 0}}}
    with pytest.raises(ConfigError) as e:
        validate_config(_config(bad))
    msg = str(e.value)
    assert "adv.caches.p.source.runs: 3 past runs asked for, but baseline.seeds has 2" in msg
    assert "adv.caches.p.source.epoch: 7 is not a checkpoint epoch of 'cnn'" in msg
    assert "adv.caches.q.source.model: no model named 'cnm' (did you mean 'cnn'?)" in msg
    assert "adv.variants.a.cache: no cache in adv.caches named 'pp' (did you mean 'p'?)" in msg
    assert "adv.variants.b: set exactly one of cache" in msg and "adv.variants.c: set exactly one of cache" in msg
    assert "adv.variants.d.ratio: 0 makes no example adversarial" in msg
    with pytest.raises(ConfigError, match=r"adv.variants.v.online.kind: 'bim' is not one of \['fgsm', 'pgd'\]"):
        validate_config(_config({"variants": {"v": {"model": "mlp", "online": {"kind": "bim", "eps": 0.1}}}}))
    with pytest.raises(ConfigError, match=r"adv.variants.v.use: 'advprob' is not one of .* \(did you mean 'advprop'"):
        validate_config(_config({"variants": {"v": {"model": "mlp", "online": {"kind": "pgd", "eps": 0.1},
                                                    "use": "advprob"}}}))
