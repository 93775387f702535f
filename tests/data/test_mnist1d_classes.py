"""MNIST-1D with its own classes (``mnist1d.classes``): unions of digits whose templates may be
reversed or negated; the default (the ten digits) generates exactly what it did before the option."""

from __future__ import annotations

import numpy as np
import pytest

from reuse.config import validate_config
from reuse.data.fingerprint import hash_array
from reuse.data.sources import class_name, read_mnist1d
from reuse.errors import ConfigError

ARGS = {"num_samples": 300, "seed": 3}
DIGITS = [{"digits": [d]} for d in range(10)]


def test_the_default_is_unchanged():
    """The arrays (so the fingerprints) of a default MNIST-1D are those the reader made before classes existed."""
    raw = read_mnist1d("t", {"kind": "mnist1d", "mnist1d": ARGS})
    assert hash_array(raw.x_train) == "356e63c168b212e692d5e419b04f95458c870dffc1ec39097312c138f52cd475"
    assert hash_array(raw.y_train) == "aec2b16ab9b2b28910e3506e19f467318031aaee6c6afcdacb1738d3a90cc788"
    assert hash_array(raw.x_test) == "58a37d2157fcaf52aac617f863b1614c891d158e1393a9e6c3cd0a41d50567c3"
    assert "classes" not in raw.extra and raw.num_classes == 10
    # the ten digits listed as classes are the default too
    listed = read_mnist1d("t", {"kind": "mnist1d", "mnist1d": {**ARGS, "classes": DIGITS}})
    for a in ("x_train", "y_train", "x_test", "y_test"):
        assert np.array_equal(getattr(raw, a), getattr(listed, a))


def test_classes_of_merged_and_transformed_digits():
    classes = [{"digits": [3]}, {"digits": [3], "transform": "reverse"}, {"digits": [3], "transform": "negate"},
               {"digits": [0, 6, 9]}, {"digits": [1, 7]}]
    spec = {"kind": "mnist1d", "mnist1d": {"num_samples": 500, "seed": 1, "classes": classes}}
    raw = read_mnist1d("s", spec)
    assert raw.num_classes == 5 and raw.extra["classes"] == ["3", "3 reverse", "3 negate", "0+6+9", "1+7"]
    y = np.concatenate([raw.y_train, raw.y_test])
    assert np.bincount(y).tolist() == [100] * 5  # equal classes, whatever their number of digits
    assert raw.x_train.shape[1:] == (1, 40) and len(raw.y_train) == pytest.approx(400, abs=20)
    again = read_mnist1d("s", spec)
    assert np.array_equal(raw.x_train, again.x_train) and np.array_equal(raw.y_test, again.y_test)
    # a negated class is another signal: its mean over examples is the identity class's, mirrored
    x = np.concatenate([raw.x_train, raw.x_test])[:, 0]
    ident, neg = x[y == 0].mean(0), x[y == 2].mean(0)
    assert np.corrcoef(ident, neg)[0, 1] < 0
    assert class_name({"digits": [2, 5], "transform": "reverse"}) == "2+5 reverse"


def test_the_config_checks_class_definitions():
    cfg = {"datasets": {"d": {"kind": "mnist1d", "mnist1d": {"classes": [{"digits": [1]}, {"digits": [2, 2]}]}}},
           "models": {"m": {"arch": "mlp"}}}
    with pytest.raises(ConfigError, match=r"datasets.d.mnist1d.classes.1.digits: \[2, 2\] has non-unique elements"):
        validate_config(cfg)
    cfg["datasets"]["d"]["mnist1d"]["classes"][1] = {"digits": [2], "transform": "flip"}
    with pytest.raises(ConfigError, match="datasets.d.mnist1d.classes.1.transform: 'flip' is not one of"):
        validate_config(cfg)
    cfg["datasets"]["d"]["mnist1d"]["classes"][1] = {"digits": [10]}
    with pytest.raises(ConfigError, match="datasets.d.mnist1d.classes.1.digits.0: 10 is greater than the maximum of 9"):
        validate_config(cfg)
    cfg["datasets"]["d"]["mnist1d"]["classes"][1] = {"digits": [2], "transform": "negate"}
    assert "classes" in validate_config(cfg)["datasets"]["d"]["mnist1d"]
    # no default is filled into a dataset without classes (its spec, a rule parameter, stays as it was)
    plain = validate_config({"datasets": {"d": {"kind": "mnist1d"}}, "models": {"m": {"arch": "mlp"}}})
    assert "classes" not in plain["datasets"]["d"].get("mnist1d", {})
