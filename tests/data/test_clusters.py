"""Gaussian clusters (dataset kind ``clusters``): deterministic arrays, a separation that sets how hard
the data are, common noise across separations, and the config check of its block."""

from __future__ import annotations

import json

import numpy as np
import pytest

from reuse.config import validate_config
from reuse.data import load, prepare
from reuse.data.clusters import centre_rule_accuracy, centres
from reuse.data.sources import read
from reuse.errors import ConfigError, DataError


def spec(**kw) -> dict:
    block = {"separation": 2.0, "classes": 3, "clusters_per_class": 1, "dims": 4, "n_train": 600, "n_test": 600}
    return {"kind": "clusters", "clusters": {**block, **kw}}


def test_same_spec_same_arrays_and_fingerprint(tmp_path):
    a = prepare("c", spec(), tmp_path / "a.npz", tmp_path / "a.json")
    b = prepare("c", spec(), tmp_path / "b.npz", tmp_path / "b.json")
    assert a["fingerprint"] == b["fingerprint"]
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    other = prepare("c", spec(seed=1), tmp_path / "c.npz", tmp_path / "c.json")
    assert other["fingerprint"]["train"]["inputs_sha256"] != a["fingerprint"]["train"]["inputs_sha256"]


def test_prepared_data_load_with_balanced_classes_and_a_val_split(tmp_path):
    d = tmp_path / "c" / "data"
    d.mkdir(parents=True)
    meta = prepare("c", {**spec(), "holdout": 60}, d / "data.npz", d / "dataset.json")
    pair = load(d)
    assert pair.input_shape == (4,) and pair.num_classes == 3
    assert len(pair.train) == 540 and len(pair.val) == 60 and len(pair.test) == 600
    assert np.bincount(pair.test.y.numpy()).tolist() == [200, 200, 200]
    assert np.bincount(pair.val.y.numpy()).tolist() == [20, 20, 20]
    c = json.loads((d / "dataset.json").read_text())["clusters"]
    assert c["separation"] == 2.0 and len(c["centres"]) == 3 and meta["kind"] == "clusters"


def test_centres_are_a_regular_simplex_of_edge_separation():
    cen = centres(3, 2, 7, 2.5)
    d = np.sqrt(((cen[:, None] - cen[None]) ** 2).sum(-1))
    off = d[~np.eye(6, dtype=bool)]
    assert np.allclose(off, 2.5) and np.allclose(cen.mean(0), 0)


def test_noise_is_shared_across_separations_and_within_cluster_std_is_one():
    a, b = read("c", spec(separation=1.0)), read("c", spec(separation=5.0))
    assert (a.y_train == b.y_train).all()
    ca, cb = centres(3, 1, 4, 1.0), centres(3, 1, 4, 5.0)
    na = a.x_train - ca[a.y_train]
    nb = b.x_train - cb[b.y_train]
    assert np.allclose(na, nb, atol=1e-5)  # the same draws around farther centres
    assert abs(na.std() - 1.0) < 0.05


def nearest_mean_accuracy(raw) -> float:
    """A classifier fitted on the training split only: each test example to the nearest class mean."""
    means = np.stack([raw.x_train[raw.y_train == k].mean(0) for k in range(raw.num_classes)])
    return float((((raw.x_test[:, None] - means[None]) ** 2).sum(-1).argmin(1) == raw.y_test).mean())


def test_separation_sets_the_difficulty():
    accs = [nearest_mean_accuracy(read("c", spec(separation=s))) for s in (0.0, 1.0, 2.0, 4.0, 8.0)]
    assert all(x < y for x, y in zip(accs, accs[1:])), accs
    assert accs[0] < 0.42 and accs[-1] > 0.99  # chance (1/3) with no separation; separable at 8 stds
    # with one cluster per class the centre rule is the Bayes classifier: for two classes its error is Phi(-s/2)
    raw = read("c", spec(separation=2.0, classes=2, n_test=20000))
    acc = raw.extra["clusters"]["centre_rule_test_acc"]
    assert abs(acc - 0.8413) < 0.01, acc
    assert acc == centre_rule_accuracy(raw.x_test, raw.y_test, centres(2, 1, 4, 2.0), 2)


def test_a_class_of_two_clusters_is_a_mixture():
    """Class k holds clusters k and k + classes, half its examples each: the nearest of the six centres
    tells the classes apart better than the nearest of the three class means."""
    raw = read("c", spec(separation=3.0, clusters_per_class=2, dims=6, n_test=3000))
    cen = np.asarray(raw.extra["clusters"]["centres"])
    nearest = ((raw.x_test[:, None] - cen[None]) ** 2).sum(-1).argmin(1)
    assert (nearest % 3 == raw.y_test).mean() == raw.extra["clusters"]["centre_rule_test_acc"]
    assert np.bincount(nearest[nearest % 3 == raw.y_test], minlength=6).min() > 300  # both clusters populated
    assert raw.extra["clusters"]["centre_rule_test_acc"] > nearest_mean_accuracy(raw) + 0.03


def test_reader_refuses_a_bad_block_naming_the_key():
    with pytest.raises(DataError, match=r"datasets\.c\.clusters\.dims: 2 is fewer than the 3 cluster centres"):
        read("c", spec(dims=2))


def base(**datasets) -> dict:
    return {"datasets": datasets, "models": {"mlp": {"arch": "mlp"}},
            "train": {"augment": {"translate": 0, "flip": False}}}


def test_config_fills_defaults_and_refuses_bad_keys():
    cfg = validate_config(base(c={"kind": "clusters", "clusters": {"separation": 3}}))
    assert cfg["datasets"]["c"]["clusters"] == {"separation": 3, "classes": 4, "clusters_per_class": 1, "dims": 8,
                                                "n_train": 2000, "n_test": 2000, "seed": 0}
    bad = [({"kind": "clusters"}, "clusters"),                                       # the block is required
           ({"kind": "clusters", "clusters": {}}, "separation"),                     # and its separation
           ({"kind": "clusters", "clusters": {"separation": -1}}, "datasets.c.clusters.separation"),
           ({"kind": "clusters", "clusters": {"separation": 1, "sep": 2}}, "datasets.c.clusters"),
           ({"kind": "clusters", "clusters": {"separation": 1, "classes": 1}}, "datasets.c.clusters.classes"),
           ({"kind": "clusters", "clusters": {"separation": 1, "classes": 4, "clusters_per_class": 3, "dims": 8}},
            "datasets.c.clusters.dims: 8 is fewer than the 12 cluster centres"),
           ({"kind": "clusters", "clusters": {"separation": 1, "n_test": 3}}, "datasets.c.clusters.n_test: 3")]
    for ds, where in bad:
        with pytest.raises(ConfigError, match=where.replace(".", r"\.")):
            validate_config(base(c=ds))
    with pytest.raises(ConfigError, match=r"datasets\.m\.clusters: only a dataset of kind clusters"):
        validate_config(base(m={"kind": "mnist1d", "clusters": {"separation": 1}}))


def test_config_refuses_models_and_augmentation_that_do_not_fit_features():
    cfg = {**base(c={"kind": "clusters", "clusters": {"separation": 1}}),
           "models": {"cnn": {"arch": "cnn1d"}, "mlp": {"arch": "mlp"}}, "train": {"augment": {"translate": 2}}}
    with pytest.raises(ConfigError) as e:
        validate_config(cfg)
    assert "models.cnn: arch 'cnn1d' cannot train on clusters dataset 'c'" in str(e.value)
    assert "train.augment" in str(e.value)
