"""The trainer: one loop, a few events, per-epoch metrics, atomic checkpoints and exact resume.

Determinism: the data order and augmentation are functions of ``(seed, epoch, example id)``; the
global torch RNG (dropout) is saved in every resumable checkpoint. A run killed after a checkpoint and
resumed therefore ends with the same weights as an uninterrupted run (on CPU; GPU kernels may be
non-deterministic).
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from reuse.train.flops import FlopCounterMode
from tqdm import tqdm

from reuse import faults
from reuse.data.augment import Augment, keyed_seed
from reuse.errors import ConfigError
from reuse.io import write_jsonl
from reuse.train import distributed
from reuse.train.checkpoint import load_checkpoint, recipe_hash, save_checkpoint
from reuse.train.events import Algorithm, Event, State
from reuse.train.schedule import lr_at

log = logging.getLogger("reuse.train")

# torch.compile backend for recipe `compile: true`; a test may set a cheaper one (e.g. "aot_eager").
_COMPILE_BACKEND = "inductor"


def autocast(device: torch.device, amp: str):
    """The recipe's ``amp`` as a context: bfloat16 autocast on ``device`` for "bf16", else nothing."""
    if amp == "bf16":
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    if amp not in (None, "none"):
        raise ValueError(f"unknown amp '{amp}' (none, bf16)")
    return contextlib.nullcontext()


def prepare_input(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """``x`` in channels_last memory format when asked for and 4-D (images), else as it is."""
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.ndim == 4 else x


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_optimizer(params: Iterable[torch.nn.Parameter], cfg: dict[str, Any]) -> torch.optim.Optimizer:
    name = cfg["name"]
    if name == "sgd":
        return torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg.get("momentum", 0.0),
                               weight_decay=cfg.get("weight_decay", 0.0), nesterov=cfg.get("nesterov", False))
    if name == "adamw":
        return torch.optim.AdamW(params, lr=cfg["lr"], betas=tuple(cfg.get("betas", (0.9, 0.999))),
                                 weight_decay=cfg.get("weight_decay", 0.01))
    raise ValueError(f"unknown optimizer '{name}' (sgd, adamw)")


