"""The fast input pipeline: data on the training device, augmentation there, bf16 autocast,
channels_last and torch.compile (recipe keys data_on_device, amp, channels_last, compile).

Everything runs on the CPU here. ``data_on_device: true`` on the CPU takes the same code path as on
CUDA (ids, gathering, SplitMix64 bits and normalisation in torch on the data's device), only the
device differs, so the equality tests below cover the GPU path's arithmetic.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

import reuse.data.augment as augment_mod
import reuse.train.trainer as trainer_mod
from reuse.config import validate_config
from reuse.data.augment import Augment, keyed_bits, keyed_bits_torch, splitmix64, splitmix64_torch, umod
from reuse.data.datasets import DatasetPair, TensorData
from reuse.errors import ConfigError
from reuse.train import Trainer, evaluate, load_checkpoint, seed_everything
from tests.helpers import recipe

RECIPE = recipe(batch_size=16, optimizer={"weight_decay": 5e-4}, schedule={"name": "cosine"}, checkpoint_epochs=[],
                checkpoint_every=1, example_stats=True, augment={"translate": 2, "flip": True})


@pytest.fixture(scope="module")
def images():
    """96 train / 32 test random 3x8x8 uint8 images of 10 classes (CIFAR-shaped, smaller)."""
    rng = np.random.default_rng(0)

    def split(n, name):
        return TensorData(rng.integers(0, 256, (n, 3, 8, 8), dtype=np.uint8), rng.integers(0, 10, n), num_classes=10,
                          mean=[0.5, 0.4, 0.3], std=[0.25, 0.25, 0.2], fingerprint={"digest": f"images-{name}"})

    return DatasetPair(name="img", meta={"num_classes": 10}, train=split(96, "train"), test=split(32, "test"))


def small_cnn():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 10))


def fit(data, tmp_path, **keys):
    seed_everything(3)
    model = small_cnn()
    t = Trainer(model, data, {**RECIPE, **keys}, seed=5, state_dir=tmp_path, progress="off",
                model_spec={"arch": "small_cnn"})
    return t, t.fit()


def test_torch_splitmix64_is_bit_identical_to_numpy():
    rng = np.random.default_rng(1)
    z = np.concatenate([np.arange(-1000, 20000), rng.integers(-2**63, 2**63 - 1, 20000, dtype=np.int64),
                        np.array([-2**63, 2**63 - 1, -1, 0], dtype=np.int64)])
    assert (splitmix64_torch(torch.from_numpy(z)).numpy().view(np.uint64) == splitmix64(z.view(np.uint64))).all()
    ids = z[z >= 0]
    for keys in [(0, 0), (1, 2, 3), (7, 0, 1, 1), (2**63 - 1, -5, 2), (-1,), (123456789, 164, 2, 0)]:
        a = keyed_bits(*keys, idx=ids)
        b = keyed_bits_torch(*keys, idx=torch.from_numpy(ids))
        assert (b.numpy().view(np.uint64) == a).all(), keys
        for m in (1, 3, 9, 17, 1001):  # the shift draw: unsigned modulo
            assert (umod(b, m).numpy() == (a % np.uint64(m)).astype(np.int64)).all()
        assert ((b >> 63) & 1).numpy().astype(np.uint64).tolist() == (a >> np.uint64(63)).tolist()  # the flip bit


@pytest.mark.parametrize("shape", [(3, 8, 8), (1, 40)])
def test_device_data_serves_the_same_augmented_batches(shape, monkeypatch):
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (50, *shape), dtype=np.uint8) if len(shape) == 3 else rng.normal(size=(50, *shape))
    host = TensorData(x.astype(np.uint8 if len(shape) == 3 else np.float32), rng.integers(0, 10, 50), num_classes=10,
                      mean=[0.3] * shape[0], std=[0.2] * shape[0], fingerprint={"digest": "d"})
    dev = host.to("cpu")
    assert dev is not host and dev.device == torch.device("cpu") and host.device is None and dev.to("cpu") is dev
    aug = Augment(translate=3, flip=True)
    kw = dict(shuffle=True, seed=11, epoch=4, augment=aug, indices=torch.arange(3, 47))
    expected = list(host.batches(7, **kw))
    # The device path draws no per-example bits with numpy's keyed_bits, only in torch (the batch
    # order's one seed, keyed_seed, is drawn on the host).
    host_bits = augment_mod.keyed_bits

    def no_host_draws(*keys, idx):
        assert len(idx) == 1, "per-example bits drawn on the host"
        return host_bits(*keys, idx=idx)

    monkeypatch.setattr(augment_mod, "keyed_bits", no_host_draws)
    got = list(dev.batches(7, **kw))
    assert len(got) == len(expected)
    for (xe, ye, ie), (xg, yg, ig) in zip(expected, got):
        assert torch.equal(xe, xg) and torch.equal(ye, yg) and torch.equal(ie, ig)
    assert not torch.equal(expected[0][0], host.get(expected[0][2])[0])  # augmentation did something


def test_data_on_device_trains_exactly_as_host_data(images, tmp_path):
    t_host, s_host = fit(images, tmp_path / "host", data_on_device=False)
    t_dev, s_dev = fit(images, tmp_path / "dev", data_on_device=True)
    assert t_host.data is images and t_dev.data is not images
    assert t_dev.data.train.device == torch.device("cpu") and images.train.device is None  # the caller's data stay
    for a, b in zip(s_host.model.state_dict().values(), s_dev.model.state_dict().values()):
        assert torch.equal(a, b)
    for k in ("train_loss", "train_acc", "test_loss", "test_acc", "train_flops", "eval_flops"):
        assert s_host.metrics[-1][k] == s_dev.metrics[-1][k], k
    for k in ("correct", "loss"):
        assert torch.equal(t_host.example_stats[k], t_dev.example_stats[k])
    assert (t_dev.example_stats["correct"] >= 0).all()  # every example seen every epoch
    # auto keeps data on the host off CUDA
    t_auto = Trainer(small_cnn(), images, RECIPE, seed=5, state_dir=tmp_path / "auto", progress="off", model_spec={})
    assert t_auto.data is images


def test_amp_bf16_on_cpu_trains_with_finite_loss(images, tmp_path):
    t32, s32 = fit(images, tmp_path / "fp32")
    t16, s16 = fit(images, tmp_path / "bf16", amp="bf16", data_on_device=True)
    last = s16.metrics[-1]
    assert all(np.isfinite(last[k]) for k in ("train_loss", "test_loss"))
    assert abs(last["train_loss"] - s32.metrics[-1]["train_loss"]) < 0.2
    assert last["train_flops"] == s32.metrics[-1]["train_flops"] and last["eval_flops"] == s32.metrics[-1]["eval_flops"]
    assert all(v.dtype == torch.float32 for v in s16.model.state_dict().values() if v.is_floating_point())
    with pytest.raises(ValueError, match="unknown amp"):
        Trainer(small_cnn(), images, {**RECIPE, "amp": "fp8"}, seed=5, state_dir=tmp_path / "bad", model_spec={})


def test_channels_last_matches_contiguous(images, tmp_path):
    _, s_c = fit(images, tmp_path / "contiguous")
    t_cl, s_cl = fit(images, tmp_path / "cl", channels_last=True)
    conv = s_cl.model[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    for a, b in zip(s_c.model.state_dict().values(), s_cl.model.state_dict().values()):
        torch.testing.assert_close(a.float(), b.float(), rtol=1e-3, atol=1e-4)
    assert abs(s_c.metrics[-1]["train_loss"] - s_cl.metrics[-1]["train_loss"]) < 1e-4
    ev = evaluate(s_cl.model, images.test, 10, "cpu", channels_last=True, amp="bf16")
    assert 0 <= ev["acc"] <= 1 and np.isfinite(ev["loss"])


def test_compile_keeps_flops_and_checkpoint_keys(images, tmp_path, monkeypatch):
    # Inductor compiles a tiny CNN's training step in about 6-7 s on this 2-core machine (more for
    # each new batch shape), too slow for a unit test; aot_eager runs the same Dynamo capture and
    # AOTAutograd forward/backward graphs without generating code. bench/train_throughput.py runs
    # inductor.
    monkeypatch.setattr(trainer_mod, "_COMPILE_BACKEND", "aot_eager")
    torch._dynamo.reset()
    _, s_eager = fit(images, tmp_path / "eager")
    t, s = fit(images, tmp_path / "compiled", compile=True, data_on_device=True)
    assert t._compiled is not None and t._compiled[0] is s.model
    assert s.metrics[-1]["train_flops"] == s_eager.metrics[-1]["train_flops"]
    ckpt = load_checkpoint(tmp_path / "compiled" / "last.pt")
    assert list(ckpt["model"]) == list(s_eager.model.state_dict())  # no `_orig_mod.` prefix
    for a, b in zip(s_eager.model.state_dict().values(), s.model.state_dict().values()):
        torch.testing.assert_close(a.float(), b.float(), rtol=1e-3, atol=1e-4)


def test_schema_accepts_the_new_keys_and_rejects_bad_values():
    base = {"datasets": {"d": {"kind": "mnist1d"}}, "models": {"m": {"arch": "mlp"}}}
    cfg = validate_config(base)
    assert {k: cfg["train"][k] for k in ("data_on_device", "amp", "channels_last", "compile")} == \
        {"data_on_device": "auto", "amp": "none", "channels_last": False, "compile": False}
    ok = validate_config({**base, "train": {"data_on_device": True, "amp": "bf16", "channels_last": True, "compile": True}})
    assert ok["train"]["amp"] == "bf16" and ok["train"]["data_on_device"] is True
    validate_config({**base, "models": {"m": {"arch": "mlp", "train": {"data_on_device": False}}}})
    bad = {**base, "train": {"data_on_device": "gpu", "amp": "fp16", "channels_last": "yes", "compile": 1}}
    with pytest.raises(ConfigError) as e:
        validate_config(bad)
    msg = str(e.value)
    for key in ("train.data_on_device", "train.amp", "train.channels_last", "train.compile"):
        assert key in msg


def test_data_on_device_auto_decides_by_free_cuda_memory(images, tmp_path, monkeypatch):
    """The CUDA branch of `auto`, with the device faked: data go to the GPU when they take under a
    quarter of its free memory, and stay on the host otherwise."""
    t = Trainer(small_cnn(), images, RECIPE, seed=5, state_dir=tmp_path, progress="off", model_spec={})
    need = images.train.nbytes + images.test.nbytes
    moved = []
    monkeypatch.setattr(TensorData, "to", lambda self, device: moved.append(torch.device(device)) or self)
    t.device = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (4 * need - 1, 8 * need))
    assert t._place_data(images, "auto") is images and not moved
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (4 * need + 1, 8 * need))
    placed = t._place_data(images, "auto")
    assert placed is not images and moved == [torch.device("cuda")] * 2
    assert t._place_data(images, False) is images and len(moved) == 2
    with pytest.raises(ValueError, match="data_on_device"):
        t._place_data(images, "gpu")
