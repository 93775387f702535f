"""Tabular datasets (kind ``tabular``): reading CSV and Parquet, column inference, encodings fitted on
the training rows only, the one-table split, every bad input refused before training with the file,
column and row, the config checks, and a tiny end-to-end run of the workflow on a generated CSV."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from reuse.config import validate_config
from reuse.data import load, prepare
from reuse.data.sources import check_root, read
from reuse.errors import ConfigError, DataError
from tests.helpers import smk

COLUMNS = ["age", "income", "city", "label"]
CITIES = ["Lyon", "Oslo", "Pune"]


def rows(n: int = 120, seed: int = 0, age_shift: float = 0.0) -> list[list]:
    """``n`` rows: a numeric age, a numeric income, a city; the label is "high" when income plus a
    city bonus passes a threshold, so it is learnable from the features."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        age = round(float(rng.normal(40 + age_shift, 10)), 1)
        income = round(float(rng.normal(50, 15)), 2)
        city = CITIES[i % 3]
        label = "high" if income + 10 * CITIES.index(city) > 60 else "low"
        out.append([age, income, city, label])
    return out


def write(path: Path, data: list[list], header=COLUMNS) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(data)
    return path


def spec(root: Path, **kw) -> dict:
    return {"kind": "tabular", "root": str(root), "train_file": "train.csv", "test_file": "test.csv",
            "target": "label", "holdout": 0, **kw}


@pytest.fixture
def two_files(tmp_path) -> Path:
    write(tmp_path / "train.csv", rows(120, 0))
    write(tmp_path / "test.csv", rows(60, 1, age_shift=30.0))  # the test ages lie far from the training ones
    return tmp_path


def test_encodings_are_fitted_on_the_training_rows_only(two_files):
    raw = read("t", spec(two_files, numeric=["age", "income"], categorical=["city"]))
    train = pd.read_csv(two_files / "train.csv")
    enc = raw.extra["encoding"]
    assert enc["numeric"]["age"]["mean"] == pytest.approx(train["age"].mean())
    assert enc["numeric"]["age"]["std"] == pytest.approx(train["age"].std(ddof=0))
    assert enc["categorical"]["city"]["categories"] == CITIES
    assert raw.extra["features"] == ["age", "income", "city=Lyon", "city=Oslo", "city=Pune"]
    assert raw.extra["classes"] == ["high", "low"]
    # standardised with the training statistics: the training ages have mean 0, the shifted test ones do not
    assert abs(raw.x_train[:, 0].mean()) < 1e-5 and raw.x_train[:, 0].std() == pytest.approx(1, abs=1e-5)
    assert raw.x_test[:, 0].mean() > 2
    test = pd.read_csv(two_files / "test.csv")
    expect = (test["age"] - train["age"].mean()) / train["age"].std(ddof=0)
    np.testing.assert_allclose(raw.x_test[:, 0], expect, rtol=1e-5)
    np.testing.assert_array_equal(raw.x_test[:, 2:].argmax(1), [CITIES.index(c) for c in test["city"]])
    assert raw.x_train.dtype == np.float32 and raw.x_train.shape == (120, 5)


def test_encoding_leaves_out_the_held_out_rows(two_files):
    raw = read("t", spec(two_files, numeric=["age", "income"], categorical=["city"], holdout=20))
    assert raw.extra["encoding_rows"] == 100 and len(raw.y_train) == 100 and len(raw.y_val) == 20
    train = pd.read_csv(two_files / "train.csv")
    kept = np.setdiff1d(np.arange(120), raw.extra["holdout"]["source_ids"])
    assert raw.extra["encoding"]["numeric"]["income"]["mean"] == pytest.approx(train["income"].iloc[kept].mean())


def test_columns_are_inferred_and_logged(two_files, caplog):
    with caplog.at_level(logging.INFO, logger="reuse.data.tabular"):
        raw = read("t", spec(two_files))
    assert raw.extra["columns_inferred"]
    assert list(raw.extra["encoding"]["numeric"]) == ["age", "income"]
    assert list(raw.extra["encoding"]["categorical"]) == ["city"]
    assert "inferred" in caplog.text and "numeric ['age', 'income'], categorical ['city']" in caplog.text


def test_one_table_split_is_stratified_seeded_and_recorded(tmp_path):
    data = rows(200, 3)
    write(tmp_path / "all.csv", data)
    s = {"kind": "tabular", "root": str(tmp_path), "file": "all.csv", "target": "label", "test_fraction": 0.25,
         "split_seed": 1}
    raw = read("t", s)
    assert len(raw.y_test) == 50 and len(raw.y_train) == 150
    test_rows = raw.extra["split"]["test_source_rows"]
    labels = np.array([r[3] for r in data])
    share = np.mean(labels == "high")
    assert np.mean(labels[test_rows] == "high") == pytest.approx(share, abs=0.02)  # stratified
    train_rows = np.setdiff1d(np.arange(200), test_rows)  # ids: the remaining rows in file order
    np.testing.assert_array_equal(raw.y_train, [raw.extra["classes"].index(v) for v in labels[train_rows]])
    assert read("t", s).extra["split"]["test_source_rows"] == test_rows
    assert read("t", {**s, "split_seed": 2}).extra["split"]["test_source_rows"] != test_rows


