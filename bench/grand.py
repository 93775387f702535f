"""Benchmark of exact per-example gradient norms (GraNd scoring), reuse.ops.per_example_grad_norms.

What is measured: the time and peak extra memory to compute, for every example i of a batch,

    || d/dtheta CE(f(x_i; theta), y_i) ||_2      over all trainable parameters theta

(the example's own, unscaled cross-entropy gradient; float32; model in eval mode, so BatchNorm uses
its running statistics and its affine weight and bias count as parameters), on four workloads:

* `mlp`           - B=256, MLP 784-1200-1200-10 (registry `mlp`, hidden [1200, 1200]: the
                    Hinton teacher's shape without its dropout, which eval mode drops anyway);
* `resnet20-c10`  - B=128, ResNet-20 (registry `resnet20`, option-A shortcuts), 10 classes, [B,3,32,32];
* `resnet20-c100` - the same with 100 classes;
* `resnet56-c10`  - B=64, ResNet-56, 10 classes.

BatchNorm running statistics are put in a non-trivial state first (the cumulative average of three
train-mode forwards of 64 random inputs), BN weights are drawn from 1 + 0.2 N(0, 1) and biases from
0.2 N(0, 1), and the last BN weight of each residual branch is halved (as training tends to leave
it, cf. zero-gamma init): with all BN weights near 1 the random ResNet-56 explodes (logits so large
that some per-example norms are 0 in float32 and others 1e5), halved its norms are 14 to 75.
Then every model is in eval mode. Implementations, each returning the norms [B]:

1. `floor`        - one batched forward + mean cross-entropy + loss.backward() computing the weight
                    gradients: the cost of an ordinary training step's gradient; it produces no norms
                    and is the 1.0x of every ratio;
2. `reuse`        - reuse.ops.per_example_grad_norms(model, inputs, targets) (marked missing while
                    the op does not exist);
3. `loop`         - each example alone: forward, torch.autograd.grad over the trainable parameters,
                    norm; timed on the first --loop-examples K examples (default 16; 0: all) and
                    scaled by B/K, as the table says; run on the whole batch it is the numerical
                    reference of the checks;
4. `torch.func`   - vmap(grad(functional_call(model, (params, buffers), x_i))) over the batch, then norms;
5. `opacus`       - Opacus GradSampleModule (hooks mode): per-sample gradients, then norms;
6. `opacus-ghost` - Opacus GradSampleModuleFastGradientClipping (ghost clipping: Linear layers get
                    norms without per-sample gradients, others per-sample gradients) and its
                    get_norm_sample() after the first backward of its two-pass scheme;
7. `backpack`     - BackPACK: extend(model); with backpack(BatchL2Grad()): loss.backward(); the norm
                    is sqrt of the sum over parameters of param.batch_l2.

Opacus rejects BatchNorm (buffers) and only hooks modules in train mode: its model is a copy in which
every BatchNorm is replaced by `FrozenBatchNorm`, xhat = x * scale[c] + shift[c] with scale and shift
from the running statistics (plain tensors, not buffers), y = xhat * weight[c] + bias[c] with BN's own
weight and bias, registered with an exact Opacus grad sampler; that copy has no layer whose train and
eval modes differ, so it runs in train mode and computes the eval-mode model. In-place ReLUs are made
out-of-place in the Opacus and BackPACK copies (module backward hooks reject outputs modified in
place); BackPACK keeps the eval-mode BatchNorm, which it supports. Each implementation's norms are
checked once per workload against the per-example loop on the whole batch (max relative error
over the examples, printed); above 1e-3 the implementation is marked WRONG and cannot be the best
anchor. Correct float32 implementations of the ResNets differ from the loop by a few 1e-4, not 1e-7:
ReLU inputs within rounding of zero switch sides between a batched and a one-example forward, which
changes the gradient by a whole unit's contribution (with softplus for ReLU they agree to 1e-7; a
float64 loop is as far from either). That check's call also serves as a first warm-up. An anchor
that cannot run prints "n/a (reason)"; a missing bench-only extra (bench/requirements.txt)
prints "n/a (pip install --no-deps -r bench/requirements.txt)".

On what: the CPU of the machine it runs on with torch's default thread count or --threads (model,
cores, threads, load average at start and end printed), or the current CUDA device with --device
cuda. Results are noisy on a shared machine: compare implementations within one run, not across
runs. The default run should take about 6 minutes on an idle 2-core machine (an estimate from the
least-loaded calls, not a measurement; the per-example loop is timed on 16 examples and scaled);
under a load average of about 5 it took 35 minutes.

Timing: the implementations of a workload are interleaved, so load from other processes hits all
of them alike: after --warmup untimed calls each (the check's call is the first), --repeats rounds;
in a round every implementation is timed once, each call right after a floor call (the order
rotates from round to round). Reported: the median per call (CUDA: synchronised before and after
each call) and "x floor", the median over rounds of (the call's time / the time of the floor call
just before it): on this shared machine the load changes within seconds, and a ratio of neighbours
is far steadier than a ratio of medians taken minutes apart. Freeing a call's gradients and norms
happens between calls, outside the timing. The best anchor is the correct anchor with the lowest
x floor; reuse's speed-up over it is the ratio of their x floor.

Memory: peak extra memory of one call, relative to the floor's. CPU: every (workload, implementation)
runs in a fresh subprocess, which sets mallopt(M_MMAP_THRESHOLD, 64 KiB) (buffers of 64 KiB or more
are their own mmaps and go back to the system when freed), builds the model and inputs and the
implementation, makes one warm-up call and frees its results; then it resets the peak resident set
(VmHWM, through /proc/self/clear_refs), reads its resident set, makes one call, and reports
VmHWM - that resident set (resolution about 0.25 MiB). Without /proc/self/clear_refs it falls back to
ru_maxrss (peak since process start) minus the resident set after the build, marked "(maxrss)".
CUDA: torch.cuda.max_memory_allocated after reset_peak_memory_stats, minus memory_allocated before
the call, in this process.

Goals (printed at the end, PASS/FAIL each): reuse <= 1.1x the floor on every workload; reuse at least
1.25x faster than the best anchor (the fastest correct one of implementations 3-7) on every workload.

Usage:  python bench/grand.py [--device cpu|cuda] [--repeats 5] [--warmup 1] [--loop-examples 16]
                              [--workloads mlp,resnet20-c10,...] [--impls floor,reuse,...]
                              [--threads N] [--no-memory] [--json PATH]
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import gc
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from machine import cpu_model

from reuse.models import build_model

try:
    import reuse.ops as ops
    _OPS_ERROR: str | None = None
except Exception as exc:  # a broken reuse.ops must not stop the anchors
    ops = None
    _OPS_ERROR = f"{type(exc).__name__}: {exc}"

# Opacus and BackPACK hook modules whose inputs (the batch) need no gradient: expected here.
warnings.filterwarnings("ignore", message="Full backward hook is firing")
# BackPACK on a ResNet block: its parameters belong to child layers, which BackPACK handles.
warnings.filterwarnings("ignore", message="Extension saving to batch_l2 does not have an extension for Module")

EXTRA_HINT = "pip install --no-deps -r bench/requirements.txt"
WRONG_RTOL = 1e-3
RSS_RESOLUTION = 256 * 1024


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    arch: str
    args: dict
    input_shape: tuple
    classes: int
    batch: int


WORKLOADS = [
    Workload("mlp", "MLP 784-1200-1200-10, B=256", "mlp", {"hidden": [1200, 1200]}, (784,), 10, 256),
    Workload("resnet20-c10", "ResNet-20, 10 classes, B=128", "resnet20", {}, (3, 32, 32), 10, 128),
    Workload("resnet20-c100", "ResNet-20, 100 classes, B=128", "resnet20", {}, (3, 32, 32), 100, 128),
    Workload("resnet56-c10", "ResNet-56, 10 classes, B=64", "resnet56", {}, (3, 32, 32), 10, 64),
]
IMPLS = ["floor", "reuse", "loop", "torch.func", "opacus", "opacus-ghost", "backpack"]
ANCHORS = ["loop", "torch.func", "opacus", "opacus-ghost", "backpack"]


class Unavailable(Exception):
    """An implementation that cannot run here; str() is the table cell's reason."""