@torch.no_grad()
def evaluate(model: torch.nn.Module, data, batch_size: int, device: torch.device,
             keep_logits: bool = False, flops: dict | None = None, *, amp: str = "none",
             channels_last: bool = False, shard: tuple[int, int] | None = None) -> dict[str, Any]:
    """Mean cross-entropy and accuracy of ``model`` (in eval mode) on ``data``; optionally the logits
    in example-id order. ``flops`` (a dict) receives the measured forward FLOPs. ``amp`` and
    ``channels_last`` as the recipe keys. Sums stay on the device and are read once at the end.

    ``shard = (rank, world)`` (data parallelism; every process must call): each process evaluates
    its slice of every batch, and the sums, FLOPs and logits are combined over the processes, so
    every process gets the result for the whole of ``data``."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    n, logits_all, fl = 0, [], 0
    measured: dict[int, int] = {}
    ids_all: list[torch.Tensor] = []
    for x, y, idx in data.batches(batch_size, **({"shard": shard} if shard is not None else {})):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        x = prepare_input(x, channels_last)
        with autocast(device, amp):
            if flops is not None and x.shape[0] not in measured:
                with FlopCounterMode(display=False) as counter:
                    out = model(x)
                measured[x.shape[0]] = counter.get_total_flops()
            else:
                out = model(x)
        fl += measured.get(x.shape[0], 0)
        out = out.float()
        total_loss += F.cross_entropy(out, y, reduction="sum").double()
        correct += (out.argmax(1) == y).sum()
        n += y.shape[0]
        if keep_logits:
            logits_all.append(out)
            ids_all.append(idx)
    model.train(was_training)
    if shard is not None and shard[1] > 1:
        total_loss, correct, n, fl = distributed.sum_scalars([total_loss, correct, n, fl])
        if keep_logits:  # every process's (ids, logits), put back in example-id order
            mine = (torch.cat(ids_all).cpu(), torch.cat(logits_all).cpu()) if logits_all else None
            parts = [p for p in distributed.gather_objects(mine) if p is not None]
            order = torch.cat([p[0] for p in parts]).argsort()
            logits_all = [torch.cat([p[1] for p in parts])[order]]
    if flops is not None:
        flops["eval_flops"] = fl
    res = {"loss": float(total_loss) / max(n, 1), "acc": int(correct) / max(n, 1)}
    if keep_logits:
        res["logits"] = torch.cat(logits_all).cpu()
    return res


class Trainer:
    """Train ``model`` on ``data.train`` with ``recipe`` and ``algorithms``.

    ``state_dir`` holds the run's progress while it trains: ``last.pt`` (resume point, written every
    ``recipe["checkpoint_every"]`` epochs), ``e{epoch}.pt`` for each of ``recipe["checkpoint_epochs"]``
    and ``metrics.jsonl`` so far. If ``last.pt`` exists when :meth:`fit` starts, training resumes from
    it.

    A run that starts from other weights than its fresh initialisation (a warm start, a soup) names
    them in ``init_id``, which joins the run's identity so a resume never mixes two starting points;
    the weights themselves come from the model passed in (or, on resume, from ``last.pt``).
    ``initial_cost`` (``train_time_s``, ``train_flops``, ...) is work done for the run before its
    first epoch (mixing a soup, recomputing BatchNorm statistics) and is counted in its totals.
    ``recipe["epochs"]`` may be 0: the model is then evaluated once as it is (metrics row epoch 0).

    Data parallelism: in a process group of several processes (``torchrun``, see
    :mod:`reuse.train.distributed`) the model is wrapped in DistributedDataParallel and
    ``batch_size`` stays the global batch: every process walks the same global batch order and
    trains on its slice of each batch (``batches(shard=...)``), each slice's loss weighted by its
    share of the batch, so the averaged gradient is the single-process step's (BatchNorm statistics
    are per process, as usual with DDP). Epoch metrics, FLOPs, evaluation (sharded too) and
    ``example_stats`` are summed over the processes; only rank 0 writes checkpoints and
    ``metrics.jsonl``, which hold the unwrapped module's weights and every process's RNG state, and
    every process resumes from ``last.pt``. Dropout draws differ per process. Algorithms are not
    supported under data parallelism (a :class:`ConfigError` names them): they read and replace
    per-batch state that would need the whole global batch.
    """

    def __init__(self, model: torch.nn.Module, data, recipe: dict[str, Any], *, seed: int,
                 state_dir: str | Path, model_spec: dict[str, Any], algorithms: Iterable[Algorithm] = (),
                 device: str | torch.device = "cpu", progress: str = "auto", init_id: str | None = None,
                 initial_cost: dict[str, Any] | None = None):
        self.data = data
        self.recipe = recipe
        self.seed = seed
        self.state_dir = Path(state_dir)
        self.model_spec = model_spec
        self.algorithms = list(algorithms)
        self.device = torch.device(device)
        self.progress = progress
        self.augment = Augment.from_spec(recipe.get("augment"))
        # The fast-pipeline keys (amp, channels_last, compile, data_on_device); defaults keep the
        # plain fp32, contiguous, eager pipeline with host data.
        self.amp = recipe.get("amp", "none")
        autocast(self.device, self.amp)  # rejects an unknown value now rather than at the first step
        if self.amp == "bf16" and self.device.type == "cpu":
            log.warning("amp: bf16 on the CPU: autocast works there, but a CPU without native bfloat16 "
                        "arithmetic runs it several times slower than float32 (docs/performance.md); "
                        "set the recipe's amp: none for CPU runs")
        self.channels_last = bool(recipe.get("channels_last", False))
        self.compile = bool(recipe.get("compile", False))
        self._compiled: tuple[torch.nn.Module, Any] | None = None  # (model, its compiled module)
        self.data = self._place_data(data, recipe.get("data_on_device", "auto"))
        bs = recipe["batch_size"]
        n_epoch = len(data.train)
        for a in self.algorithms:
            n_epoch = a.examples_per_epoch(n_epoch)
        spe = data.train.num_batches(bs, recipe.get("drop_last", False), n=n_epoch)
        if spe == 0 and recipe["epochs"] > 0:
            raise ValueError(f"batch_size {bs} exceeds the {len(data.train)} training examples with drop_last")
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        self.rank, self.world = distributed.rank(), distributed.world_size()
        self.shard = (self.rank, self.world) if self.world > 1 else None
        self._n_epoch = n_epoch
        if self.world > 1:
            self._check_data_parallel()
            if self.rank != 0:
                self.progress = "off"
            torch.manual_seed(keyed_seed(seed, self.rank, 7))  # dropout: one stream per process
        self._ddp = distributed.wrap(model, self.device) if self.world > 1 else None
        self.state = State(model=model, optimizer=make_optimizer(model.parameters(), recipe["optimizer"]),
                           recipe=recipe, seed=seed, device=self.device, steps_per_epoch=spe,
                           total_steps=spe * recipe["epochs"])
        ident = {"recipe": recipe, "seed": seed, "model": model_spec, "algorithms": [a.name for a in self.algorithms],
                 "fingerprint": data.train.fingerprint["digest"]}
        if init_id is not None:
            ident["init"] = init_id
        self.identity = recipe_hash(ident)
        self._step_flops: dict[Any, int] = {}
        # Per-example statistics of the training batches (recipe `example_stats`): whether each
        # example was classified correctly, and its loss, when it last appeared in a batch of each
        # epoch (-1 / NaN: not seen that epoch). Forgetting events are counted from them.
        n, e = len(data.train), recipe["epochs"]
        self.example_stats = {"correct": torch.full((e, n), -1, dtype=torch.int8),
                              "loss": torch.full((e, n), float("nan"), dtype=torch.float16)} \
            if recipe.get("example_stats", False) else None
        # This epoch's per-batch (ids, correct, loss) for example_stats, kept on the device and
        # written into example_stats (on the host) once at the end of the epoch.
        self._pending_stats: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.resumed_from: int | None = None  # the epoch training resumed after, if it did
        self.totals = {"train_flops": 0, "eval_flops": 0, "train_time_s": 0.0, "eval_time_s": 0.0}
        for k, v in (initial_cost or {}).items():
            self.totals[k] += v

    # ----------------------------------------------------------------- the fast pipeline
    def _place_data(self, data, mode):
        """``data`` with its in-memory (TensorData) train and test splits on the training device when
        the recipe's ``data_on_device`` says so: ``true`` always (on the CPU too, which then takes
        the device path: ids, augmentation bits and normalisation in torch), ``auto`` on CUDA when
        they take under a quarter of the free GPU memory, ``false`` never. The splits are copies:
        the caller's ``data`` stays on the host."""
        import copy

        from reuse.data.datasets import TensorData

        mode = {"true": True, "false": False}.get(mode, mode) if isinstance(mode, str) else mode
        if mode not in ("auto", True, False):
            raise ValueError(f"unknown data_on_device {mode!r} (auto, true, false)")
        splits = {k: getattr(data, k) for k in ("train", "test")
                  if isinstance(getattr(data, k, None), TensorData)}
        if mode is False or not splits:
            if mode is not False:
                log.info("data_on_device %s: no in-memory split to place; batches are built on the host", mode)
            return data
        need = sum(v.nbytes for v in splits.values())
        if mode == "auto":
            if self.device.type != "cuda":
                log.debug("data_on_device auto: training on %s, data stay on the host", self.device)
                return data
            free, _ = torch.cuda.mem_get_info(self.device)
            if need > free / 4:
                log.info("data_on_device auto: the data (%.0f MiB) exceed a quarter of the free memory of %s "
                         "(%.0f MiB); batches are built on the host", need / 2**20, self.device, free / 2**20)
                return data
        placed = copy.copy(data)
        for k, v in splits.items():
            setattr(placed, k, v.to(self.device))
        log.info("data_on_device %s: %s (%.1f MiB) on %s; batches and augmentation are built there", mode,
                 " and ".join(splits), need / 2**20, self.device)
        return placed

    def _train_module(self) -> Any:
        """The module that runs training forwards: the model, or (recipe ``compile``) its
        ``torch.compile`` wrapper, made at first use and again if an algorithm swaps the model. The
        wrapper shares the model's parameters; checkpoints hold the model's own state dict."""
        model = self.state.model
        if not self.compile:
            return self._net()
        if self._compiled is None or self._compiled[0] is not model:
            self._compiled = (model, torch.compile(self._net(), backend=_COMPILE_BACKEND))
        return self._compiled[1]

    def _flush_example_stats(self, epoch: int) -> None:
        """Write this epoch's per-batch statistics into ``example_stats`` (one copy to the host),
        batch by batch in training order, so an example seen twice keeps its last batch's values."""
        pending, self._pending_stats = self._pending_stats, []
        if not pending or self.example_stats is None:
            return
        sizes = [p[0].shape[0] for p in pending]
        ids, hits, losses = (torch.cat(t).cpu() for t in zip(*pending))
        for i, h, l in zip(ids.split(sizes), hits.split(sizes), losses.split(sizes)):
            self.example_stats["correct"][epoch, i] = h
            self.example_stats["loss"][epoch, i] = l

    # ----------------------------------------------------------------- events and checkpoints
    def fire(self, event: Event) -> None:
        for a in self.algorithms:
            a.on_event(event, self.state)

    def _payload(self, resumable: bool) -> dict[str, Any]:
        s = self.state
        payload = {"model": s.model.state_dict(), "model_spec": self.model_spec, "epoch": s.epoch,
                   "step": s.step, "seed": self.seed, "recipe": self.recipe, "identity": self.identity,
                   "fingerprint": self.data.train.fingerprint, "metrics": s.metrics, "stopped": s.extra.get("stop")}
        if resumable:
            payload.update(optimizer=s.optimizer.state_dict(), rng_cpu=torch.get_rng_state(),
                           rng_cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                           examples_seen=s.examples_seen, totals=self.totals, step_flops=self._step_flops,
                           example_stats=self.example_stats,
                           algorithms={a.name: a.state_dict() for a in self.algorithms})
        return payload

    def _resume(self) -> bool:
        last = self.state_dir / "last.pt"
        if not last.exists():
            return False
        ckpt = load_checkpoint(last, fingerprint=self.data.train.fingerprint)
        if ckpt.get("identity") != self.identity:
            log.warning("resume state %s belongs to another recipe, seed or model; starting from scratch", last)
            distributed.barrier()  # every process has read it before rank 0 removes it
            if self.rank == 0:
                shutil.rmtree(self.state_dir)
            distributed.barrier()
            return False
        s = self.state
        s.model.load_state_dict(ckpt["model"])
        s.optimizer.load_state_dict(ckpt["optimizer"])
        rng = ckpt
        if self.world > 1:
            per_rank = ckpt.get("rng_ranks") or []
            if len(per_rank) == self.world:
                rng = per_rank[self.rank]
            else:
                log.warning("%s was written by %d process(es), this run has %d: dropout draws differ from an "
                            "uninterrupted run", last, max(1, len(per_rank)), self.world)
        torch.set_rng_state(rng["rng_cpu"])
        if rng.get("rng_cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["rng_cuda"])
        s.epoch, s.step, s.examples_seen = ckpt["epoch"], ckpt["step"], ckpt["examples_seen"]
        s.metrics = list(ckpt["metrics"])
        self.totals = dict(ckpt["totals"])
        self._step_flops = dict(ckpt["step_flops"])
        if self.example_stats is not None:
            self.example_stats = ckpt["example_stats"]
        for a in self.algorithms:
            a.load_state_dict(ckpt["algorithms"].get(a.name, {}))
        if ckpt.get("stopped"):
            s.extra["stop"] = ckpt["stopped"]
        self.resumed_from = s.epoch
        log.info("resumed from %s at epoch %d (step %d)%s", last, s.epoch, s.step,
                 f"; the run had stopped early ({s.extra['stop']})" if s.extra.get("stop") else "")
        return True

    # ----------------------------------------------------------------- the loop
    def _train_step(self, batch) -> tuple[torch.Tensor, torch.Tensor | int, int]:
        """One optimisation step on ``batch``. Returns (the loss summed over the batch, the number
        classified correctly, the batch size); the first two are device tensors, not read here, so
        a step does not wait for the device."""
        s = self.state
        x, y, idx = (t.to(self.device, non_blocking=True) for t in batch)
        for group in s.optimizer.param_groups:
            group["lr"] = lr_at(s.step, base_lr=self.recipe["optimizer"]["lr"], schedule=self.recipe["schedule"],
                                steps_per_epoch=s.steps_per_epoch, total_steps=s.total_steps)
        key = (x.shape[0],) + tuple(a.flops_key(s) for a in self.algorithms)
        counter = FlopCounterMode(display=False) if key not in self._step_flops else None
        if counter is not None:
            counter.__enter__()
        try:
            s.batch = (x, y, idx)
            self.fire(Event.BATCH)
            x, y, idx = s.batch[:3]
            x = prepare_input(x, self.channels_last)
            # The step whose FLOPs are counted runs the eager model (exact counts with compile on).
            module = self._net() if counter is not None else self._train_module()
            with autocast(self.device, self.amp):
                s.outputs = module(x)
                if self.amp != "none":
                    s.outputs = s.outputs.float()  # the loss and the algorithms see float32 logits
                s.loss = F.cross_entropy(s.outputs, y, label_smoothing=self.recipe.get("label_smoothing", 0.0))
            self.fire(Event.LOSS)
            s.optimizer.zero_grad(set_to_none=True)
            if self.world > 1:
                # DDP averages the gradients over processes: weigh each slice by its share of the
                # global batch, so the step is the global batch's mean gradient (slices may differ by one)
                (s.loss * (y.shape[0] * self.world / self._global_batch(s.step))).backward()
            else:
                s.loss.backward()
            self.fire(Event.AFTER_BACKWARD)
            s.optimizer.step()
        finally:
            if counter is not None:
                counter.__exit__(None, None, None)
                self._step_flops[key] = counter.get_total_flops()
        self.totals["train_flops"] += self._step_flops[key]
        n = y.shape[0]
        s.examples_seen += n if self.world == 1 else self._global_batch(s.step)
        s.step += 1
        faults.point("step")  # tests/faults: a kill may strike after any step (inert unless armed)
        loss = s.loss.detach().double() * n
        if y.ndim != 1:
            return loss, 0, n
        hit = s.outputs.argmax(1) == y
        if self.example_stats is not None:
            with torch.no_grad():
                per = F.cross_entropy(s.outputs.detach().float(), y, reduction="none")
            self._pending_stats.append((idx.detach(), hit.to(torch.int8), per.to(torch.float16)))
        return loss, hit.sum(), n

    def _bar(self, total: int):
        mode = self.progress
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "log"
        return tqdm(total=total, leave=False, dynamic_ncols=True, disable=mode != "bar",
                    desc=f"epoch {self.state.epoch + 1}/{self.recipe['epochs']}")

    def fit(self) -> State:
        s, r = self.state, self.recipe
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._resume()
        s.model.train()
        self.fire(Event.FIT_START)
        while s.epoch < r["epochs"] and not s.extra.get("stop"):
            self.fire(Event.EPOCH_START)
            t0 = time.perf_counter()
            loss_sum = correct = n = 0
            ids = None
            for a in self.algorithms:
                ids = a.epoch_ids(s) if ids is None else ids
            flops0 = self.totals["train_flops"]
            with self._bar(s.steps_per_epoch) as bar:
                for batch in self.data.train.batches(r["batch_size"], shuffle=ids is None, seed=self.seed,
                                                     epoch=s.epoch, augment=self.augment, indices=ids,
                                                     aug_key=s.extra.get("augment_key"),
                                                     drop_last=r.get("drop_last", False), shard=self.shard):
                    l, c, b = self._train_step(batch)
                    loss_sum, correct, n = loss_sum + l, correct + c, n + b
                    bar.update(1)
                    if not bar.disable and bar.n % 20 == 1:  # reading the loss waits for the device
                        bar.set_postfix(loss=f"{float(loss_sum) / n:.4f}", refresh=False)
            loss_sum, correct = float(loss_sum), int(correct)  # the epoch's one read of the device
            self._flush_example_stats(s.epoch)
            if self.world > 1:  # the epoch's sums over all processes
                loss_sum, correct, n, fl = distributed.sum_scalars([loss_sum, correct, n,
                                                                    self.totals["train_flops"] - flops0])
                self.totals["train_flops"] = flops0 + fl
                self._reduce_example_stats(s.epoch)
            train_time = time.perf_counter() - t0
            self.totals["train_time_s"] += train_time
            s.epoch += 1
            row = {"epoch": s.epoch, "step": s.step, "lr": s.optimizer.param_groups[0]["lr"],
                   "train_loss": loss_sum / max(n, 1), "train_acc": correct / max(n, 1),
                   "examples_seen": s.examples_seen, "epoch_time_s": train_time}
            if s.epoch % r.get("eval_every", 1) == 0 or s.epoch == r["epochs"]:
                self._evaluate_into(row)
            row.update(self.totals)
            s.metrics.append(row)
            self.fire(Event.EPOCH_END)
            self._log_epoch(row)
            self._checkpoint()
        if not s.metrics:  # epochs: 0, the model as given (e.g. a soup without fine-tuning)
            row = {"epoch": 0, "step": 0, "lr": 0.0, "train_loss": None, "train_acc": None, "examples_seen": 0,
                   "epoch_time_s": 0.0}  # nothing trained: no training loss or accuracy (null in metrics.jsonl)
            self._evaluate_into(row)
            row.update(self.totals)
            s.metrics.append(row)
            self._log_epoch(row)
            self._checkpoint()
        self.fire(Event.FIT_END)
        self._after_fit_end()
        return s

    def _evaluate_into(self, row: dict[str, Any]) -> None:
        t1 = time.perf_counter()
        fl: dict[str, int] = {}
        ev = evaluate(self.state.model, self.data.test, self.recipe.get("eval_batch_size", 1024), self.device, flops=fl,
                      amp=self.amp, channels_last=self.channels_last, shard=self.shard)
        self.totals["eval_time_s"] += time.perf_counter() - t1
        self.totals["eval_flops"] += fl["eval_flops"]
        row.update(test_loss=ev["loss"], test_acc=ev["acc"])

    def _after_fit_end(self) -> None:
        """An algorithm that replaced the model's weights at FIT_END (weight averaging) puts the cost of
        doing so in ``state.extra["weights_replaced"]`` (``time_s``, ``flops``): the final metrics row
        is then re-evaluated on the new weights (the weights it replaced keep their accuracy as
        ``test_acc_before``) and ``last.pt`` is written again, so the checkpoint, the curves and the
        final accuracy all describe the same model."""
        s = self.state
        cost = s.extra.pop("weights_replaced", None)
        if cost is None:
            return
        self.totals["train_time_s"] += cost.get("time_s", 0.0)
        self.totals["train_flops"] += cost.get("flops", 0)
        row = s.metrics[-1]
        row["test_acc_before"], row["test_loss_before"] = row.get("test_acc"), row.get("test_loss")
        self._evaluate_into(row)
        row.update(self.totals)
        log.info("final weights replaced at the end of training: test_acc %.4f (was %s)", row["test_acc"],
                 f"{row['test_acc_before']:.4f}" if row["test_acc_before"] is not None else "not evaluated")
        save_checkpoint(self.state_dir / "last.pt", self._payload(resumable=True))
        write_jsonl(self.state_dir / "metrics.jsonl", s.metrics)

    def _checkpoint(self) -> None:
        s, r = self.state, self.recipe
        milestone = s.epoch in r.get("checkpoint_epochs", ())
        last = s.epoch % r.get("checkpoint_every", 1) == 0 or s.epoch == r["epochs"] or bool(s.extra.get("stop"))
        if milestone or last:
            rng = distributed.gather_objects(self._rng_state()) if self.world > 1 else None
            if self.rank != 0:
                return  # only rank 0 writes
            payload = self._payload(resumable=True)
            if rng is not None:
                payload["rng_ranks"] = rng  # each process's RNG state, for an exact resume
            if milestone:
                save_checkpoint(self.state_dir / f"e{s.epoch}.pt", payload)
            if last:
                save_checkpoint(self.state_dir / "last.pt", payload)
            write_jsonl(self.state_dir / "metrics.jsonl", s.metrics)

    # ----------------------------------------------------------------- data parallelism
    def _net(self) -> torch.nn.Module:
        """The model, or its DistributedDataParallel wrapper under data parallelism."""
        return self._ddp if self._ddp is not None else self.state.model

    def _check_data_parallel(self) -> None:
        r, bs = self.recipe, self.recipe["batch_size"]
        if self.algorithms:
            raise ConfigError(f"data-parallel training ({self.world} processes) does not support algorithms "
                              f"({', '.join(a.name for a in self.algorithms)}); train this run with ddp_processes: 1")
        if bs < self.world:
            raise ConfigError(f"batch_size {bs} cannot be split over {self.world} data-parallel processes; "
                              "batch_size is the global batch: make it at least the number of processes")
        rem = self._n_epoch % bs
        if rem and rem < self.world and not r.get("drop_last", False):
            raise ConfigError(f"the last batch of each epoch holds {rem} example(s), fewer than the {self.world} "
                              "data-parallel processes; set drop_last: true or another batch_size")

    def _global_batch(self, step: int) -> int:
        """The global size of training step ``step`` (the last batch of an epoch may be short)."""
        bs = self.recipe["batch_size"]
        return min(bs, self._n_epoch - (step - self.state.epoch * self.state.steps_per_epoch) * bs)

    def _reduce_example_stats(self, epoch: int) -> None:
        """Combine the processes' ``example_stats`` rows of ``epoch`` (each saw its own examples)."""
        if self.example_stats is None:
            return
        c = distributed.all_reduce_sum(self.example_stats["correct"][epoch].to(torch.int32) + 1)  # 0: not seen
        loss = self.example_stats["loss"][epoch].float()
        loss = distributed.all_reduce_sum(torch.nan_to_num(loss, nan=0.0))
        self.example_stats["correct"][epoch] = (c - 1).to(torch.int8)
        self.example_stats["loss"][epoch] = torch.where(c > 0, loss, float("nan")).to(torch.float16)

    @staticmethod
    def _rng_state() -> dict[str, Any]:
        return {"rng_cpu": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}

    def _log_epoch(self, row: dict[str, Any]) -> None:
        test = f" test_loss {row['test_loss']:.4f} test_acc {row['test_acc']:.4f}" if "test_acc" in row else ""
        if not row["epoch"]:
            log.info("no training epochs:%s", test)
            return
        log.info("epoch %d/%d lr %.4g train_loss %.4f train_acc %.4f%s (%.2fs)", row["epoch"],
                 self.recipe["epochs"], row["lr"], row["train_loss"], row["train_acc"], test, row["epoch_time_s"])
        if not math.isfinite(row["train_loss"]):
            log.warning("training loss is %s at epoch %d: lower the learning rate", row["train_loss"], row["epoch"])
