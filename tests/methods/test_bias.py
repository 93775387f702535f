"""The bias method (reuse.methods.bias) and distillation without a class (kd ``omit_classes``):
Hinton et al. (2015)'s omitted-3 experiment. The search against brute force on small tables; then,
in process, a teacher, a student that never sees class 3, and its shifted copy, whose shift is
chosen on the validation split (replacing the test labels leaves it unchanged)."""

from __future__ import annotations

import copy
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from reuse.config import validate_config
from reuse.io import read_json
from reuse.methods.bias.search import accuracy_with_shift, grid_values, search_shift, shift_vector
from reuse.methods.registry import get, resolve
from reuse.plan import cache_files, checkpoint_epochs, run_path
from reuse.train import load_checkpoint
from reuse.workflow import Job, logit_cache
from tests.helpers import method_job, train_baseline


# ----------------------------------------------------------------------------- the search
def brute(logits, labels, classes, grid, per_class):
    """Every candidate, scored; the best by accuracy, then least total |shift|, then smallest shift."""
    c = logits.shape[1]
    combos = list(itertools.product(grid, repeat=len(classes))) if per_class else [(d,) * len(classes) for d in grid]
    best, best_key = None, None
    for t in combos:
        acc = float(np.mean(np.argmax(logits + shift_vector(c, classes, list(t)), 1) == labels))
        key = (acc, -sum(abs(x) for x in t), [-x for x in t])
        if best_key is None or key > best_key:
            best, best_key = t, key
    return list(best), best_key[0]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("per_class", [False, True])
def test_search_is_the_brute_force_optimum(seed, per_class):
    rng = np.random.default_rng(seed)
    n, c = 40, 4
    logits = rng.normal(size=(n, c)).round(2)
    labels = rng.integers(0, c, n)
    labels[:8] = 2  # a class the logits under-predict
    logits[:8, 2] -= 1.5
    classes = [2] if not per_class else [1, 2]
    grid = grid_values(-3, 3, 0.5)
    got = search_shift(logits, labels, classes, grid, mode="per_class" if per_class else "shared")
    want, acc = brute(logits, labels, classes, grid, per_class)
    assert got["values"] == want and got["acc"] == pytest.approx(acc)
    assert got["acc"] >= got["acc_before"] == accuracy_with_shift(logits, labels, np.zeros(c))
    np.testing.assert_allclose(got["shift"], shift_vector(c, classes, want))


def test_ties_keep_the_smallest_change_and_the_grid_holds_zero():
    logits = np.array([[2.0, 0.0], [0.0, 2.0]])
    got = search_shift(logits, np.array([0, 1]), [1], grid_values(-1, 1, 0.25))
    assert got["values"] == [0.0] and got["acc"] == 1.0  # every shift in (-2, 2) is as good: none is made
    assert 0.0 in grid_values(-0.3, 1, 0.25).tolist()
    np.testing.assert_allclose(grid_values(-1, 1, 0.5), [-1, -0.5, 0, 0.5, 1])
    with pytest.raises(ValueError, match="combinations"):
        search_shift(np.zeros((2, 5)), np.zeros(2, int), [0, 1, 2, 3, 4], grid_values(-10, 10, 0.1), "per_class")
    with pytest.raises(ValueError, match="each must be one class"):
        search_shift(np.zeros((2, 3)), np.zeros(2, int), [3], grid_values(-1, 1, 1))


# ----------------------------------------------------------------------------- the omitted class, end to end
DATASET = {"kind": "mnist1d", "holdout": 60, "mnist1d": {"num_samples": 600, "seed": 3}}
CONFIG = {
    "datasets": {"d": DATASET},
    "models": {"m": {"arch": "mlp", "args": {"hidden": [32]}}},
    "train": {"epochs": 4, "batch_size": 64, "checkpoint_epochs": [], "optimizer": {"lr": 0.05}},
    "baseline": {"seeds": [0]},
    "cache": {"views": 0, "topk": 0},
    "kd": {"seeds": [0], "variants": {"omit3": {"model": "m", "teacher": {"model": "m"}, "omit_classes": [3]}}},
    "bias": {"seeds": [0], "variants": {"shift3": {"model": "m", "from": {"model": "m", "method": "kd",
                                                                            "variant": "omit3"},
                                                    "classes": [3], "grid": {"low": -2, "high": 8, "step": 0.25}}}},
}


@pytest.fixture(scope="module")
def omitted(tmp_path_factory):
    """A teacher (baseline), a student distilled on every class but 3, and the student shifted."""
    from reuse.data import prepare

    cfg = validate_config(copy.deepcopy(CONFIG))
    res = tmp_path_factory.mktemp("bias")
    data_dir = res / "d" / "data"
    prepare("d", DATASET, data_dir / "data.npz", data_dir / "dataset.json")
    run = train_baseline(cfg, data_dir, res / run_path("d", "m", seed=0), "m")
    epochs = checkpoint_epochs(cfg, "m")
    logit_cache(data_dir=str(data_dir), checkpoints=[str(run / "ckpt" / f"e{epochs[-1]}.pt")],
                out_dirs=[str(Path(cache_files(cfg, str(run / "logits" / f"e{epochs[-1]}"))[0]).parent)],
                cache_cfg=cfg["cache"], device="cpu")
    for method, variant in (("kd", "omit3"), ("bias", "shift3")):
        resolve(get(method, cfg).stage)(Job(**method_job(cfg, method, "d", variant, 0, res, data_dir)))
    return cfg, res