# ----------------------------------------------------------------------------- workloads


def make_workload(w: Workload, device: str):
    """(eval-mode model, inputs, targets): seeded, BN statistics non-trivial."""
    torch.manual_seed(0)
    model = build_model(w.arch, w.input_shape, w.classes, **w.args).to(device)
    g = torch.Generator().manual_seed(1)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if bns:
        with torch.no_grad():
            for m in bns:
                m.momentum = None  # cumulative average over the batches below
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
            for m in model.modules():
                if hasattr(m, "bn2") and hasattr(m, "conv2"):  # residual block: scale its branch's last BN
                    m.bn2.weight.mul_(0.5)
            model.train()
            for _ in range(3):
                model(torch.randn((64, *w.input_shape), generator=g).to(device))
            for m in bns:
                m.momentum = 0.1
    model.eval()
    x = torch.randn((w.batch, *w.input_shape), generator=g).to(device)
    y = torch.randint(0, w.classes, (w.batch,), generator=g).to(device)
    return model, x, y


def trainable(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def clear_grads(model: nn.Module) -> None:
    for p in model.parameters():
        p.grad = None
        for attr in ("grad_sample", "_norm_sample", "batch_l2"):
            if getattr(p, attr, None) is not None:
                setattr(p, attr, None)  # Opacus expects the attributes to stay


def out_of_place_relus(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    return model


# ----------------------------------------------------------------------------- implementations
# make_<impl>(model, x, y, loop_examples) -> (call, cleanup); call() returns the norms [B] (floor: None).


def make_floor(model, x, y, loop_examples):
    def call():
        F.cross_entropy(model(x), y).backward()

    return call, lambda: clear_grads(model)


def make_reuse(model, x, y, loop_examples):
    if ops is None:
        raise Unavailable(f"missing: import reuse.ops failed ({_OPS_ERROR})")
    fn = getattr(ops, "per_example_grad_norms", None)
    if fn is None:
        raise Unavailable("missing: reuse.ops.per_example_grad_norms not implemented yet")
    m = copy.deepcopy(model)
    return (lambda: fn(m, x, y)), (lambda: clear_grads(m))


def loop_norms(model, x, y, n: int) -> torch.Tensor:
    params = trainable(model)
    out = torch.empty(n, device=x.device, dtype=torch.float32)
    for i in range(n):
        loss = F.cross_entropy(model(x[i : i + 1]), y[i : i + 1])
        grads = torch.autograd.grad(loss, params)
        out[i] = torch.stack([gr.pow(2).sum() for gr in grads]).sum().sqrt()
    return out


def make_loop(model, x, y, loop_examples):
    n = x.shape[0] if not loop_examples else min(loop_examples, x.shape[0])
    return (lambda: loop_norms(model, x, y, n)), (lambda: None)


def make_torch_func(model, x, y, loop_examples):
    from torch.func import functional_call, grad, vmap

    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def loss_one(p, b, xi, yi):
        out = functional_call(model, (p, b), (xi.unsqueeze(0),))
        return F.cross_entropy(out, yi.unsqueeze(0))

    per_example = vmap(grad(loss_one), in_dims=(None, None, 0, 0))

    def call():
        grads = per_example(params, buffers, x, y)
        sq = [gr.reshape(gr.shape[0], -1).pow(2).sum(1) for gr in grads.values()]
        return torch.stack(sq).sum(0).sqrt()

    return call, lambda: None


class FrozenBatchNorm(nn.Module):
    """Eval-mode BatchNorm without buffers (bench-only, for Opacus): xhat = x * scale + shift
    (scale, shift from BN's running statistics, held as plain tensors), y = xhat * weight + bias."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm):
        super().__init__()
        inv_std = torch.rsqrt(bn.running_var.detach().float() + bn.eps)
        self.scale = inv_std.clone()
        self.shift = (-bn.running_mean.detach().float() * inv_std).clone()
        self.weight = nn.Parameter(bn.weight.detach().clone())
        self.bias = nn.Parameter(bn.bias.detach().clone())

    def _view(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return t.view((1, -1) + (1,) * (x.dim() - 2))

    def xhat(self, x: torch.Tensor) -> torch.Tensor:
        return x * self._view(self.scale, x) + self._view(self.shift, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.xhat(x) * self._view(self.weight, x) + self._view(self.bias, x)


_OPACUS_REGISTERED = False


def _register_frozen_bn() -> None:
    global _OPACUS_REGISTERED
    if _OPACUS_REGISTERED:
        return
    from opacus.grad_sample import register_grad_sampler

    @register_grad_sampler(FrozenBatchNorm)
    def _frozen_bn_grad_sample(layer, activations, backprops):
        x, g = activations[0], backprops
        out = {}
        if layer.weight.requires_grad:
            out[layer.weight] = (layer.xhat(x) * g).flatten(2).sum(2) if x.dim() > 2 else layer.xhat(x) * g
        if layer.bias.requires_grad:
            out[layer.bias] = g.flatten(2).sum(2) if g.dim() > 2 else g
        return out

    _OPACUS_REGISTERED = True


def opacus_copy(model: nn.Module) -> nn.Module:
    """A copy with every BatchNorm frozen into FrozenBatchNorm and ReLUs out of place, in train mode."""
    m = out_of_place_relus(copy.deepcopy(model))

    def swap(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                if not child.affine or not child.track_running_stats:
                    raise Unavailable("BatchNorm without affine or running stats")
                setattr(parent, name, FrozenBatchNorm(child))
            else:
                swap(child)

    swap(m)
    return m.train()


def _require(module: str) -> None:
    try:
        __import__(module)
    except ImportError as exc:
        raise Unavailable(f"n/a ({EXTRA_HINT})") from exc


def make_opacus(model, x, y, loop_examples):
    _require("opacus")
    from opacus.grad_sample import GradSampleModule

    _register_frozen_bn()
    m = opacus_copy(model)
    gsm = GradSampleModule(m, batch_first=True, loss_reduction="sum", strict=True)
    params = trainable(m)

    def call():
        F.cross_entropy(gsm(x), y, reduction="sum").backward()
        sq = [p.grad_sample.reshape(p.grad_sample.shape[0], -1).pow(2).sum(1) for p in params]
        return torch.stack(sq).sum(0).sqrt()

    return call, lambda: clear_grads(m)


def make_opacus_ghost(model, x, y, loop_examples):
    _require("opacus")
    from opacus.grad_sample import GradSampleModuleFastGradientClipping

    _register_frozen_bn()
    m = opacus_copy(model)
    gsm = GradSampleModuleFastGradientClipping(m, batch_first=True, loss_reduction="sum", strict=True,
                                               max_grad_norm=1.0, use_ghost_clipping=True)

    def call():
        F.cross_entropy(gsm(x), y, reduction="sum").backward()
        return gsm.get_norm_sample()

    return call, lambda: clear_grads(m)


def make_backpack(model, x, y, loop_examples):
    _require("backpack")
    from backpack import backpack, extend
    from backpack.extensions import BatchL2Grad

    m = extend(out_of_place_relus(copy.deepcopy(model)).eval())
    params = trainable(m)

    def call():
        loss = F.cross_entropy(m(x), y, reduction="sum")
        with backpack(BatchL2Grad()):
            loss.backward()
        missing = [i for i, p in enumerate(params) if getattr(p, "batch_l2", None) is None]
        if missing:
            raise Unavailable(f"no batch_l2 on {len(missing)} of {len(params)} parameters")
        return torch.stack([p.batch_l2 for p in params]).sum(0).sqrt()

    return call, lambda: clear_grads(m)


MAKERS = {
    "floor": make_floor,
    "reuse": make_reuse,
    "loop": make_loop,
    "torch.func": make_torch_func,
    "opacus": make_opacus,
    "opacus-ghost": make_opacus_ghost,
    "backpack": make_backpack,
}


def short_reason(exc: BaseException) -> str:
    if isinstance(exc, Unavailable):
        s = str(exc)
        return s if s.startswith(("n/a", "missing")) else f"n/a ({s})"
    msg = " ".join(str(exc).split())
    if len(msg) > 110:
        msg = msg[:107] + "..."
    return f"n/a ({type(exc).__name__}: {msg})"


# ----------------------------------------------------------------------------- timing


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_round_robin(calls: dict, device: str, warmup: int, repeats: int):
    """Samples of every implementation, each call preceded by a floor call (its pair).

    Returns (samples, pairs): samples[name] the seconds per call (floor: all its calls), pairs[name]
    the floor call's seconds just before each of name's. The order of the implementations rotates
    from round to round.
    """

    def timed(name: str) -> float:
        call, cleanup = calls[name]
        sync(device)
        t0 = time.perf_counter()
        out = call()
        sync(device)
        dt = time.perf_counter() - t0
        del out
        cleanup()
        return dt

    for call, cleanup in calls.values():
        for _ in range(warmup):
            out = call()
            sync(device)
            del out
            cleanup()
    others = [n for n in calls if n != "floor"]
    samples: dict[str, list[float]] = {name: [] for name in calls}
    pairs: dict[str, list[float]] = {name: [] for name in others}
    for r in range(repeats):
        k = r % len(others) if others else 0
        for name in others[k:] + others[:k]:
            f = timed("floor")
            samples["floor"].append(f)
            pairs[name].append(f)
            samples[name].append(timed(name))
        if not others:
            samples["floor"].append(timed("floor"))
    return samples, pairs


# ----------------------------------------------------------------------------- memory


def _status_bytes(key: str) -> int:
    with open("/proc/self/status", encoding="utf-8") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def mem_worker(spec: dict) -> dict:
    """In a fresh process: peak extra resident memory of one call of one implementation."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD
    except OSError:
        pass
    w = next(w for w in WORKLOADS if w.name == spec["workload"])
    model, x, y = make_workload(w, "cpu")
    gc.collect()
    rss_build = _status_bytes("VmRSS:")
    try:
        call, cleanup = MAKERS[spec["impl"]](model, x, y, spec["loop_examples"])
        out = call()
        del out
        cleanup()
    except Exception as exc:
        return {"error": short_reason(exc)}
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w", encoding="utf-8") as f:
            f.write("5")  # resets VmHWM to the current RSS
        method = "vmhwm"
        base = _status_bytes("VmRSS:")
    except OSError:
        method = "maxrss"
        base = rss_build
    out = call()
    if method == "vmhwm":
        peak = _status_bytes("VmHWM:")
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    del out
    cleanup()
    return {"extra": peak - base, "method": method, "rss_build": rss_build, "base": base}


def measure_memory_cpu(workload: str, impl: str, loop_examples: int) -> dict:
    spec = json.dumps({"workload": workload, "impl": impl, "loop_examples": loop_examples})
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--mem-worker", spec,
                           "--threads", str(torch.get_num_threads())],
                          capture_output=True, text=True, timeout=900)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = " ".join((proc.stderr or "").strip().splitlines()[-1:])
        return {"error": f"n/a (memory subprocess failed, rc={proc.returncode}: {tail[:100]})"}
    return json.loads(lines[-1])


