"""Every dataset kind, read from small files written in its real on-disk format."""

from __future__ import annotations

import pickle
import struct

import numpy as np
import pytest
import torch

from reuse.data import load, prepare
from reuse.data.sources import read
from reuse.errors import DataError
from tests.conftest import MNIST_ROOT


def write_cifar(root, kind: str, n_train_per_batch: int = 4, n_test: int = 5, seed: int = 0):
    """CIFAR python batches, exactly as cifar-10-batches-py / cifar-100-python store them."""
    rng = np.random.default_rng(seed)
    if kind == "cifar10":
        base, files, key, c = root / "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], b"labels", 10
    else:
        base, files, key, c = root / "cifar-100-python", ["train"], b"fine_labels", 100
    base.mkdir(parents=True)
    expect = {}
    for name in files + (["test_batch"] if kind == "cifar10" else ["test"]):
        n = n_test if name.startswith("test") else n_train_per_batch
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = rng.integers(0, c, size=n).tolist()
        with open(base / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), key: labels, b"data": data}, f, protocol=2)
        expect[name] = (data, labels)
    return expect


def write_idx(path, array: np.ndarray):
    """An IDX file (the MNIST format): magic, dims, then the bytes."""
    magic = {1: 2049, 3: 2051}[array.ndim]
    with open(path, "wb") as f:
        f.write(struct.pack(">I", magic) + b"".join(struct.pack(">I", s) for s in array.shape))
        f.write(array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("kind", ["cifar10", "cifar100"])
def test_cifar_batches_are_read_in_order(tmp_path, kind):
    expect = write_cifar(tmp_path, kind)
    raw = read("c", {"kind": kind, "root": str(tmp_path)})
    train_names = [k for k in expect if not k.startswith("test")]
    x0, y0 = expect[train_names[0]]
    assert raw.x_train.shape == (4 * len(train_names), 3, 32, 32) and raw.x_train.dtype == np.uint8
    np.testing.assert_array_equal(raw.x_train[:4].reshape(4, -1), x0)  # channel-major rows, as CIFAR stores
    assert raw.y_train[:4].tolist() == y0
    assert raw.num_classes == (10 if kind == "cifar10" else 100)
    assert len(raw.mean) == 3 and all(0.3 < m < 0.7 for m in raw.mean)


def test_cifar_missing_batch_names_the_file(tmp_path):
    write_cifar(tmp_path, "cifar10")
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3"):
        read("c", {"kind": "cifar10", "root": str(tmp_path)})


def test_cifar_garbage_file_is_a_clear_error(tmp_path):
    write_cifar(tmp_path, "cifar100")
    (tmp_path / "cifar-100-python" / "train").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="not a readable CIFAR batch"):
        read("c", {"kind": "cifar100", "root": str(tmp_path)})


@pytest.mark.parametrize("kind,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_idx_files(tmp_path, kind, folder):
    raw_dir = tmp_path / folder / "raw"
    raw_dir.mkdir(parents=True)
    rng = np.random.default_rng(1)
    xtr, ytr = rng.integers(0, 256, (6, 28, 28)), rng.integers(0, 10, 6)
    xte, yte = rng.integers(0, 256, (3, 28, 28)), rng.integers(0, 10, 3)
    write_idx(raw_dir / "train-images-idx3-ubyte", xtr)
    write_idx(raw_dir / "train-labels-idx1-ubyte", ytr)
    write_idx(raw_dir / "t10k-images-idx3-ubyte", xte)
    write_idx(raw_dir / "t10k-labels-idx1-ubyte", yte)
    raw = read("m", {"kind": kind, "root": str(tmp_path)})
    np.testing.assert_array_equal(raw.x_train[:, 0], xtr)
    np.testing.assert_array_equal(raw.y_test, yte)
    assert raw.x_train.shape == (6, 1, 28, 28)


def test_missing_root_says_where_and_how(tmp_path):
    with pytest.raises(DataError, match=r"MNIST/raw does not exist.*download: true"):
        read("m", {"kind": "mnist", "root": str(tmp_path / "nowhere")})


def test_imagefolder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("val", 2)):
        for cls in ("ant", "bee"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(tmp_path / split / cls / f"{i}.png")
    spec = {"kind": "imagefolder", "root": str(tmp_path), "train_dir": "train", "test_dir": "val", "image_size": 32}
    prepare("imgs", spec, tmp_path / "prep" / "data.npz", tmp_path / "prep" / "dataset.json")
    d = load(tmp_path / "prep")
    assert len(d.train) == 6 and len(d.test) == 4 and d.num_classes == 2
    x, y, i = d.train[4]
    assert x.shape == (3, 32, 32) and int(y) == 1 and int(i) == 4
    batches = list(d.train.batches(4, shuffle=True, seed=1, epoch=0, augment=True))
    again = list(d.train.batches(4, shuffle=True, seed=1, epoch=0, augment=True))
    assert [b[2].tolist() for b in batches] == [b[2].tolist() for b in again]
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again))  # augmentation reproducible
    other = list(d.train.batches(4, shuffle=True, seed=1, epoch=1, augment=True))
    assert not torch.equal(torch.cat([b[0] for b in batches]).sum(0), torch.cat([b[0] for b in other]).sum(0))


def test_imagefolder_class_mismatch(tmp_path):
    from PIL import Image

    for split, classes in (("train", ("a", "b")), ("val", ("a", "c"))):
        for cls in classes:
            (tmp_path / split / cls).mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(tmp_path / split / cls / "0.png")
    with pytest.raises(DataError, match="class folders"):
        read("i", {"kind": "imagefolder", "root": str(tmp_path), "train_dir": "train", "test_dir": "val"})


@pytest.mark.skipif(not (MNIST_ROOT / "MNIST" / "raw").exists(), reason="real MNIST not on this machine")
def test_real_mnist(tmp_path):
    meta = prepare("mnist", {"kind": "mnist", "root": str(MNIST_ROOT)}, tmp_path / "data.npz", tmp_path / "dataset.json")
    assert (meta["n_train"], meta["n_test"], meta["num_classes"]) == (60000, 10000, 10)
    assert abs(meta["mean"][0] - 0.1307) < 1e-3 and abs(meta["std"][0] - 0.3081) < 1e-3  # the usual constants
    d = load(tmp_path)
    assert d.train.y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]  # MNIST's first training labels


def test_mnist1d_is_generated_deterministically(tmp_path):
    a = prepare("m1", {"kind": "mnist1d", "mnist1d": {"num_samples": 200}}, tmp_path / "a" / "d.npz", tmp_path / "a" / "m.json")
    b = prepare("m1", {"kind": "mnist1d", "mnist1d": {"num_samples": 200}}, tmp_path / "b" / "d.npz", tmp_path / "b" / "m.json")
    assert a["fingerprint"] == b["fingerprint"]
    assert a["input_shape"] == [1, 40] and a["n_train"] == 160
    c = prepare("m1", {"kind": "mnist1d", "mnist1d": {"num_samples": 200, "seed": 1}}, tmp_path / "c" / "d.npz",
                tmp_path / "c" / "m.json")
    assert c["fingerprint"]["train"]["digest"] != a["fingerprint"]["train"]["digest"]
