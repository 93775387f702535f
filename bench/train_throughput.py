"""Training throughput on CIFAR-shaped data: images/s of ResNet-20 and ResNet-56 training steps,
a standard PyTorch input pipeline against reuse's Trainer pipeline with each fast-pipeline option.

What is measured: images per second of training steps - the input pipeline (shuffled order,
pad-4 random crop + horizontal flip, scaling and per-channel normalisation), forward, cross-entropy,
backward and an SGD step (momentum 0.9, weight decay 5e-4) - for the CIFAR ResNets of He et al.
(registry `resnet20`, `resnet56`, option-A shortcuts, 10 classes). The data are synthetic: N random
32x32x3 uint8 images with random labels of 10 classes (the speed does not depend on the pixels).
Pipelines:

* `anchor`        - the standard PyTorch pipeline, fp32, contiguous: a torch Dataset of uint8 CHW
                    tensors with torchvision transforms (RandomCrop(32, padding=4),
                    RandomHorizontalFlip, ConvertImageDtype(float32), Normalize) per example, a
                    torch DataLoader (shuffle, drop_last, --workers worker processes, pinned memory on
                    CUDA), batches copied to the device, and the loss and the number correct read with
                    `.item()` every step, as the common CIFAR training scripts do. (It skips the PIL
                    round trip of torchvision's CIFAR10 dataset, which only makes it faster.) The 1.00x
                    of every ratio;
* `reuse`         - reuse's Trainer (`Trainer._train_step` on the batches of `TensorData.batches`,
                    deterministic augmentation keyed by (seed, epoch, example id)), with the recipe
                    keys below off: host data, fp32, contiguous, eager;
* `+dev`          - `data_on_device: true`: the dataset lives on the training device, batches are
                    gathered, augmented (SplitMix64 bits in torch) and normalised there;
* `+dev+cl`       - and `channels_last: true`;
* `+dev+bf16`     - `data_on_device` and `amp: bf16` (autocast);
* `+dev+cl+bf16`  - all three;
* `+dev+cl+compile`, `+dev+cl+bf16+compile` - and `compile: true` (torch.compile, inductor): by
                    default on CUDA only (--compile to add them on the CPU).

The Trainer's recipe has `example_stats: false` (per-example statistics add a small per-step
scatter on the device) and no evaluation: only training steps are timed.

Timing: every pipeline keeps its own model, optimiser and endless batch stream. After --warmup
untimed steps each (they include the Trainer's one FLOP-counted step and torch.compile's
compilation), --repeats rounds; in a round every pipeline runs --steps steps, timed as one block
(CUDA: synchronised before and after; the block ends by reading the accumulated loss, the one host
read per block of reuse's pipelines), in an order that rotates from round to round. Reported: the
median images/s over rounds, and "x anchor", the median over rounds of the pipeline's images/s over
the anchor's images/s in the same round (on a shared machine the load changes within seconds; a
ratio of neighbours is steadier than a ratio of medians).

On what: the CPU (torch's thread count, or --threads; model, cores, load average at the start and
end printed) or the current CUDA device with --device cuda (name printed). The default CPU run is
small (B=64, N=4096, 4 steps per block, 5 rounds, 2 warm-up steps) and takes about 3 minutes on
an idle 2-core machine; bf16 on a CPU without native bf16 arithmetic is about 10x slower than fp32, so on the CPU
the bf16 pipelines run for ResNet-20 only unless --cpu-bf16-all. The CUDA default is B=128,
N=50,000 (CIFAR's size), 50 steps per block, 5 rounds, 20 warm-up steps, all pipelines and both
models.

Usage:  python bench/train_throughput.py [--device cpu|cuda] [--quick] [--models resnet20,resnet56]
                                         [--batch-size B] [--n N] [--steps S] [--repeats R]
                                         [--warmup W] [--workers K] [--threads T] [--compile]
                                         [--pipelines anchor,reuse,...] [--cpu-bf16-all] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from machine import cpu_model

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reuse.data import DatasetPair, TensorData  # noqa: E402
from reuse.models import build_model  # noqa: E402
from reuse.train import Trainer, seed_everything  # noqa: E402

MEAN, STD = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]  # CIFAR-10's
SGD = {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4}

# name -> recipe keys of reuse's pipeline (None: the anchor)
PIPELINES = {
    "anchor": None,
    "reuse": {"data_on_device": False},
    "+dev": {"data_on_device": True},
    "+dev+cl": {"data_on_device": True, "channels_last": True},
    "+dev+bf16": {"data_on_device": True, "amp": "bf16"},
    "+dev+cl+bf16": {"data_on_device": True, "channels_last": True, "amp": "bf16"},
    "+dev+cl+compile": {"data_on_device": True, "channels_last": True, "compile": True},
    "+dev+cl+bf16+compile": {"data_on_device": True, "channels_last": True, "amp": "bf16", "compile": True},
}


def make_arrays(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, n)


class AnchorDataset(torch.utils.data.Dataset):
    """uint8 CHW images with per-example torchvision transforms (the usual CIFAR pipeline)."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        from torchvision import transforms as T

        self.x, self.y = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
        self.tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(),
                             T.ConvertImageDtype(torch.float32), T.Normalize(MEAN, STD)])

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        return self.tf(self.x[i]), self.y[i]