def measure_memory_cuda(call, cleanup) -> dict:
    out = call()
    del out
    cleanup()
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = call()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    del out
    cleanup()
    return {"extra": peak - base, "method": "cuda", "base": base}


# ----------------------------------------------------------------------------- the run


@dataclass
class Cell:
    status: str = "ok"  # ok | WRONG | n/a | missing
    reason: str = ""
    median: float | None = None
    samples: list = field(default_factory=list)
    scaled_from: int | None = None  # loop: timed on this many examples, scaled to B
    rel_err: float | None = None
    mem: dict | None = None
    x_floor: float | None = None  # median over rounds of (this call / the floor call just before it)
    floor_pairs: list = field(default_factory=list)


def bench_workload(w: Workload, device: str, impls: list[str], args) -> dict[str, Cell]:
    print(f"\n## {w.name}: {w.title}", flush=True)
    model, x, y = make_workload(w, device)
    n_params = sum(p.numel() for p in trainable(model))
    print(f"{n_params:,} trainable parameters; inputs {list(x.shape)}", flush=True)
    t0 = time.perf_counter()
    ref = loop_norms(model, x, y, w.batch)
    sync(device)
    print(f"reference (per-example loop, all {w.batch} examples): {time.perf_counter() - t0:.2f} s; "
          f"norms min {ref.min().item():.4g} median {ref.median().item():.4g} max {ref.max().item():.4g}",
          flush=True)

    cells: dict[str, Cell] = {}
    calls = {}
    for name in impls:
        cell = cells[name] = Cell()
        try:
            call, cleanup = MAKERS[name](model, x, y, args.loop_examples)
            out = call()
            sync(device)
            if name != "floor":
                out = out.detach().float().reshape(-1)
                expect = ref[: out.shape[0]] if name == "loop" else ref  # loop: its first K examples
                if out.shape != expect.shape:
                    raise Unavailable(f"returned shape {list(out.shape)}, expected {list(expect.shape)}")
                err = ((out - expect).abs() / expect.abs().clamp_min(1e-12)).max().item()
                cell.rel_err = err
                if not math.isfinite(err) or err > WRONG_RTOL:
                    cell.status = "WRONG"
            del out
            cleanup()
            calls[name] = (call, cleanup)
        except Exception as exc:
            reason = short_reason(exc)
            cell.status = "missing" if reason.startswith("missing") else "n/a"
            cell.reason = reason
            clear_grads(model)
        if name == "loop" and args.loop_examples and args.loop_examples < w.batch:
            cell.scaled_from = args.loop_examples
        err_s = f"{cell.rel_err:.2e}" if cell.rel_err is not None else "-"
        print(f"  {name:>13}: {cell.status:<7} max rel err vs loop {err_s}  {cell.reason}", flush=True)

    samples, pairs = time_round_robin(calls, device, max(0, args.warmup - 1), args.repeats)
    for name, s in samples.items():
        c = cells[name]
        scale = w.batch / c.scaled_from if c.scaled_from else 1.0
        c.samples = [t * scale for t in s]
        c.median = statistics.median(c.samples)
        c.floor_pairs = pairs.get(name, [])
        c.x_floor = statistics.median([t / f for t, f in zip(c.samples, c.floor_pairs)]) if name != "floor" else 1.0

    if not args.no_memory:
        for name in impls:
            if cells[name].status in ("n/a", "missing"):
                continue
            if device == "cuda":
                cells[name].mem = measure_memory_cuda(*calls[name])
            else:
                cells[name].mem = measure_memory_cpu(w.name, name, args.loop_examples)
    for name in impls:
        c = cells[name]
        if c.median is not None:
            ratio = f"{c.x_floor:.2f}x floor"
            mem = ""
            if c.mem and "extra" in c.mem:
                mem = f", peak extra {c.mem['extra'] / 2**20:.1f} MiB"
            print(f"  {name:>13}: {c.median * 1e3:10.1f} ms  {ratio}{mem}", flush=True)
    del model, x, y, calls
    gc.collect()
    return cells


