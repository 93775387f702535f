from __future__ import annotations

import numpy as np
import pytest
import torch

from reuse.data import Augment, check_fingerprint, epoch_order, keyed_bits, make_fingerprint
from reuse.errors import FingerprintMismatch


def test_keyed_bits_depend_only_on_keys_and_id():
    ids = torch.tensor([5, 1, 9, 1])
    a = keyed_bits(3, 7, idx=ids)
    assert a[1] == a[3]  # same id, same bits
    assert (keyed_bits(3, 7, idx=ids[[2]]) == a[2]).all()  # independent of the batch
    assert (keyed_bits(3, 8, idx=ids) != a).all()


def test_augment_view_is_independent_of_batch_composition():
    x = torch.arange(6 * 2 * 5 * 7, dtype=torch.float32).view(6, 2, 5, 7)
    idx = torch.arange(100, 106)
    aug = Augment(translate=2, flip=True)
    full = aug(x, idx, seed=1, view=4)
    part = aug(x[[4, 1]], idx[[4, 1]], seed=1, view=4)
    assert torch.equal(full[[4, 1]], part)
    assert not torch.equal(full, aug(x, idx, seed=1, view=5))


@pytest.mark.parametrize("shape", [(3, 1, 40), (3, 3, 8, 8)])
def test_translation_is_pad_and_crop(shape):
    torch.manual_seed(0)
    x = torch.rand(shape) + 1  # strictly positive, so padding (0) is visible
    aug = Augment(translate=3)
    out = aug(x, torch.arange(3), seed=0, view=0)
    assert out.shape == x.shape
    for b in range(3):
        # every output value is either padding or an input value at a shifted position
        found = False
        for dy in range(-3, 4) if len(shape) == 4 else [0]:
            for dx in range(-3, 4):
                pad = [3, 3] * (len(shape) - 2)
                xp = torch.nn.functional.pad(x[b:b + 1], pad)[0]
                if len(shape) == 4:
                    cand = xp[:, 3 + dy:3 + dy + shape[2], 3 + dx:3 + dx + shape[3]]
                else:
                    cand = xp[:, 3 + dx:3 + dx + shape[2]]
                found |= torch.equal(cand, out[b])
        assert found


def test_flip_mirrors_about_half():
    x = torch.arange(10.0).repeat(1000, 1, 1)
    out = Augment(flip=True)(x, torch.arange(1000), seed=0, view=0)
    flipped = (out[:, 0, 0] == 9).float().mean().item()
    assert 0.45 < flipped < 0.55
    assert ((out[:, 0, 0] == 0) | (out[:, 0, 0] == 9)).all()


def test_epoch_order_is_a_permutation_that_changes_per_epoch():
    a, b = epoch_order(50, 0, 0), epoch_order(50, 0, 1)
    assert sorted(a.tolist()) == list(range(50)) and not torch.equal(a, b)
    assert torch.equal(a, epoch_order(50, 0, 0))


def _fp(labels, inputs="x"):
    return make_fingerprint(name="d", kind="mnist1d", split="train", labels=np.asarray(labels), inputs_sha256=inputs,
                            num_classes=3, input_shape=[1, 4])


def test_fingerprint_mismatch_names_the_fields():
    ok = _fp([0, 1, 2])
    check_fingerprint(_fp([0, 1, 2]), ok, "cache X")
    with pytest.raises(FingerprintMismatch, match=r"cache X was made for other data.*n: 2 here vs 3 expected"):
        check_fingerprint(_fp([0, 1]), ok, "cache X")
    with pytest.raises(FingerprintMismatch, match="labels_sha256"):
        check_fingerprint(_fp([0, 2, 1]), ok, "cache X")  # same labels, other order
    tampered = dict(ok, n=4)
    with pytest.raises(FingerprintMismatch):
        check_fingerprint(tampered, ok, "cache X")
    with pytest.raises(FingerprintMismatch, match="no dataset fingerprint"):
        check_fingerprint(None, ok, "cache X")


def test_tensor_data_batches(tiny_data):
    d = tiny_data.train
    seen = torch.cat([b[2] for b in d.batches(64, shuffle=True, seed=0, epoch=0)])
    assert sorted(seen.tolist()) == list(range(len(d)))
    x, y, idx = next(d.batches(8))
    assert x.dtype == torch.float32 and x.shape == (8, 1, 40) and idx.tolist() == list(range(8))
    sub = torch.tensor([3, 17, 42])
    got = torch.cat([b[2] for b in d.batches(2, shuffle=True, seed=0, epoch=0, indices=sub)])
    assert sorted(got.tolist()) == [3, 17, 42]
    assert d.num_batches(64) == -(-len(d) // 64) and d.num_batches(64, drop_last=True) == len(d) // 64
    xi, yi, ii = d[5]
    assert torch.equal(xi, d.get(torch.tensor([5]))[0][0]) and int(ii) == 5