def test_parquet_reads_as_csv_does(two_files):
    for name in ("train", "test"):
        df = pd.read_csv(two_files / f"{name}.csv")
        df.to_parquet(two_files / f"{name}.parquet", index=False)
    a = read("t", spec(two_files))
    b = read("t", spec(two_files, train_file="train.parquet", test_file="test.parquet"))
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)


def test_prepare_and_load_round_trip(two_files, tmp_path):
    d = tmp_path / "prepared"
    meta = prepare("t", spec(two_files), d / "data.npz", d / "dataset.json")
    data = load(d)
    assert data.input_shape == (5,) and data.num_classes == 2
    stored = json.loads((d / "dataset.json").read_text())
    assert stored["encoding"] == meta["encoding"] and stored["fingerprint"]["train"]["inputs_sha256"]
    x, y, idx = data.test.get(np.arange(4))
    assert x.shape == (4, 5) and idx.tolist() == [0, 1, 2, 3]
    np.testing.assert_allclose(x.numpy(), read("t", spec(two_files)).x_test[:4])  # no second normalisation


def test_missing_target_column(two_files):
    with pytest.raises(DataError, match=r"train.csv has no column 'vote' \(target\); its columns are"):
        read("t", spec(two_files, target="vote"))


def test_constant_target(tmp_path):
    write(tmp_path / "train.csv", [[30, 40, "Oslo", "low"]] * 10)
    write(tmp_path / "test.csv", [[30, 40, "Oslo", "low"]])
    with pytest.raises(DataError, match=r"target column 'label' of .*train.csv is constant \('low'"):
        read("t", spec(tmp_path))


def test_unseen_category_error_or_ignore(two_files):
    data = rows(10, 1)
    data[4][2] = "Rome"
    write(two_files / "test.csv", data)
    with pytest.raises(DataError, match=r"test.csv row 5 \(line 6\): column 'city' holds category 'Rome'"):
        read("t", spec(two_files))
    raw = read("t", spec(two_files, unseen="ignore"))
    assert raw.x_test[4, 2:].sum() == 0 and raw.x_test[3, 2:].sum() == 1


def test_non_numeric_value_in_numeric_column(two_files):
    data = rows(120, 0)
    data[6][1] = "n/a"
    write(two_files / "train.csv", data)
    with pytest.raises(DataError, match=r"train.csv row 7 \(line 8\): column 'income' is numeric but holds 'n/a'"):
        read("t", spec(two_files, numeric=["age", "income"], categorical=["city"]))


def test_empty_files(two_files):
    (two_files / "train.csv").write_text("")
    with pytest.raises(DataError, match=r"train.csv is empty"):
        read("t", spec(two_files))
    (two_files / "train.csv").write_text(",".join(COLUMNS) + "\n")
    with pytest.raises(DataError, match=r"train.csv is empty \(no data rows\)"):
        read("t", spec(two_files))


def test_missing_values_error_by_default_or_imputed(two_files):
    data = rows(120, 0)
    data[2][0] = ""
    data[9][2] = ""
    write(two_files / "train.csv", data)
    with pytest.raises(DataError, match=r"train.csv row 3 \(line 4\): column 'age' is empty; .*missing: impute"):
        read("t", spec(two_files))
    raw = read("t", spec(two_files, missing="impute"))
    assert raw.x_train[2, 0] == pytest.approx(0, abs=1e-6)  # the training mean, standardised
    most = raw.extra["encoding"]["categorical"]["city"]["most_frequent"]
    assert raw.x_train[9, 2 + CITIES.index(most)] == 1
    data[5][3] = ""
    write(two_files / "train.csv", data)
    with pytest.raises(DataError, match=r"row 6 \(line 7\): the target column 'label' is empty"):
        read("t", spec(two_files, missing="impute"))


def test_test_class_missing_from_training(two_files):
    data = rows(10, 1)
    data[0][3] = "medium"
    write(two_files / "test.csv", data)
    with pytest.raises(DataError, match=r"test.csv row 1 \(line 2\): target 'label' is 'medium', a class the training"):
        read("t", spec(two_files))


def test_check_root_names_the_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"file .*nope.csv does not exist"):
        check_root("t", {"kind": "tabular", "root": str(tmp_path), "file": "nope.csv", "target": "y"})