def fmt_ms(t: float) -> str:
    return f"{t * 1e3:.1f} ms" if t < 10 else f"{t:.2f} s"


def fmt_mem(cell: Cell, floor: Cell | None, device: str) -> tuple[str, str]:
    m = cell.mem
    if m is None:
        return "-", "-"
    if "error" in m:
        return m["error"], "-"
    b = m["extra"]
    tag = " (maxrss)" if m.get("method") == "maxrss" else ""
    if device == "cpu" and b < RSS_RESOLUTION:
        s = f"< {RSS_RESOLUTION / 2**20:.2f}{tag}"
    else:
        s = f"{b / 2**20:.1f}{tag}"
    fb = floor.mem.get("extra") if floor is not None and floor.mem else None
    r = f"{b / fb:.2f}x" if fb and fb >= RSS_RESOLUTION and b >= RSS_RESOLUTION else "-"
    return s, r


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per workload (median reported)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed calls per implementation before the rounds (the check's call is the first)")
    parser.add_argument("--loop-examples", type=int, default=16,
                        help="time the per-example loop on this many examples and scale to B (0: all B)")
    parser.add_argument("--workloads", default=",".join(w.name for w in WORKLOADS))
    parser.add_argument("--impls", default=",".join(IMPLS), help="floor is always included")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON (atomically)")
    parser.add_argument("--mem-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.mem_worker:
        print(json.dumps(mem_worker(json.loads(args.mem_worker))), flush=True)
        return

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device")
    known = {w.name: w for w in WORKLOADS}
    workloads = [known[n] for n in args.workloads.split(",") if n]
    impls = ["floor"] + [n for n in IMPLS if n != "floor" and n in args.impls.split(",")]
    unknown = [n for n in args.impls.split(",") if n and n not in IMPLS]
    if unknown:
        parser.error(f"unknown --impls {unknown}; known: {IMPLS}")

    def version(mod: str) -> str:
        try:
            m = __import__(mod)
            return getattr(m, "__version__", "installed")
        except ImportError:
            return "not installed"

    started = time.time()
    print("# Exact per-example gradient norms (GraNd): || grad_theta CE(f(x_i), y_i) ||_2 for every example, "
          "float32, eval mode; median per call; x floor = median of (call / the floor call just before it), "
          "the floor being one batched forward + backward")
    print(f"torch {torch.__version__} | python {platform.python_version()} | {platform.machine()} | "
          f"opacus {version('opacus')} | backpack {version('backpack')}")
    print(f"CPU: {cpu_model()} | cores {os.cpu_count()} | torch threads {torch.get_num_threads()}")
    if args.device == "cuda":
        print(f"GPU: {torch.cuda.get_device_name()}")
    if hasattr(os, "getloadavg"):
        print("load average at start: " + ", ".join(f"{v:.2f}" for v in os.getloadavg()))
    if ops is not None:
        print(f"reuse.ops backend: {ops.backend_info()}; per_example_grad_norms "
              f"{'present' if hasattr(ops, 'per_example_grad_norms') else 'MISSING'}")
    else:
        print(f"reuse.ops failed to import: {_OPS_ERROR}")
    loop_note = (f"per-example loop timed on {args.loop_examples} examples and scaled to B"
                 if args.loop_examples else "per-example loop timed on all B examples")
    if args.no_memory:
        mem_note = "off"
    elif args.device == "cpu":
        mem_note = "a fresh subprocess per cell, VmHWM"
    else:
        mem_note = "cuda max_memory_allocated"
    print(f"device {args.device} | {args.repeats} rounds after {args.warmup} warm-up call(s) | {loop_note} | "
          f"memory: {mem_note}", flush=True)

    results = {w.name: bench_workload(w, args.device, impls, args) for w in workloads}

    # ---------------------------------------------------------------- the table
    print("\n## Results\n")
    print("| workload | implementation | median | x floor | peak extra MiB | x floor mem | max rel err vs loop |")
    print("|---|---|---|---|---|---|---|")
    for w in workloads:
        cells = results[w.name]
        floor = cells["floor"]
        for name in impls:
            c = cells[name]
            label = name
            if c.scaled_from:
                label += f" ({c.scaled_from} of {w.batch} examples, scaled)"
            if c.status in ("n/a", "missing"):
                print(f"| {w.name} | {label} | {c.reason} | - | - | - | - |")
                continue
            ratio = f"{c.x_floor:.2f}x"
            mem_s, mem_r = fmt_mem(c, floor, args.device)
            err = "-" if c.rel_err is None else f"{c.rel_err:.1e}" + (" WRONG" if c.status == "WRONG" else "")
            print(f"| {w.name} | {label} | {fmt_ms(c.median)} | {ratio} | {mem_s} | {mem_r} | {err} |")

    # ---------------------------------------------------------------- best anchor and goals
    print("\n## Best anchor per workload\n")
    print("| workload | floor | best anchor | reuse | reuse speed-up over best anchor | reuse x floor |")
    print("|---|---|---|---|---|---|")
    goal_floor, goal_anchor = [], []
    summary = {}
    for w in workloads:
        cells = results[w.name]
        floor = cells["floor"]
        ok = [n for n in ANCHORS if n in cells and cells[n].status == "ok" and cells[n].median is not None]
        best = min(ok, key=lambda n: cells[n].x_floor) if ok else None
        r = cells.get("reuse")
        have_reuse = r is not None and r.median is not None
        best_s = f"{best} {fmt_ms(cells[best].median)}" if best else "none correct"
        if have_reuse:
            speedup = cells[best].x_floor / r.x_floor if best else None
            x_floor = r.x_floor
            reuse_s = fmt_ms(r.median) + (" WRONG" if r.status == "WRONG" else "")
            goal_floor.append(r.status == "ok" and x_floor <= 1.1)
            goal_anchor.append(r.status == "ok" and speedup is not None and speedup >= 1.25)
            sp_s = f"{speedup:.2f}x" if speedup is not None else "-"
            xf_s = f"{x_floor:.2f}x"
        else:
            speedup = x_floor = None
            reuse_s = r.reason if r is not None else "not run"
            sp_s = xf_s = "-"
            goal_floor.append(False)
            goal_anchor.append(False)
        print(f"| {w.name} | {fmt_ms(floor.median)} | {best_s} | {reuse_s} | {sp_s} | {xf_s} |")
        summary[w.name] = {"best_anchor": best, "reuse_speedup_over_best": speedup, "reuse_x_floor": x_floor}

    print("\n## Goals\n")
    reuse_run = "reuse" in impls
    g1 = "PASS" if reuse_run and all(goal_floor) else "FAIL"
    g2 = "PASS" if reuse_run and all(goal_anchor) else "FAIL"
    why = "" if reuse_run and all(results[w.name]["reuse"].median is not None for w in workloads) \
        else " (reuse row missing on some workload)"
    if len(workloads) < len(WORKLOADS):
        why += f" (only the workloads run: {', '.join(w.name for w in workloads)})"
    print(f"- reuse <= 1.1x floor on every workload: {g1}{why}")
    print(f"- reuse >= 1.25x faster than the best anchor on every workload: {g2}{why}")
    load = ""
    if hasattr(os, "getloadavg"):
        load = " | load average at end: " + ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"\ntotal wall-clock {time.time() - started:.0f} s{load}", flush=True)

    if args.json:
        doc = {
            "benchmark": "grand",
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cpu": cpu_model(),
            "threads": torch.get_num_threads(),
            "device": args.device,
            "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "loop_examples": args.loop_examples,
            "extras": {"opacus": version("opacus"), "backpack": version("backpack")},
            "workloads": {
                w.name: {
                    "title": w.title,
                    "batch": w.batch,
                    "impls": {
                        n: {
                            "status": c.status, "reason": c.reason, "median_s": c.median, "samples_s": c.samples,
                            "x_floor": c.x_floor, "floor_pairs_s": c.floor_pairs,
                            "scaled_from": c.scaled_from, "max_rel_err": c.rel_err, "memory": c.mem,
                        }
                        for n, c in results[w.name].items()
                    },
                    **summary[w.name],
                }
                for w in workloads
            },
            "goals": {"reuse_le_1.1x_floor": g1, "reuse_ge_1.25x_best_anchor": g2},
        }
        path = os.path.abspath(args.json)
        fd, tmp = tempfile.mkstemp(prefix=".grand-", suffix=".json", dir=os.path.dirname(path))
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(doc, f, indent=1)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