def test_the_student_never_sees_the_omitted_class(omitted, tmp_path, monkeypatch):
    """The ids of every epoch hold no 3 and every other example, and the trainer saw exactly those."""
    cfg, res = omitted
    import reuse.methods.kd.stage as kd_stage
    from reuse.data import load

    seen: list[np.ndarray] = []

    class Recording(kd_stage.Prune):
        def epoch_ids(self, state):
            ids = super().epoch_ids(state)
            seen.append(ids.numpy().copy())
            return ids

    monkeypatch.setattr(kd_stage, "Prune", Recording)
    job = Job(**method_job(cfg, "kd", "d", "omit3", 0, res, res / "d" / "data", out=tmp_path))
    kd_stage.train(job)
    y = load(res / "d" / "data").train.y.numpy()
    others = set(np.flatnonzero(y != 3).tolist())
    assert len(seen) == cfg["train"]["epochs"] and (y == 3).any()
    for ids in seen:
        assert sorted(ids.tolist()) == sorted(others)  # every other example once per epoch, no 3
    run = read_json(tmp_path / get("kd", cfg).run_dir(cfg, "d", "omit3", 0) / "run.json")
    assert run["cost"]["examples_seen"] == cfg["train"]["epochs"] * len(others)
    assert run["final"]["test_acc"] == read_json(res / get("kd", cfg).run_dir(cfg, "d", "omit3", 0) /
                                                 "run.json")["final"]["test_acc"]  # and it is deterministic


def test_the_shift_is_the_searched_one_and_written_as_a_run(omitted):
    cfg, res = omitted
    kd_dir = res / get("kd", cfg).run_dir(cfg, "d", "omit3", 0)
    b_dir = res / get("bias", cfg).run_dir(cfg, "d", "shift3", 0)
    run = read_json(b_dir / "run.json")
    rec = run["bias"]
    assert rec["classes"] == [3] and rec["mode"] == "shared" and rec["acc"] >= rec["acc_before"]
    old = load_checkpoint(kd_dir / "ckpt" / get("kd", cfg).final_checkpoint(cfg, "omit3")[1])["model"]
    new = load_checkpoint(b_dir / "ckpt" / "last.pt")["model"]
    head = rec["head"]
    for k in old:  # only the classifier's bias changed, by exactly the recorded shift
        want = old[k] + torch.as_tensor(rec["shift"], dtype=old[k].dtype) if k == f"{head}.bias" else old[k]
        torch.testing.assert_close(new[k], want, rtol=0, atol=0)
    # the shift moves test predictions only towards or away from class 3, as the logits say
    before, after = np.load(kd_dir / "predictions.npz"), np.load(b_dir / "predictions.npz")
    np.testing.assert_allclose(after["logits"], before["logits"] + np.array(rec["shift"], np.float32), atol=1e-5)
    assert run["final"]["test_acc"] == pytest.approx(float((after["logits"].argmax(1) == after["target"]).mean()))
    assert run["recipe"]["epochs"] == 0
    assert [r["path"] for r in run["reused"] if r["kind"] == "past_run"][0] == str(kd_dir)
    assert run["cost"]["train_flops"] == 0 and run["cost"]["eval_flops"] > 0


def test_the_shift_is_chosen_on_validation_never_on_test(omitted, tmp_path):
    """The bias run made again on a copy of the data whose test labels are replaced: the same shift
    and the same validation accuracies (the test accuracy it reports moves; the choice does not).
    With the validation labels replaced instead, the search finds another shift."""
    from reuse.methods.bias.stage import train
    from tests.methods.choices import assert_choice_ignores_test, fresh_dir, with_split_labels

    cfg, res = omitted

    def choose(data_dir: Path) -> dict:
        out = fresh_dir(tmp_path, "bias")
        train(Job(**method_job(cfg, "bias", "d", "shift3", 0, res, data_dir, out=out)))
        rec = read_json(out / get("bias", cfg).run_dir(cfg, "d", "shift3", 0) / "run.json")["bias"]
        return {k: rec[k] for k in ("shift", "values", "acc", "acc_before", "curve")}

    def labels(split):
        return lambda d, rng: with_split_labels(d, fresh_dir(tmp_path, "data"), rng, split, how="relabel")

    rec = read_json(res / get("bias", cfg).run_dir(cfg, "d", "shift3", 0) / "run.json")["bias"]
    reference = {k: rec[k] for k in ("shift", "values", "acc", "acc_before", "curve")}
    assert_choice_ignores_test(choose, res / "d" / "data", labels("test"), perturb_val=labels("val"),
                               reference=reference)


def test_a_past_run_that_is_no_plain_model_cannot_be_shifted_or_warm_started():
    """An interleaved run's checkpoint holds an encoder and task heads: neither method may name it."""
    cfg = copy.deepcopy(CONFIG)
    cfg["interleave"] = {"tasks": {"a": [0, 1, 2, 3, 4], "b": [5, 6, 7, 8, 9]}, "steps": 10,
                         "variants": {"r2": {"model": "m", "rounds": 2}}}
    cfg["bias"]["variants"]["shift3"]["from"] = {"model": "m", "method": "interleave", "variant": "r2"}
    cfg["warm"] = {"variants": {"w": {"model": "m", "from": {"model": "m", "method": "interleave", "variant": "r2"}}}}
    from reuse.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        validate_config(cfg)
    assert "bias.variants.shift3.from.method: no method to start from named 'interleave'" in str(e.value)
    assert "warm.variants.w.from.method: no method to start from named 'interleave'" in str(e.value)
