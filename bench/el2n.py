"""Benchmark of the EL2N score op, reuse.ops.el2n.

Measures the forward time of three implementations of the per-example EL2N
score || softmax(logits_i) - onehot(targets_i) ||_2 on float32 logits:

* `reuse.ops.el2n`      - the compiled kernel in reuse._C (if built);
* `reference`           - the eager pure-PyTorch reference, el2n_reference;
* `reference+compile`   - the same reference under torch.compile (inductor),
                          with argument checks off so it compiles to one graph.

for batch x classes shapes (256, 10), (256, 100), (128, 1000) and (4096, 32000),
on the CPU and, when available, on CUDA. Each timing is the median of repeated
calls after warm-up calls (which also absorb torch.compile's compile time);
CUDA timings synchronise the device around every call. Ratios are the eager
reference's median divided by each implementation's, from the same run. Before
timing, each implementation's output is checked against the eager reference.

Usage:  python bench/el2n.py [--device cpu|cuda|all] [--min-time 0.5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
from machine import cpu_model

import reuse.ops as ops
from reuse.ops import el2n, el2n_reference

SHAPES = [(256, 10), (256, 100), (128, 1000), (4096, 32000)]


def reference_unchecked(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return el2n_reference(logits, targets, check=False)


def median_time(fn, args, device: str, min_time: float, min_reps: int = 5, max_reps: int = 200) -> float:
    """Median seconds per call after three warm-up calls."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(3):
        fn(*args)
    sync()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_reps and (len(times) < min_reps or time.perf_counter() - start < min_time):
        t0 = time.perf_counter()
        fn(*args)
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def implementations():
    impls = {}
    if ops.BACKEND == "compiled":
        impls["reuse.ops.el2n"] = el2n
    impls["reference"] = reference_unchecked
    impls["reference+compile"] = torch.compile(reference_unchecked, dynamic=False)
    return impls


def bench_device(device: str, min_time: float) -> None:
    impls = implementations()
    print(f"\n## {device}")
    if device == "cuda":
        print(f"GPU: {torch.cuda.get_device_name()}")
    header = f"{'shape':>14} | " + " | ".join(f"{name:>24}" for name in impls)
    print(header)
    print("-" * len(header))
    gen = torch.Generator().manual_seed(0)
    for batch, classes in SHAPES:
        logits = (torch.randn(batch, classes, generator=gen) * 4).to(device)
        targets = torch.randint(0, classes, (batch,), generator=gen).to(device)
        expected = el2n_reference(logits, targets)
        times = {}
        for name, fn in impls.items():
            out = fn(logits, targets)
            torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
            times[name] = median_time(fn, (logits, targets), device, min_time)
        base = times["reference"]
        cells = [f"{t * 1e3:9.3f} ms ({base / t:6.2f}x)" for t in times.values()]
        print(f"{f'{batch}x{classes}':>14} | " + " | ".join(f"{c:>24}" for c in cells))
        del logits, targets, expected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    parser.add_argument("--min-time", type=float, default=0.5, help="seconds of timed calls per cell")
    args = parser.parse_args()

    print("# reuse.ops.el2n forward, float32 logits; median per call, (x) = speed-up over eager reference")
    print(f"torch {torch.__version__} | python {platform.python_version()} | {platform.machine()}")
    print(f"CPU: {cpu_model()} | cores {os.cpu_count()} | torch threads {torch.get_num_threads()}")
    if hasattr(os, "getloadavg"):
        print("load average at start: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    print(f"backend: {ops.backend_info()}")

    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    for device in devices:
        if device == "cuda" and not torch.cuda.is_available():
            print("\n## cuda\nskipped: no CUDA device")
            continue
        bench_device(device, args.min_time)


if __name__ == "__main__":
    main()
