"""Per-example scores from past runs: the definitions, scoring a run's checkpoints, the averaged
table with its fingerprint, and the rank-agreement study."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from reuse import ops
from reuse.errors import FingerprintMismatch, ReuseError
from reuse.io import read_json
from reuse.models import build_model
from reuse.scores import (SCORES, ScoreTable, checkpoint_scores, difficulty, forgetting_counts, margins,
                          rank_agreement, score_run, spearman, write_score_table)
from reuse.train import Trainer, seed_everything


def test_forgetting_counts_follow_toneva():
    correct = np.array([
        # ex0: learned, forgotten, learned, forgotten -> 2; ex1: never learned -> upto
        # ex2: always right -> 0; ex3: right, unseen, wrong (a transition across the gap) -> 1
        [1, 0, 1, 1],
        [0, 0, 1, -1],
        [1, 0, 1, 0],
        [0, 0, 1, 1],
    ], dtype=np.int8)
    assert forgetting_counts(correct).tolist() == [2, 4, 0, 1]
    assert forgetting_counts(correct, upto=2).tolist() == [1, 2, 0, 0]


def test_margins_and_orientation():
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 5.0]])
    y = torch.tensor([0, 1])
    torch.testing.assert_close(margins(logits, y), torch.tensor([2.0, -3.0]))
    assert difficulty(np.array([2.0, -3.0]), "margin").tolist() == [-2.0, 3.0]  # low margin = hard
    assert difficulty(np.array([0.1, 0.5]), "el2n").tolist() == [0.1, 0.5]
    assert set(SCORES) == {"grand", "el2n", "loss", "margin", "forgetting"}


def test_spearman_matches_pandas():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=200), rng.normal(size=200)
    b = a + b
    a[:20] = a[0]  # ties
    assert spearman(a, b) == pytest.approx(pd.Series(a).corr(pd.Series(b), method="spearman"))
    assert spearman(a, a) == pytest.approx(1.0) and spearman(a, -a) == pytest.approx(-1.0)


def test_checkpoint_scores_against_their_definitions(tiny_data):
    torch.manual_seed(0)
    model = build_model("cnn1d", tiny_data.input_shape, tiny_data.num_classes, channels=8).eval()
    got, cost = checkpoint_scores(model, tiny_data.train, ["grand", "el2n", "loss", "margin"], batch_size=37,
                                  device=torch.device("cpu"))
    assert cost["time_s"] > 0 and cost["flops"] > 0
    x, y, _ = tiny_data.train.get(torch.arange(len(tiny_data.train)))
    with torch.no_grad():
        logits = model(x)
    np.testing.assert_allclose(got["el2n"], (logits.softmax(1) - F.one_hot(y, 10)).norm(dim=1), rtol=1e-5)
    np.testing.assert_allclose(got["loss"], F.cross_entropy(logits, y, reduction="none"), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["margin"], margins(logits, y), rtol=1e-5, atol=1e-6)
    params = [p for p in model.parameters() if p.requires_grad]
    for i in (0, 5, 239):
        grads = torch.autograd.grad(F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]), params)
        want = torch.sqrt(sum((g ** 2).sum() for g in grads))
        assert got["grand"][i] == pytest.approx(want.item(), rel=1e-3)


@pytest.fixture(scope="module")
def past_runs(tmp_path_factory, tiny_data):
    """Two short past runs of a small CNN with checkpoints at epochs 1 and 2, scored."""
    from reuse.io import save_npz

    root = tmp_path_factory.mktemp("past")
    recipe = {"epochs": 2, "batch_size": 32, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
              "schedule": {"name": "constant"}, "checkpoint_epochs": [1, 2], "example_stats": True}
    out = []
    for seed in (0, 1):
        run = root / f"s{seed}"
        seed_everything(seed)
        model = build_model("cnn1d", tiny_data.input_shape, tiny_data.num_classes, channels=8)
        spec = {"arch": "cnn1d", "args": {"channels": 8}, "input_shape": list(tiny_data.input_shape),
                "num_classes": tiny_data.num_classes}
        tr = Trainer(model, tiny_data, recipe, seed=seed, state_dir=run / "ckpt", model_spec=spec, progress="off")
        tr.fit()
        save_npz(run / "example_stats.npz", correct=tr.example_stats["correct"].numpy())
        score_run(run, tiny_data, epochs=[1, 2], names=["grand", "el2n", "margin", "forgetting"], batch_size=64,
                  device=torch.device("cpu"), out_npz=run / "scores.npz", out_json=run / "scores.json")
        out.append(run)
    return out


def test_score_run_writes_one_array_per_score(past_runs, tiny_data):
    f = np.load(past_runs[0] / "scores.npz")
    assert f["epochs"].tolist() == [1, 2]
    for name in ("grand", "el2n", "margin", "forgetting"):
        assert f[name].shape == (2, len(tiny_data.train)) and np.isfinite(f[name]).all()
    assert (f["grand"] > 0).all() and (f["el2n"] <= np.sqrt(2) + 1e-6).all()
    stats = np.load(past_runs[0] / "example_stats.npz")["correct"]
    assert f["forgetting"][0].tolist() == forgetting_counts(stats, upto=1).tolist()
    meta = read_json(past_runs[0] / "scores.json")
    assert meta["fingerprint"]["digest"] == tiny_data.train.fingerprint["digest"] and meta["cost"]["time_s"] > 0


def test_score_run_without_example_stats_is_a_clear_error(past_runs, tiny_data, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(past_runs[0] / "ckpt", run / "ckpt")
    with pytest.raises(ReuseError, match="example_stats: true"):
        score_run(run, tiny_data, epochs=[1], names=["forgetting"], batch_size=64, device=torch.device("cpu"),
                  out_npz=run / "scores.npz", out_json=run / "scores.json")
    assert not (run / "scores.npz").exists()


def test_score_table_averages_runs_and_checks_its_fingerprint(past_runs, tiny_data, tmp_path):
    npzs = [str(r / "scores.npz") for r in past_runs]
    jsons = [str(r / "scores.json") for r in past_runs]
    df = write_score_table(npzs, jsons, tmp_path / "scores.parquet", tmp_path / "scores.json")
    n = len(tiny_data.train)
    assert len(df) == 4 * 2 * n and set(df.columns) == {"idx", "score", "epoch", "value", "std", "n_runs"}
    table = ScoreTable.open(tmp_path / "scores.parquet", fingerprint=tiny_data.train.fingerprint)
    runs = [np.load(p) for p in npzs]
    np.testing.assert_allclose(table.values("el2n", 2), (runs[0]["el2n"][1] + runs[1]["el2n"][1]) / 2, rtol=1e-6)
    np.testing.assert_allclose(table.difficulty("margin", 1), -table.values("margin", 1))
    assert table.meta["cost"]["time_s"] > 0 and len(table.meta["runs"]) == 2
    with pytest.raises(ReuseError, match="no score 'loss'"):
        table.values("loss", 1)
    with pytest.raises(ReuseError, match="no epoch 7"):
        table.values("el2n", 7)
    with pytest.raises(FingerprintMismatch, match="made for other data"):
        ScoreTable.open(tmp_path / "scores.parquet", fingerprint=tiny_data.test.fingerprint)
    with pytest.raises(ReuseError, match="run the workflow's `scores` rule"):
        ScoreTable.open(tmp_path / "missing.parquet")


def test_rank_agreement_of_identical_and_reversed_runs(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.random((2, 50)).astype(np.float32)
    paths = []
    for i, arr in enumerate([base, base, -base]):
        p = tmp_path / f"r{i}.npz"
        np.savez(p, epochs=np.array([1, 2]), el2n=arr)
        paths.append(str(p))
    df = rank_agreement(paths[:2])
    runs = df[df["kind"] == "runs"]
    assert np.allclose(runs["spearman"], 1.0) and (runs["n"] == 1).all()
    df3 = rank_agreement(paths)
    pair = df3[(df3["kind"] == "runs") & (df3["epoch"] == 1)].iloc[0]
    assert pair["spearman"] == pytest.approx((1 - 1 - 1) / 3) and pair["n"] == 3
    ks = df3[(df3["kind"] == "n_runs") & (df3["epoch"] == 1)]
    assert ks["k"].tolist() == [1, 2]
    epochs = df3[df3["kind"] == "epochs"]
    assert len(epochs) == 1 and epochs.iloc[0]["other_epoch"] == 2