class Anchor:
    """The standard loop: DataLoader batches to the device, fp32 step, .item() reads every step."""

    def __init__(self, arch: str, x, y, batch_size: int, device: torch.device, workers: int):
        seed_everything(0)
        self.device = device
        self.model = build_model(arch, [3, 32, 32], 10).to(device).train()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=SGD["lr"], momentum=SGD["momentum"],
                                   weight_decay=SGD["weight_decay"])
        self.loader = torch.utils.data.DataLoader(
            AnchorDataset(x, y), batch_size=batch_size, shuffle=True, drop_last=True, num_workers=workers,
            pin_memory=device.type == "cuda", persistent_workers=workers > 0)
        self.stream = self._endless()
        self.loss_sum, self.correct = 0.0, 0

    def _endless(self):
        while True:
            yield from self.loader

    def step(self) -> int:
        x, y = next(self.stream)
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        out = self.model(x)
        loss = F.cross_entropy(out, y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.loss_sum += loss.item() * y.shape[0]
        self.correct += (out.argmax(1) == y).sum().item()
        return y.shape[0]

    def finish(self) -> float:
        return self.loss_sum


class ReusePipeline:
    """reuse's Trainer step on its own batches (TensorData.batches with the recipe's augmentation)."""

    def __init__(self, arch: str, data: DatasetPair, batch_size: int, device: torch.device, keys: dict, tmp: str):
        seed_everything(0)
        model = build_model(arch, [3, 32, 32], 10)
        recipe = {"epochs": 10_000, "batch_size": batch_size, "optimizer": SGD, "schedule": {"name": "constant"},
                  "augment": {"translate": 4, "flip": True}, "drop_last": True, "example_stats": False, **keys}
        self.t = Trainer(model, data, recipe, seed=0, state_dir=tmp, device=device, progress="off", model_spec={})
        self.bs = batch_size
        self.stream = self._endless()
        self.loss_sum, self.correct = 0, 0

    def _endless(self):
        t, epoch = self.t, 0
        while True:
            yield from t.data.train.batches(self.bs, shuffle=True, seed=0, epoch=epoch, augment=t.augment,
                                            drop_last=True)
            epoch += 1

    def step(self) -> int:
        loss, correct, n = self.t._train_step(next(self.stream))
        self.loss_sum, self.correct = self.loss_sum + loss, self.correct + correct
        return n

    def finish(self) -> float:
        return float(self.loss_sum)  # the block's one read of the device


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_model(arch: str, names: list[str], args, device: torch.device, tmp: str) -> dict:
    x, y = make_arrays(args.n)
    fp = {"digest": "bench-train-throughput"}
    split = TensorData(x, y, num_classes=10, mean=MEAN, std=STD, fingerprint=fp)
    data = DatasetPair(name="synthetic-cifar", meta={"num_classes": 10}, train=split, test=split)
    pipes = {}
    for name in names:
        keys = PIPELINES[name]
        pipes[name] = Anchor(arch, x, y, args.batch_size, device, args.workers) if keys is None else \
            ReusePipeline(arch, data, args.batch_size, device, keys, os.path.join(tmp, f"{arch}-{len(pipes)}"))
    warm = {}
    for name, p in pipes.items():
        t0 = time.perf_counter()
        for _ in range(args.warmup):
            p.step()
        p.finish()
        sync(device)
        warm[name] = time.perf_counter() - t0
    rates: dict[str, list[float]] = {k: [] for k in pipes}
    order = list(pipes)
    for r in range(args.repeats):
        for name in order[r % len(order):] + order[:r % len(order)]:
            p = pipes[name]
            sync(device)
            t0 = time.perf_counter()
            n = sum(p.step() for _ in range(args.steps))
            p.finish()
            sync(device)
            rates[name].append(n / (time.perf_counter() - t0))
    res = {"warmup_s": warm, "images_per_s": {k: statistics.median(v) for k, v in rates.items()}, "rounds": rates}
    if "anchor" in rates:
        res["x_anchor"] = {k: statistics.median(a / b for a, b in zip(v, rates["anchor"])) for k, v in rates.items()}
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--quick", action="store_true", help="a smoke run: ResNet-20, B=32, 1 step, 2 rounds")
    p.add_argument("--models", default="resnet20,resnet56")
    p.add_argument("--pipelines", default=None, help="comma-separated (default: all; compile on CUDA only)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--n", type=int, default=None, help="synthetic training examples")
    p.add_argument("--steps", type=int, default=None, help="steps per timed block")
    p.add_argument("--repeats", type=int, default=None, help="rounds of timed blocks")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps per pipeline")
    p.add_argument("--workers", type=int, default=None, help="anchor DataLoader workers (CPU 0, CUDA 8)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--compile", action="store_true", help="add the compile pipeline on the CPU")
    p.add_argument("--cpu-bf16-all", action="store_true", help="run the bf16 pipelines for every model on the CPU")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        p.error("--device cuda: torch sees no CUDA device")
    defaults = dict(batch_size=128, n=50_000, steps=50, repeats=5, warmup=20, workers=8) if cuda else \
        dict(batch_size=64, n=4096, steps=4, repeats=5, warmup=2, workers=0)
    if args.quick:
        defaults.update(batch_size=32, n=512, steps=1, repeats=2, warmup=1)
        if args.models == "resnet20,resnet56":
            args.models = "resnet20"
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if cuda else "cpu")
    names = args.pipelines.split(",") if args.pipelines else \
        [k for k in PIPELINES if "compile" not in k or cuda or args.compile]
    unknown = [n for n in names if n not in PIPELINES]
    if unknown:
        p.error(f"unknown pipelines {unknown}; known: {', '.join(PIPELINES)}")
    if cuda:
        where = f"CUDA {torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    else:
        where = f"CPU {cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"
    load0 = os.getloadavg()
    print("# reuse: training throughput, CIFAR-shaped synthetic data (images/s of training steps)")
    print(f"{where} | torch {torch.__version__} | python {platform.python_version()} | load average at start "
          f"{load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}")
    print(f"B={args.batch_size} N={args.n} (random uint8 32x32x3, 10 classes) | {args.warmup} warm-up steps, "
          f"{args.repeats} rounds of {args.steps} steps | anchor DataLoader workers {args.workers}")
    out = {"device": where, "torch": torch.__version__, "args": vars(args), "load_start": load0, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.models.split(","):
            mine = [n for n in names if "bf16" not in n or cuda or args.cpu_bf16_all or arch == "resnet20"]
            t0 = time.perf_counter()
            res = run_model(arch, mine, args, device, tmp)
            out["models"][arch] = res
            print(f"\n## {arch} ({time.perf_counter() - t0:.0f} s)")
            print(f"{'pipeline':>22} | {'images/s':>9} | {'x anchor':>8} | {'warm-up s':>9}")
            for name in names:
                if name not in res["images_per_s"]:
                    print(f"{name:>22} | {'n/a (bf16 on the CPU: ResNet-20 only; --cpu-bf16-all)':>30}")
                    continue
                ratio = res.get("x_anchor", {}).get(name)
                print(f"{name:>22} | {res['images_per_s'][name]:9.1f} | "
                      f"{f'{ratio:.2f}x' if ratio is not None else 'n/a':>8} | {res['warmup_s'][name]:9.1f}")
    load1 = os.getloadavg()
    out["load_end"] = load1
    print(f"\nload average at end {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