def test_config_check_refuses_what_cannot_work_on_tables(two_files):
    cfg = {"datasets": {"t": {k: v for k, v in spec(two_files).items() if k != "target"}},
           "models": {"mlp": {"arch": "mlp"}}}
    with pytest.raises(ConfigError, match="target"):
        validate_config(cfg)
    cfg = {"datasets": {"t": {**spec(two_files), "file": "train.csv", "missing": "error"}},
           "models": {"cnn": {"arch": "cnn1d"}, "mlp": {"arch": "mlp"}}, "train": {"augment": {"translate": 2}}}
    with pytest.raises(ConfigError) as e:
        validate_config(cfg)
    msg = str(e.value)
    assert "datasets.t: give either `file`" in msg
    assert "models.cnn: arch 'cnn1d' cannot train on tabular dataset 't'" in msg
    assert "train.augment" in msg
    ok = {"datasets": {"t": spec(two_files)}, "models": {"mlp": {"arch": "mlp"}},
          "train": {"augment": {"translate": 0, "flip": False}}}
    validate_config(ok)


@pytest.mark.workflow
def test_tiny_tabular_run_end_to_end(tmp_path):
    """Baselines, KD from their ensemble, scores, a pruned run and the report, on a generated CSV."""
    (tmp_path / "data").mkdir()
    write(tmp_path / "data" / "table.csv", rows(240, 5))
    cfg = {"results": "results", "device": "cpu", "progress": "log",
           "datasets": {"tab": {"kind": "tabular", "root": str(tmp_path / "data"), "file": "table.csv",
                                "target": "label", "test_fraction": 0.25}},
           "models": {"mlp": {"arch": "mlp", "args": {"hidden": [16]}}},
           "train": {"epochs": 3, "batch_size": 32, "optimizer": {"name": "adamw", "lr": 0.01},
                     "schedule": {"name": "constant"}, "augment": {"translate": 0, "flip": False},
                     "checkpoint_epochs": [1], "checkpoint_every": 1},
           "baseline": {"seeds": [0, 1]}, "cache": {"views": 0, "topk": 0},
           "kd": {"variants": {"ens": {"model": "mlp", "teacher": {"model": "mlp", "runs": 2}, "mode": "ensemble"}}},
           "scores": {"model": "mlp", "runs": 2, "names": ["el2n", "forgetting"]},
           "prune": {"variants": {"el2n_half": {"model": "mlp", "score": "el2n", "epoch": 1, "keep": 0.5}}}}
    path = tmp_path / "tab.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = smk(tmp_path, config=path)
    assert r.returncode == 0, r.stderr[-4000:]
    res = tmp_path / "results"
    meta = json.loads((res / "tab" / "data" / "dataset.json").read_text())
    assert meta["kind"] == "tabular" and meta["n_train"] == 180 and meta["columns_inferred"]
    assert "inferred" in (res / "tab" / "data" / "prepare.log").read_text()
    summary = pd.read_csv(res / "summary.csv")
    runs = summary[summary["row"] == "run"] if "row" in summary else summary
    assert set(runs["method"]) >= {"baseline", "kd", "prune"}
    assert runs["test_acc"].notna().all() and len(runs) == 6
    learned = runs[runs["method"].isin(["baseline", "kd"])]  # 3 epochs of full data: well above the majority class
    majority = np.bincount(load(res / "tab" / "data").test.y.numpy()).max() / meta["n_test"]
    assert (learned["test_acc"] > majority + 0.1).all(), (majority, runs[["method", "seed", "test_acc"]])
    again = smk(tmp_path, "-n", config=path)
    assert "Nothing to be done" in again.stdout + again.stderr


def test_anes96_export_reads_as_the_election_config_says(tmp_path):
    """tools/export_anes96.py writes the statsmodels table; configs/election.yaml's dataset reads it."""
    from tools.export_anes96 import main

    out = main([str(tmp_path)])
    assert out == tmp_path / "anes96.csv"
    ds = yaml.safe_load((Path(__file__).parents[2] / "configs" / "election.yaml").read_text())["datasets"]["election"]
    raw = read("election", {**ds, "root": str(tmp_path), "holdout": 0})
    assert raw.extra["classes"] == ["Clinton", "Dole"]
    assert (len(raw.y_train), len(raw.y_test)) == (755, 189)
    assert np.bincount(np.concatenate([raw.y_train, raw.y_test])).tolist() == [551, 393]
    assert raw.extra["encoding"]["categorical"]["PID"]["categories"] == [str(i) for i in range(7)]
    assert raw.x_train.shape[1] == 6 + 7 + 7 + 24  # numeric, PID, educ, income codes seen in training
    main([str(tmp_path), "--parquet"])
    pq = read("election", {**ds, "root": str(tmp_path), "file": "anes96.parquet", "holdout": 0})
    np.testing.assert_array_equal(pq.x_train, raw.x_train)
