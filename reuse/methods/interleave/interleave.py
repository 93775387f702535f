"""The interleaving loop: K tasks, one shared encoder (or K for the independent baseline), a head
per task, trained turn by turn as a schedule (:mod:`reuse.methods.interleave.schedule`) says.

The project's trainer trains one model on one dataset by epochs; a turn here is a number of steps
of one task (or of all of them), so the loop is written out, with the trainer's guarantees:

- deterministic: each task draws its batches from a stream of its own training ids, shuffled per
  pass with ``(seed, task, pass)`` and cut into full batches (:func:`stream_batch`); a task's next
  turn continues its stream, so its position is the number of batches it has taken; augmentation is
  the recipe's, keyed by ``(seed, pass, example id)``;
- one optimiser over every parameter: a step's loss reaches only the heads (and encoder) of the
  turn's tasks, and a parameter without a gradient is left alone (no momentum, no weight decay), so
  an idle head is frozen; the encoder's momentum carries over from one turn to the next, as in one
  model whose loss changes; the learning rate follows the recipe's schedule over each encoder's steps;
- FLOPs of each distinct step and evaluation batch measured once (``FlopCounterMode``), wall-clock
  of training and of evaluation kept apart;
- after every turn: every task's test accuracy (the interleaving curve and forgetting), then the
  whole state (weights, optimiser, RNG, stream positions, metrics, cost) written atomically to
  ``state/last.pt``; a killed run resumes at the start of the turn it was in and ends with the same
  weights as an uninterrupted one (on CPU).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from reuse.data.augment import STREAM_ORDER, Augment, keyed_seed
from reuse.data.datasets import epoch_order
from reuse.methods.interleave.schedule import Turn, model_steps, split_batch
from reuse.models import build_model
from reuse.models.heads import feature_dim, split_head
from reuse.train import load_checkpoint, lr_at, make_optimizer, save_checkpoint, seed_everything
from reuse.train.checkpoint import recipe_hash
from reuse.train.flops import FlopCounterMode
from reuse.train.trainer import autocast, prepare_input

log = logging.getLogger("reuse")

STREAM_HEAD = 8  # the draws of the heads' initialisation (apart from reuse.data.augment's streams)


# ----------------------------------------------------------------------------- tasks and data
@dataclass
class Task:
    """One task: its classes (position = the head's output index) and its examples' ids."""

    name: str
    classes: list[int]
    train_ids: torch.Tensor
    test_ids: torch.Tensor


def make_tasks(tasks: dict[str, list[int]], train_y: torch.Tensor, test_y: torch.Tensor) -> list[Task]:
    """The tasks' example ids, by label: training ids from the training split only (no test example is
    ever trained on or selected with), test ids for the reports."""
    out = []
    for name, classes in tasks.items():
        cl = torch.as_tensor(classes, dtype=torch.int64)
        out.append(Task(name, list(classes), torch.nonzero(torch.isin(train_y, cl)).flatten(),
                        torch.nonzero(torch.isin(test_y, cl)).flatten()))
    return out


def label_map(tasks: list[Task], num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(task_of, local)``: for each class of the dataset, its task (-1: none) and its index in that task."""
    task_of = torch.full((num_classes,), -1, dtype=torch.int64)
    local = torch.full((num_classes,), -1, dtype=torch.int64)
    for k, t in enumerate(tasks):
        for i, c in enumerate(t.classes):
            task_of[c], local[c] = k, i
    return task_of, local


def stream_batch(ids: torch.Tensor, batch_size: int, index: int, seed: int,
                 task: int) -> list[tuple[torch.Tensor, int]]:
    """Batch ``index`` of a task's stream of training ids, as ``(ids, pass)`` pieces: the stream is
    the ids shuffled once per pass (with ``(seed, task, pass)``), one pass after the other, cut into
    batches of exactly ``batch_size`` (a batch that runs over the end of a pass takes the rest from
    the next one: two pieces), so every step of every schedule holds the same number of examples."""
    n, pos, end = len(ids), index * batch_size, (index + 1) * batch_size
    out = []
    while pos < end:
        p, j = divmod(pos, n)
        take = min(end - pos, n - j)
        order = epoch_order(n, keyed_seed(seed, task, STREAM_ORDER), p)
        out.append((ids[order[j:j + take]], p))
        pos += take
    return out


