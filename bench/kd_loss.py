"""Benchmark of the knowledge-distillation loss op, reuse.ops.kd_loss.

What is measured: one forward + backward of the distillation loss

    mean_i [alpha T^2 KL(softmax(t_i / T) || softmax(s_i / T)) + (1 - alpha) CE(s_i, y_i)]

with float32 student logits s (requires grad), float16 teacher logits t (as a
logit cache stores them), int64 targets, T = 4, alpha = 0.9, for batch x
classes shapes (256, 10), (256, 100), (128, 1000) and (4096, 32000), by three
implementations in the same run:

* `reuse.ops`  - reuse.ops.kd_loss, the compiled kernels of reuse._C (forward
                 saves per-row statistics; backward is one pass over s and t);
* `eager`      - the textbook formula in eager PyTorch, kd_loss_reference
                 (F.log_softmax, F.kl_div, F.cross_entropy), checks off;
* `compile`    - the same formula under torch.compile (inductor, static shapes).

On what: the CPU of the machine it runs on, with torch's default thread count
(model, cores, threads and load average are printed), and the current CUDA
device when there is one (same table). Results are noisy on a shared machine:
compare the implementations within one run, not across runs.

Timing: each sample is one call `loss = f(s, t, y); loss.backward()` (CUDA:
synchronised before and after). Implementations are interleaved round-robin,
so load from other processes hits all of them alike; each keeps sampling until
it has `--min-time` seconds of samples (at least `--min-reps`), the largest
shape `--repeats` samples. Reported: the median, after 2 warm-up calls (which
also absorb torch.compile's compile time). Before timing, every
implementation's loss and gradient are checked against the eager formula.

Bandwidth: effective GB/s counts the bytes that must move, read s and t in the
forward, read s and t and write the gradient in the backward: B C (2 |s| + 2 |t|
+ |s|) bytes for element sizes |s|, |t| (16 bytes per element here). The
machine's copy bandwidth is measured in the same run on a float32 tensor the
size of the largest student: `x.clone()` (a fresh allocation, so it pays the
page faults a new gradient pays too) and `y.copy_(x)` into an existing tensor
(steady state), both as (read + write bytes) / time; the goal's reference is a
clone of s timed round-robin with the largest shape's calls (same load).

Memory: peak extra memory of one forward + backward (inputs already exist,
the gradient counts). CPU: the process's peak resident set (VmHWM, reset
through /proc/self/clear_refs) minus its resident set before the call, after
mallopt(M_MMAP_THRESHOLD, 64 KiB) so that every buffer of 64 KiB or more is
its own mmap and is returned on free; the kernel's per-thread RSS counters
make this exact only to about 0.25 MiB: smaller readings print as below
that resolution (the three smaller shapes' gradients are 0.01 to 0.5 MiB).
CUDA: torch.cuda.max_memory_allocated minus memory_allocated before.

Goals (checked and printed per device): at least 2x eager and faster than
compile at every shape; at the largest shape at least 70% of the clone
bandwidth; peak extra memory at most one gradient-sized buffer (+1 MiB).

Usage:  python bench/kd_loss.py [--device cpu|cuda|all] [--min-time 1.0] [--repeats 5]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import platform
import statistics
import time

import torch
from machine import cpu_model

import reuse.ops as ops
from reuse.ops import kd_loss, kd_loss_reference

SHAPES = [(256, 10), (256, 100), (128, 1000), (4096, 32000)]
# CPU peak-memory readings below this are within the RSS counters' error.
RSS_RESOLUTION = 256 * 1024
TEMPERATURE = 4.0
ALPHA = 0.9


def eager(s, t, y):
    return kd_loss_reference(s, t, y, TEMPERATURE, ALPHA, check=False)


def ours(s, t, y):
    return kd_loss(s, t, y, TEMPERATURE, ALPHA)


def implementations() -> dict:
    impls = {}
    if ops.BACKEND == "compiled":
        impls["reuse.ops"] = ours
    impls["eager"] = eager
    impls["compile"] = torch.compile(eager, dynamic=False)
    return impls


def make_inputs(batch: int, classes: int, device: str):
    g = torch.Generator().manual_seed(batch * 100003 + classes)
    s = (torch.randn(batch, classes, generator=g) * 4).to(device).requires_grad_()
    t = (torch.randn(batch, classes, generator=g) * 4).half().to(device)
    y = torch.randint(0, classes, (batch,), generator=g).to(device)
    return s, t, y


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def fwd_bwd(fn, s, t, y):
    s.grad = None
    loss = fn(s, t, y)
    loss.backward()
    return loss


def time_round_robin(impls: dict, s, t, y, device: str, min_time: float, min_reps: int, max_reps: int,
                     with_clone: bool = False):
    """Median seconds per forward + backward of each implementation, interleaved.

    with_clone adds a "clone" entry: one s.clone() per round, so that the copy
    bandwidth is measured under the same load as the implementations.
    """
    calls = {name: (lambda fn=fn: fwd_bwd(fn, s, t, y)) for name, fn in impls.items()}
    if with_clone:
        x = s.detach()
        calls["clone"] = lambda: x.clone()
    for call in calls.values():
        for _ in range(2):
            call()
    sync(device)
    samples: dict[str, list[float]] = {name: [] for name in calls}
    spent = dict.fromkeys(calls, 0.0)
    while True:
        active = [n for n in calls if len(samples[n]) < max_reps and (len(samples[n]) < min_reps or spent[n] < min_time)]
        if not active:
            break
        for name in active:
            sync(device)
            t0 = time.perf_counter()
            out = calls[name]()
            sync(device)
            dt = time.perf_counter() - t0
            del out
            samples[name].append(dt)
            spent[name] += dt
    return {name: statistics.median(v) for name, v in samples.items()}, {n: len(v) for n, v in samples.items()}


def check_agreement(impls: dict, s, t, y) -> None:
    ref = fwd_bwd(eager, s, t, y).detach()
    ref_grad = s.grad.clone()
    for name, fn in impls.items():
        loss = fwd_bwd(fn, s, t, y).detach()
        torch.testing.assert_close(loss, ref, rtol=1e-4, atol=1e-5, msg=lambda m: f"{name} loss: {m}")
        torch.testing.assert_close(s.grad, ref_grad, rtol=1e-4, atol=1e-7, msg=lambda m: f"{name} grad: {m}")
    s.grad = None


def copy_bandwidth(numel: int, device: str) -> tuple[float, float]:
    """(clone GB/s, copy_ GB/s) on a float32 tensor of numel elements; read + write bytes."""
    x = torch.randn(numel, device=device)
    nbytes = 2 * x.numel() * x.element_size()
    times = []
    for _ in range(7):
        sync(device)
        t0 = time.perf_counter()
        c = x.clone()
        sync(device)
        times.append(time.perf_counter() - t0)
        del c
    clone_gbs = nbytes / statistics.median(times) / 1e9
    out = torch.empty_like(x)
    times = []
    for _ in range(7):
        sync(device)
        t0 = time.perf_counter()
        out.copy_(x)
        sync(device)
        times.append(time.perf_counter() - t0)
    copy_gbs = nbytes / statistics.median(times) / 1e9
    del x, out
    return clone_gbs, copy_gbs


# ------------------------------------------------------------------ peak memory

_MMAP_SET = False


def _rss_field(key: str) -> int:
    with open("/proc/self/status", encoding="utf-8") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def peak_extra_bytes(fn, s, t, y, device: str) -> int | None:
    """Peak extra memory of one forward + backward, in bytes (None if not measurable)."""
    global _MMAP_SET
    fwd_bwd(fn, s, t, y)
    s.grad = None
    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fwd_bwd(fn, s, t, y)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        s.grad = None
        return peak
    try:
        if not _MMAP_SET:
            libc = ctypes.CDLL("libc.so.6")
            m_mmap_threshold = -3
            if libc.mallopt(m_mmap_threshold, 64 * 1024) != 1:
                return None
            _MMAP_SET = True
        readings = []
        for _ in range(3):
            s.grad = None
            with open("/proc/self/clear_refs", "w", encoding="utf-8") as f:
                f.write("5")  # resets VmHWM to the current RSS
            base = _rss_field("VmRSS:")
            fwd_bwd(fn, s, t, y)
            readings.append(_rss_field("VmHWM:") - base)
        s.grad = None
        return min(readings)
    except OSError:
        return None


# -------------------------------------------------------------------- reporting


def bench_device(device: str, args) -> list[str]:
    impls = implementations()
    names = list(impls)
    print(f"\n## {device}")
    if device == "cuda":
        print(f"GPU: {torch.cuda.get_device_name()}")
    largest = max(b * c for b, c in SHAPES)
    clone_gbs, copy_gbs = copy_bandwidth(largest, device)
    print(f"copy bandwidth (float32, {largest * 4 / 2**20:.0f} MiB, read+write): clone {clone_gbs:.1f} GB/s, "
          f"copy_ into existing {copy_gbs:.1f} GB/s (the goal uses the clone timed with the largest shape)")
    if hasattr(os, "getloadavg"):
        print("load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    print("\nforward + backward, median per call; (x eager) = eager median / this median\n")
    header = f"{'shape':>11} | " + " | ".join(f"{n:>28}" for n in names) + " | vs compile | GB/s (reuse.ops)"
    print(header)
    print("-" * len(header))
    results = {}
    for batch, classes in SHAPES:
        s, t, y = make_inputs(batch, classes, device)
        check_agreement(impls, s, t, y)
        large = batch * classes == largest
        med, reps = time_round_robin(
            impls, s, t, y, device,
            min_time=0.0 if large else args.min_time,
            min_reps=args.repeats if large else args.min_reps,
            max_reps=args.repeats if large else 100000,
            with_clone=large,
        )
        if large:
            clone_rr = 2 * s.numel() * s.element_size() / med.pop("clone") / 1e9
            reps.pop("clone")
            print(f"{'':>11}   (clone of s, interleaved with the calls above: {clone_rr:.1f} GB/s)")
            clone_gbs = clone_rr
        nbytes = batch * classes * (3 * s.element_size() + 2 * t.element_size())
        cells = [f"{med[n] * 1e3:9.3f} ms ({med['eager'] / med[n]:5.2f}x) n={reps[n]:<4d}" for n in names]
        vs_compile = med["compile"] / med["reuse.ops"] if "reuse.ops" in med else float("nan")
        gbs = nbytes / med["reuse.ops"] / 1e9 if "reuse.ops" in med else float("nan")
        print(f"{f'{batch}x{classes}':>11} | " + " | ".join(f"{c:>28}" for c in cells)
              + f" | {vs_compile:9.2f}x | {gbs:6.2f} ({gbs / clone_gbs * 100:4.0f}% clone, {gbs / copy_gbs * 100:3.0f}% copy_)")
        results[(batch, classes)] = dict(med=med, gbs=gbs)
        del s, t, y

    print("\npeak extra memory per forward + backward, MiB (x gradient size)\n")
    print(f"{'shape':>11} | " + " | ".join(f"{n:>24}" for n in names))
    mem = {}
    for batch, classes in SHAPES:
        s, t, y = make_inputs(batch, classes, device)
        grad_bytes = batch * classes * s.element_size()
        cells = []
        for name in names:
            b = peak_extra_bytes(impls[name], s, t, y, device)
            mem[(batch, classes, name)] = (b, grad_bytes)
            if b is None:
                cells.append("n/a")
            elif b < RSS_RESOLUTION:
                cells.append(f"< {RSS_RESOLUTION / 2**20:.2f} (resolution)" if device == "cpu" else f"{b / 2**20:9.2f}")
            else:
                cells.append(f"{b / 2**20:9.2f} ({b / grad_bytes:5.2f}x)")
        print(f"{f'{batch}x{classes}':>11} | " + " | ".join(f"{c:>24}" for c in cells))
        del s, t, y

    if "reuse.ops" not in names:
        return [f"{device}: reuse._C is not built; no goals checked"]
    lines = []
    ok_eager = all(r["med"]["eager"] / r["med"]["reuse.ops"] >= 2.0 for r in results.values())
    ok_compile = all(r["med"]["compile"] > r["med"]["reuse.ops"] for r in results.values())
    big = results[max(results, key=lambda k: k[0] * k[1])]
    ok_bw = big["gbs"] >= 0.7 * clone_gbs
    ok_mem = all(
        b is not None and b <= g + 2**20 for (bb, cc, n), (b, g) in mem.items() if n == "reuse.ops"
    )
    worst_eager = min(r["med"]["eager"] / r["med"]["reuse.ops"] for r in results.values())
    worst_compile = min(r["med"]["compile"] / r["med"]["reuse.ops"] for r in results.values())
    lines.append(f"{device}: >= 2x eager at every shape: {'MET' if ok_eager else 'NOT MET'} (worst {worst_eager:.2f}x)")
    lines.append(f"{device}: faster than torch.compile at every shape: {'MET' if ok_compile else 'NOT MET'} "
                 f"(worst {worst_compile:.2f}x)")
    lines.append(f"{device}: >= 70% of clone bandwidth at the largest shape: {'MET' if ok_bw else 'NOT MET'} "
                 f"({big['gbs']:.2f} GB/s = {big['gbs'] / clone_gbs * 100:.0f}% of clone {clone_gbs:.1f} GB/s; "
                 f"{big['gbs'] / copy_gbs * 100:.0f}% of copy_ {copy_gbs:.1f} GB/s)")
    resolved = [f"{bb}x{cc}" for (bb, cc, n), (b, g) in mem.items()
                if n == "reuse.ops" and b is not None and (device == "cuda" or b >= RSS_RESOLUTION)]
    lines.append(f"{device}: peak extra memory <= one gradient (+1 MiB): {'MET' if ok_mem else 'NOT MET'} "
                 f"(resolved at {', '.join(resolved) or 'no shape'}; others below the method's resolution)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    parser.add_argument("--min-time", type=float, default=1.0, help="seconds of samples per implementation and shape")
    parser.add_argument("--min-reps", type=int, default=10, help="at least this many samples (small shapes)")
    parser.add_argument("--repeats", type=int, default=5, help="samples at the largest shape")
    args = parser.parse_args()

    print(f"# reuse.ops.kd_loss forward + backward: float32 student, float16 teacher logits, T={TEMPERATURE}, "
          f"alpha={ALPHA}")
    print(f"torch {torch.__version__} | python {platform.python_version()} | {platform.machine()}")
    print(f"CPU: {cpu_model()} | cores {os.cpu_count()} | torch threads {torch.get_num_threads()}")
    print(f"backend: {ops.backend_info()}")

    summary = []
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    for device in devices:
        if device == "cuda" and not torch.cuda.is_available():
            print("\n## cuda\nskipped: no CUDA device")
            continue
        summary += bench_device(device, args)
    print("\n## goals")
    for line in summary:
        print(line)


if __name__ == "__main__":
    main()
