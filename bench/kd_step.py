"""Cost of a distillation training step, side by side with a plain cross-entropy step.

Measures the median wall time of one real trainer step (``Trainer._train_step``: forward, loss with
the method's hooks, backward, SGD step) for three ways of training the same student on the same
batches, interleaved so that machine noise hits all three alike:

* ``ce``         plain cross-entropy (the anchor, 1.00x);
* ``kd-cache``   distillation from a past run's logit cache: float16 logits looked up by example id in
                 a memory-mapped (N, V, C) array, loss ``reuse.ops.kd_loss`` (the compiled kernel
                 when reuse._C is built);
* ``kd-online``  distillation from a live teacher model evaluated on every batch (the cost the
                 cache avoids).

Settings: MNIST-1D shapes (MLP 256-256 student, 1-D CNN teacher, B=128, 10 classes) and CIFAR shapes
(ResNet-20 student, ResNet-56 teacher, B=128, 100 classes), on random data of those shapes. Goal:
``kd-cache`` costs at most 1.05x a ``ce`` step.

Usage:  python bench/kd_step.py [--repeats 30] [--settings mnist1d,cifar]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time

import numpy as np
import torch

from reuse import ops
from reuse.cache import LogitCache, write_logit_cache
from reuse.data import DatasetPair, TensorData
from reuse.methods.kd import CachedTeacher, Distill, OnlineTeacher
from reuse.models import build_model
from reuse.train import Trainer, seed_everything

SETTINGS = {
    "mnist1d": dict(shape=(1, 40), classes=10, n=4096, student=("mlp", {"hidden": [256, 256]}),
                    teacher=("cnn1d", {"channels": 32})),
    "cifar": dict(shape=(3, 32, 32), classes=100, n=1024, student=("resnet20", {}), teacher=("resnet56", {})),
}


def make_data(shape, classes, n):
    g = torch.Generator().manual_seed(0)
    x = (torch.rand((n, *shape), generator=g) * 255).to(torch.uint8).numpy()
    y = torch.randint(0, classes, (n,), generator=g).numpy()
    fp = {"digest": "bench", "name": "bench"}
    split = TensorData(x, y, num_classes=classes, mean=[0.5] * shape[0], std=[0.25] * shape[0], fingerprint=fp)
    return DatasetPair(name="bench", meta={"num_classes": classes}, train=split, test=split)


def trainer(data, arch, args, algorithms, state_dir):
    seed_everything(0)
    model = build_model(arch, data.input_shape, data.num_classes, **args)
    recipe = {"epochs": 1, "batch_size": 128, "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9},
              "schedule": {"name": "constant"}}
    return Trainer(model, data, recipe, seed=0, state_dir=state_dir, algorithms=algorithms, progress="off",
                   model_spec={})


def run(name, cfg, repeats, tmp):
    data = make_data(cfg["shape"], cfg["classes"], cfg["n"])
    t_arch, t_args = cfg["teacher"]
    seed_everything(1)
    teacher_model = build_model(t_arch, data.input_shape, data.num_classes, **t_args).eval()
    cache_dir = os.path.join(tmp, name)
    write_logit_cache(cache_dir, teacher_model, data.train, views=[{"kind": "clean"}],
                      fingerprint=data.train.fingerprint, source={})
    cache = LogitCache.open(cache_dir)
    s_arch, s_args = cfg["student"]
    trainers = {
        "ce": trainer(data, s_arch, s_args, [], os.path.join(tmp, name + "ce")),
        "kd-cache": trainer(data, s_arch, s_args, [Distill(CachedTeacher([cache], views=0), temperature=4.0, alpha=0.9)],
                            os.path.join(tmp, name + "kdc")),
        "kd-online": trainer(data, s_arch, s_args, [Distill(OnlineTeacher(teacher_model), temperature=4.0, alpha=0.9)],
                             os.path.join(tmp, name + "kdo")),
    }
    batches = list(data.train.batches(128, shuffle=True, seed=0, epoch=0))
    times = {k: [] for k in trainers}
    for k, t in trainers.items():  # warm-up (and the one-off FLOP count of the first step)
        for b in batches[:3]:
            t._train_step(b)
    for i in range(repeats):
        b = batches[i % len(batches)]
        for k, t in trainers.items():
            t0 = time.perf_counter()
            t._train_step(b)
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\n## {name}: student {s_arch}, teacher {t_arch}, batch 128, {cfg['classes']} classes, "
          f"cache {cache.arrays['logits'].nbytes / 2**20:.1f} MiB float16")
    print(f"{'step':>10} | {'median ms':>10} | {'vs ce':>7}")
    for k, v in med.items():
        print(f"{k:>10} | {v * 1e3:10.3f} | {v / med['ce']:6.3f}x")
    ratio = med["kd-cache"] / med["ce"]
    print(f"goal kd-cache <= 1.05x ce: {'met' if ratio <= 1.05 else 'NOT met'} ({ratio:.3f}x); "
          f"online teacher costs {med['kd-online'] / med['ce']:.2f}x")
    return med


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--settings", default="mnist1d,cifar")
    args = p.parse_args()
    print("# reuse: distillation step cost (median of interleaved steps)")
    print(f"torch {torch.__version__} | python {platform.python_version()} | {platform.machine()} | "
          f"threads {torch.get_num_threads()} | load {os.getloadavg()[0]:.2f} | op backend {ops.BACKEND}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.settings.split(","):
            run(name, SETTINGS[name], args.repeats, tmp)


if __name__ == "__main__":
    main()