# ----------------------------------------------------------------------------- the model
class MultiTaskNet(nn.Module):
    """Encoders and one linear head per task: task k's logits are ``heads[k](encoders[owner[k]](x))``."""

    def __init__(self, encoders: list[nn.Module], heads: list[nn.Linear], owner: list[int]):
        super().__init__()
        self.encoders = nn.ModuleList(encoders)
        self.heads = nn.ModuleList(heads)
        self.owner = list(owner)

    def forward(self, x: torch.Tensor, task: int) -> torch.Tensor:
        return self.heads[task](self.encoders[self.owner[task]](x))


def build_net(arch: str, args: dict, input_shape: list[int], num_classes: int, tasks: list[Task], seed: int,
              independent: bool, probe: torch.Tensor | None = None) -> MultiTaskNet:
    """The encoder of ``arch`` (the model with its last linear layer taken off, checked on ``probe``)
    and a new linear head per task. Every schedule starts from the same weights: the encoder of
    ``seed`` (copied K times for independent models) and head k drawn from ``(seed, k)``."""
    seed_everything(seed)
    model = build_model(arch, list(input_shape), num_classes, **args)
    dim = feature_dim(model)
    encoder, _ = split_head(model, probe)
    heads = []
    for k, t in enumerate(tasks):
        torch.manual_seed(keyed_seed(seed, k, STREAM_HEAD))
        heads.append(nn.Linear(dim, len(t.classes)))
    encoders = [copy.deepcopy(encoder) for _ in tasks] if independent else [encoder]
    return MultiTaskNet(encoders, heads, list(range(len(tasks))) if independent else [0] * len(tasks))


# ----------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate_tasks(net: MultiTaskNet, test, tasks: list[Task], local: torch.Tensor, batch_size: int,
                   device: torch.device, *, amp: str = "none", channels_last: bool = False,
                   flops: dict | None = None, keep_logits: bool = False) -> dict[str, Any]:
    """Each task's test accuracy and mean cross-entropy, its head choosing among its classes only.
    ``flops``: a cache of the FLOPs of each evaluation batch (filled on first use; the batches are
    the same every time), whose total is returned as ``flops``. ``keep_logits``: also each task's
    logits, in the order of its ``test_ids``."""
    was = net.training
    net.eval()
    correct, loss, logits = [0] * len(tasks), [0.0] * len(tasks), [[] for _ in tasks]
    total_flops = 0
    for m in sorted(set(net.owner)):
        mine = [k for k in range(len(tasks)) if net.owner[k] == m]
        ids = torch.cat([tasks[k].test_ids for k in mine])
        which = torch.cat([torch.full((len(tasks[k].test_ids),), k) for k in mine])
        for b, start in enumerate(range(0, len(ids), batch_size)):
            idx, kk = ids[start:start + batch_size], which[start:start + batch_size]
            x, y, _ = test.get(idx)
            x, y, kd = prepare_input(x.to(device), channels_last), y.cpu(), kk.to(device)
            key = (m, b)
            counter = FlopCounterMode(display=False) if flops is not None and key not in flops else None
            with counter if counter is not None else contextlib.nullcontext(), autocast(device, amp):
                feats = net.encoders[m](x)
                outs = {k: net.heads[k](feats[kd == k]) for k in mine if (kk == k).any()}
            if counter is not None:
                flops[key] = counter.get_total_flops()
            total_flops += (flops or {}).get(key, 0)
            for k, out in outs.items():
                out, yk = out.float(), local[y[kk == k]].to(device)
                correct[k] += int((out.argmax(1) == yk).sum())
                loss[k] += float(F.cross_entropy(out, yk, reduction="sum"))
                if keep_logits:
                    logits[k].append(out.cpu())
    net.train(was)
    n = [len(t.test_ids) for t in tasks]
    res = {"acc": [c / max(1, m) for c, m in zip(correct, n)], "loss": [v / max(1, m) for v, m in zip(loss, n)],
           "flops": total_flops}
    if keep_logits:
        res["logits"] = [torch.cat(v) if v else torch.zeros(0, len(t.classes)) for v, t in zip(logits, tasks)]
    return res


