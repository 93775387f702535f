"""The distillation overhead of each search policy, per trial, against a plain trial.

For the default config's search (config.yaml ``search``: its model at the base width, its KD
temperature and alpha, batch and training-set size of its dataset, on random data of that shape)
this measures, interleaved so that machine noise hits all alike, the median wall time of one real
trainer step (``Trainer._train_step``) for:

* ``plain``   cross-entropy (scratch, warm start and the pruners train like this; 1.00x);
* ``best``    KD from one earlier trial's logit cache (float16 looked up by example id);
* ``top``     KD from the ensemble of the best ``kd.top`` trials' caches (mean tempered probabilities);
* ``random``  KD from one of the best ``kd.top`` caches drawn per step;

and once per trial the cost of writing the trial's own logit cache (one forward pass over the
training set, what a distilling policy pays so that later trials need no teacher forward). The
per-trial overhead of a policy is ``(KD step / plain step - 1) x (fraction of steps distilled) +
cache write / plain trial``, for a trial of the space's middle epoch count; ``kd_early`` distils over
the first ``until`` of the steps.

Usage:  python bench/search_kd.py [--repeats 40] [--config config.yaml]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import cpu_model  # noqa: E402
from reuse import ops  # noqa: E402
from reuse.cache import LogitCache, write_logit_cache  # noqa: E402
from reuse.config import validate_config  # noqa: E402
from reuse.data import DatasetPair, TensorData  # noqa: E402
from reuse.methods.kd import CachedTeacher, Distill  # noqa: E402
from reuse.methods.registry import get  # noqa: E402
from reuse.methods.sequences.space import epoch_bounds  # noqa: E402
from reuse.models import build_model  # noqa: E402
from reuse.plan import recipe_for  # noqa: E402
from reuse.train import Trainer, seed_everything  # noqa: E402


def make_data(shape, classes, n):
    g = torch.Generator().manual_seed(0)
    x = torch.randn((n, *shape), generator=g).numpy()
    y = torch.randint(0, classes, (n,), generator=g).numpy()
    fp = {"digest": "bench", "name": "bench"}
    split = TensorData(x, y, num_classes=classes, mean=[0.0] * shape[0], std=[1.0] * shape[0], fingerprint=fp)
    return DatasetPair(name="bench", meta={"num_classes": classes}, train=split, test=split)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=40)
    p.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "config.yaml"))
    args = p.parse_args()
    torch.set_num_threads(1)
    cfg = validate_config(yaml.safe_load(Path(args.config).read_text()))
    s = get("search", cfg)
    b = cfg["search"]
    model_cfg = cfg["models"][b["model"]]
    recipe = recipe_for(cfg, b["model"])
    ds = next(iter(cfg["datasets"]))
    shape, classes = (1, 40), 10  # MNIST-1D; for another dataset, read its dataset.json
    n = cfg["datasets"][ds].get("mnist1d", {}).get("num_samples", 5000)
    n = int(n * cfg["datasets"][ds].get("mnist1d", {}).get("train_split", 0.8)) - int(cfg["datasets"][ds].get("holdout") or 0)
    lo, hi = epoch_bounds(b["space"], cfg, b["model"])
    epochs = (lo + hi) // 2
    pol = {name: s.policy(cfg, name) for name in b["policies"]}
    kd = b["kd"]
    print("# reuse: distillation overhead per search trial (median of interleaved steps)")
    print(f"{cpu_model()} | torch {torch.__version__} | python {platform.python_version()} | threads 1 | "
          f"load {os.getloadavg()[0]:.2f} | op backend {ops.BACKEND}")
    print(f"search of config {args.config}: model {b['model']} ({model_cfg['arch']} {model_cfg.get('args', {})}), "
          f"{n} training examples {shape}, batch {recipe['batch_size']}, T={kd['temperature']} alpha={kd['alpha']}, "
          f"a trial of {epochs} epochs")
    data = make_data(shape, classes, n)
    with tempfile.TemporaryDirectory() as tmp:
        caches, write_s = [], []
        for i in range(max(kd["top"], 1)):
            seed_everything(100 + i)
            m = build_model(model_cfg["arch"], data.input_shape, classes, **model_cfg.get("args", {})).eval()
            t0 = time.perf_counter()
            write_logit_cache(Path(tmp) / f"c{i}", m, data.train, views=[{"kind": "clean"}],
                              fingerprint=data.train.fingerprint, source={}, topk=0)
            write_s.append(time.perf_counter() - t0)
            caches.append(LogitCache.open(Path(tmp) / f"c{i}"))

        def trainer(algorithms, tag):
            seed_everything(0)
            m = build_model(model_cfg["arch"], data.input_shape, classes, **model_cfg.get("args", {}))
            r = {"epochs": 1, "batch_size": recipe["batch_size"], "optimizer": recipe["optimizer"],
                 "schedule": {"name": "constant"}}
            return Trainer(m, data, r, seed=0, state_dir=Path(tmp) / tag, algorithms=algorithms, progress="off",
                           model_spec={})

        def distill(mode, cs):
            return [Distill(CachedTeacher(cs, mode=mode, temperature=kd["temperature"], views=0),
                            temperature=kd["temperature"], alpha=kd["alpha"])]

        trainers = {"plain": trainer([], "p"), "best": trainer(distill("single", caches[:1]), "b"),
                    "top": trainer(distill("ensemble", caches), "t"), "random": trainer(distill("random", caches), "r")}
        batches = list(data.train.batches(recipe["batch_size"], shuffle=True, seed=0, epoch=0))
        for t in trainers.values():
            for bt in batches[:3]:
                t._train_step(bt)
        times = {k: [] for k in trainers}
        for i in range(args.repeats):
            bt = batches[i % len(batches)]
            for k, t in trainers.items():
                t0 = time.perf_counter()
                t._train_step(bt)
                times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    steps = epochs * len(batches)
    trial_s = steps * med["plain"]
    cache_s = statistics.median(write_s)
    print(f"\nplain step {med['plain'] * 1e3:.3f} ms; a plain trial's training {trial_s:.2f} s ({steps} steps); "
          f"writing a trial's logit cache {cache_s * 1e3:.1f} ms ({cache_s / trial_s:.3f}x a trial)\n")
    print(f"{'policy':>12} | {'teacher':>7} | {'step vs plain':>13} | {'KD steps':>8} | {'cache':>5} | {'overhead per trial':>18}")
    for name, c in pol.items():
        t = c.get("teacher")
        step = med[t] / med["plain"] if t else 1.0
        frac = c.get("until", 1.0) if t else 0.0
        cache = cache_s / trial_s if t else 0.0
        over = (step - 1) * frac + cache
        print(f"{name:>12} | {t or '-':>7} | {step:12.3f}x | {frac:8.2f} | {'yes' if t else 'no':>5} | {over:+17.3f}x")


if __name__ == "__main__":
    main()
