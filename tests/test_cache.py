from __future__ import annotations

import numpy as np
import pytest
import torch

from reuse.__main__ import main
from reuse.cache import LogitCache, views_for, write_logit_cache
from reuse.data import Augment
from reuse.data.fingerprint import digest
from reuse.errors import CorruptArtifact, FingerprintMismatch, ReuseError
from reuse.models import build_model


@pytest.fixture(scope="module")
def model(tiny_data):
    torch.manual_seed(0)
    return build_model("cnn1d", tiny_data.input_shape, 10, channels=8).eval()


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory, tiny_data, model):
    d = tmp_path_factory.mktemp("cache")
    views = views_for({"translate": 2, "flip": True}, 2, seed=5)
    write_logit_cache(d, model, tiny_data.train, views=views, fingerprint=tiny_data.train.fingerprint,
                      source={"path": "ckpt.pt", "epoch": 1, "seed": 5}, topk=3, batch_size=64)
    return d


def test_views():
    assert views_for(None, 4, 0) == [{"kind": "clean"}]
    v = views_for({"translate": 1}, 2, 9)
    assert [x.get("view") for x in v] == [None, 0, 1] and v[1]["seed"] == 9


def test_cache_is_one_memmapped_array_indexed_by_id(cache_dir, tiny_data, model):
    c = LogitCache.open(cache_dir, fingerprint=tiny_data.train.fingerprint)
    assert isinstance(c.arrays["logits"], np.memmap) and c.arrays["logits"].dtype == np.float16
    assert c.arrays["logits"].shape == (len(tiny_data.train), 3, 10)
    idx = torch.tensor([7, 3, 200])
    with torch.no_grad():
        clean = model(tiny_data.train.get(idx)[0])
        aug = model(tiny_data.train.get(idx, Augment(2, True), seed=5, view=1)[0])
    torch.testing.assert_close(c.logits(idx, 0), clean, atol=2e-3, rtol=2e-3)  # float16 storage
    j = c.view_index("augment", seed=5, view=1)
    assert j == 2
    torch.testing.assert_close(c.logits(idx, j), aug, atol=2e-3, rtol=2e-3)  # exactly the student's view


def test_topk_form_rebuilds_probabilities(cache_dir, tiny_data):
    c = LogitCache.open(cache_dir)
    idx = np.arange(50)
    dense = torch.softmax(c.logits(idx, 0), 1)
    lse = c.arrays["logsumexp"][idx, 0]
    sparse = LogitCache(c.path, {**c.meta, "dense": False},
                        {k: v for k, v in c.arrays.items() if k != "logits"}).probs(idx, 0)
    torch.testing.assert_close(sparse.sum(1), torch.ones(50), atol=1e-5, rtol=0)
    ind = torch.from_numpy(c.arrays["topk_indices"][idx, 0].astype(np.int64))
    torch.testing.assert_close(sparse.gather(1, ind), dense.gather(1, ind), atol=3e-3, rtol=3e-3)
    assert lse.dtype == np.float32
    assert (ind == c.logits(idx, 0).topk(3, 1).indices).all()


def test_topk_mass_stays_below_one_for_large_logits(tmp_path, tiny_data, model):
    """float16 rounds a logit near 1000 by up to 0.5: the stored log-normaliser is the one of the rounded
    values, so the kept classes' mass never exceeds 1 (the KD loss refuses teachers whose mass does)."""
    scaled = torch.nn.Sequential(model, torch.nn.Linear(10, 10))
    with torch.no_grad():
        scaled[1].weight.copy_(torch.eye(10) * 300.0)
        scaled[1].bias.fill_(700.0)
    write_logit_cache(tmp_path, scaled, tiny_data.train, views=[{"kind": "clean"}], dense=False,
                      fingerprint=tiny_data.train.fingerprint, source={}, topk=3)
    c = LogitCache.open(tmp_path)
    v = c.arrays["topk_values"][:, 0].astype(np.float64)
    assert np.abs(v).max() > 512  # where float16's spacing is 0.5
    mass = np.exp(v - c.arrays["logsumexp"][:, 0, None]).sum(1)
    assert mass.max() <= 1.0 + 1e-4  # the float32 log-normaliser near 1000 is exact to 6e-5
    torch.testing.assert_close(c.probs(np.arange(len(v)), 0).sum(1), torch.ones(len(v)), atol=1e-4, rtol=0)


def test_foreign_fingerprint_is_refused(cache_dir, tiny_data):
    other = dict(tiny_data.train.fingerprint, labels_sha256="0" * 64)
    other["digest"] = digest(other)
    with pytest.raises(FingerprintMismatch, match=r"logit cache .* was made for other data.*labels_sha256"):
        LogitCache.open(cache_dir, fingerprint=other)


def test_damaged_cache_is_a_clear_error(tmp_path, cache_dir):
    import shutil

    d = tmp_path / "c"
    shutil.copytree(cache_dir, d)
    (d / "logits.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(CorruptArtifact, match="logits.npy is missing or unreadable"):
        LogitCache.open(d)
    with pytest.raises(ReuseError, match="no logit cache"):
        LogitCache.open(tmp_path / "nothing")


def test_no_view(cache_dir):
    with pytest.raises(ReuseError, match="no augment view"):
        LogitCache.open(cache_dir).view_index("augment", seed=5, view=9)


def test_topk_must_be_below_classes(tmp_path, tiny_data, model):
    with pytest.raises(ReuseError, match="topk=10 must be smaller"):
        write_logit_cache(tmp_path, model, tiny_data.train, views=[{"kind": "clean"}],
                          fingerprint=tiny_data.train.fingerprint, source={}, topk=10)
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_cli_describes_and_checks_a_cache(cache_dir, tiny_data_dir, tmp_path, capsys):
    assert main(["cache", str(cache_dir), "--data", str(tiny_data_dir)]) == 0
    out = capsys.readouterr().out
    assert "240 examples x 3 views x 10 classes" in out and "matches" in out
    from reuse.data import prepare

    prepare("other", {"kind": "mnist1d", "mnist1d": {"num_samples": 300, "seed": 4}}, tmp_path / "data.npz",
            tmp_path / "dataset.json")
    assert main(["cache", str(cache_dir), "--data", str(tmp_path)]) == 1
    assert "was made for other data" in capsys.readouterr().err