# ----------------------------------------------------------------------------- the run
class InterleavedRun:
    """Train ``net`` on ``tasks`` turn by turn (``schedule``), with checkpoints in ``state_dir``.

    ``recipe``: the run's recipe (batch_size, optimizer, schedule, augment, label_smoothing,
    eval_batch_size, amp, channels_last). ``identity``: what the run is (recipe, seed, model,
    tasks, schedule, data); a resume state of another identity is discarded.
    """

    def __init__(self, net: MultiTaskNet, data, tasks: list[Task], schedule: list[Turn], recipe: dict, *, seed: int,
                 state_dir: str | Path, device: torch.device, identity: dict, model_spec: dict):
        self.net, self.data, self.tasks, self.schedule = net.to(device), data, tasks, schedule
        self.recipe, self.seed, self.device = recipe, seed, torch.device(device)
        self.state_dir = Path(state_dir)
        self.model_spec = model_spec
        self.amp = recipe.get("amp", "none")
        self.channels_last = bool(recipe.get("channels_last", False))
        if self.channels_last:
            net.to(memory_format=torch.channels_last)
        self.augment = Augment.from_spec(recipe.get("augment"))
        self.bs = recipe["batch_size"]
        self.optimizer = make_optimizer(net.parameters(), recipe["optimizer"])
        _, self.local = label_map(tasks, data.num_classes)
        self.identity = recipe_hash({**identity, "turns": [(t.tasks, t.steps, t.model) for t in schedule]})
        self.total = model_steps(schedule)
        # an "epoch" of the learning-rate schedule: one pass over the training examples of the model's tasks
        self.steps_per_epoch = {m: max(1, -(-sum(len(tasks[k].train_ids) for k in range(len(tasks))
                                                 if net.owner[k] == m) // self.bs)) for m in self.total}
        self.turn = 0  # turns done
        self.taken = [0] * len(tasks)  # batches each task's stream has given
        self.model_step = {m: 0 for m in self.total}
        self.step = self.examples_seen = 0
        self.metrics: list[dict] = []
        self.acc_before: list[float] = []
        self.totals = {"train_time_s": 0.0, "eval_time_s": 0.0, "train_flops": 0, "eval_flops": 0}
        self._step_flops: dict[tuple, int] = {}
        self._eval_flops: dict[tuple, int] = {}
        self.resumed_at: int | None = None

    # -- state
    def _payload(self) -> dict:
        return {"model": self.net.state_dict(), "model_spec": self.model_spec, "epoch": self.turn, "step": self.step,
                "seed": self.seed, "recipe": self.recipe, "identity": self.identity,
                "fingerprint": self.data.train.fingerprint, "metrics": self.metrics,
                "optimizer": self.optimizer.state_dict(), "rng_cpu": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "turn": self.turn, "taken": self.taken, "model_step": self.model_step,
                "examples_seen": self.examples_seen, "totals": self.totals, "acc_before": self.acc_before,
                "step_flops": self._step_flops, "eval_flops_cache": self._eval_flops}

    def _resume(self) -> None:
        last = self.state_dir / "last.pt"
        if not last.exists():
            return
        ckpt = load_checkpoint(last, fingerprint=self.data.train.fingerprint)
        if ckpt.get("identity") != self.identity:
            log.warning("resume state %s belongs to another run (recipe, seed, tasks or schedule); starting afresh",
                        last)
            shutil.rmtree(self.state_dir)
            self.state_dir.mkdir(parents=True)
            return
        self.net.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["rng_cpu"])
        if ckpt.get("rng_cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ckpt["rng_cuda"])
        self.turn, self.taken, self.model_step = ckpt["turn"], list(ckpt["taken"]), dict(ckpt["model_step"])
        self.step, self.examples_seen = ckpt["step"], ckpt["examples_seen"]
        self.metrics, self.totals, self.acc_before = list(ckpt["metrics"]), dict(ckpt["totals"]), ckpt["acc_before"]
        self._step_flops, self._eval_flops = dict(ckpt["step_flops"]), dict(ckpt["eval_flops_cache"])
        self.resumed_at = self.turn
        log.info("resumed from %s after turn %d of %d (step %d)", last, self.turn, len(self.schedule), self.step)

    def _checkpoint(self) -> None:
        save_checkpoint(self.state_dir / "last.pt", self._payload())

    # -- evaluation
    def evaluate(self, keep_logits: bool = False) -> dict[str, Any]:
        t0 = time.perf_counter()
        ev = evaluate_tasks(self.net, self.data.test, self.tasks, self.local, self.recipe.get("eval_batch_size", 1024),
                            self.device, amp=self.amp, channels_last=self.channels_last, flops=self._eval_flops,
                            keep_logits=keep_logits)
        self.totals["eval_time_s"] += time.perf_counter() - t0
        self.totals["eval_flops"] += ev["flops"]
        return ev

    # -- training
    def _batch(self, task: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The next batch of ``task``'s stream, augmented as the recipe says (view: the stream's pass)."""
        pieces = [self.data.train.get(ids, self.augment, self.seed, p)
                  for ids, p in stream_batch(self.tasks[task].train_ids, size, self.taken[task], self.seed, task)]
        self.taken[task] += 1
        return torch.cat([x for x, _, _ in pieces]), self.local[torch.cat([y for _, y, _ in pieces]).cpu()]

    def _step(self, turn: Turn) -> tuple[float, int, int]:
        """One optimisation step of ``turn``'s tasks on one batch split among them: the loss is the
        mean over the batch's examples, each through its task's head."""
        m = turn.model
        sizes = split_batch(self.bs, turn.tasks)
        parts = [self._batch(k, n) for k, n in sizes.items()]
        x = prepare_input(torch.cat([p[0] for p in parts]).to(self.device), self.channels_last)
        ys = [p[1].to(self.device) for p in parts]
        lr = lr_at(self.model_step[m], base_lr=self.recipe["optimizer"]["lr"], schedule=self.recipe["schedule"],
                   steps_per_epoch=self.steps_per_epoch[m], total_steps=self.total[m])
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        key = (m, tuple((k, len(y)) for k, y in zip(sizes, ys)))
        counter = FlopCounterMode(display=False) if key not in self._step_flops else None
        ls = self.recipe.get("label_smoothing", 0.0)
        with counter if counter is not None else contextlib.nullcontext():
            with autocast(self.device, self.amp):
                feats = self.net.encoders[m](x)
                outs = [self.net.heads[k](f).float() for k, f in zip(sizes, feats.split([len(y) for y in ys]))]
                loss = sum(F.cross_entropy(o, y, label_smoothing=ls, reduction="sum") for o, y in zip(outs, ys))
                loss = loss / x.shape[0]
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        if counter is not None:
            self._step_flops[key] = counter.get_total_flops()
        self.totals["train_flops"] += self._step_flops[key]
        self.model_step[m] += 1
        self.step += 1
        self.examples_seen += x.shape[0]
        hits = sum(int((o.argmax(1) == y).sum()) for o, y in zip(outs, ys))
        return float(loss.detach()) * x.shape[0], hits, x.shape[0]

    def fit(self) -> "InterleavedRun":
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._resume()
        names = [t.name for t in self.tasks]
        if not self.acc_before:  # the accuracy of the untrained heads: the curve's start
            self.acc_before = self.evaluate()["acc"]
        self.net.train()
        while self.turn < len(self.schedule):
            turn = self.schedule[self.turn]
            t0 = time.perf_counter()
            loss_sum = hits = n = 0
            for _ in range(turn.steps):
                l, h, b = self._step(turn)
                loss_sum, hits, n = loss_sum + l, hits + h, n + b
            dt = time.perf_counter() - t0
            self.totals["train_time_s"] += dt
            ev = self.evaluate()
            self.turn += 1
            row = {"epoch": self.turn, "turn": self.turn, "tasks": [names[k] for k in turn.tasks],
                   "model": turn.model, "turn_steps": turn.steps, "step": self.step,
                   "lr": self.optimizer.param_groups[0]["lr"], "train_loss": loss_sum / max(n, 1),
                   "train_acc": hits / max(n, 1), "examples_seen": self.examples_seen, "epoch_time_s": dt,
                   "test_acc": sum(ev["acc"]) / len(ev["acc"]), "test_loss": sum(ev["loss"]) / len(ev["loss"]),
                   "task_test_acc": dict(zip(names, ev["acc"])), **self.totals}
            self.metrics.append(row)
            log.info("turn %d/%d: %s, %d steps (step %d, lr %.4g), train_loss %.4f; test accuracy %s (%.2fs)",
                     self.turn, len(self.schedule), "+".join(row["tasks"]), turn.steps, self.step, row["lr"],
                     row["train_loss"], " ".join(f"{k} {a:.4f}" for k, a in zip(names, ev["acc"])), dt)
            if not math.isfinite(row["train_loss"]):
                log.warning("training loss is %s after turn %d: lower the learning rate", row["train_loss"], self.turn)
            self._checkpoint()
        return self

    def final_checkpoint(self, path: str | Path) -> None:
        """The trained weights (no optimiser or RNG state), as a run's ``ckpt/last.pt``."""
        p = self._payload()
        keep = ("model", "model_spec", "epoch", "step", "seed", "recipe", "identity", "fingerprint", "metrics")
        save_checkpoint(path, {k: p[k] for k in keep})
