"""The trainer: one loop, a few events, per-epoch metrics, atomic checkpoints and exact resume.

Determinism: the data order and augmentation are functions of ``(seed, epoch, example id)``; the
global torch RNG (dropout) is saved in every resumable checkpoint. A run killed after a checkpoint and
resumed therefore ends with the same weights as an uninterrupted run (on CPU; GPU kernels may be
non-deterministic).
"""

from __future__ import annotations

import logging
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from reuse.data.augment import Augment
from reuse.io import write_jsonl
from reuse.train.checkpoint import load_checkpoint, recipe_hash, save_checkpoint
from reuse.train.events import Algorithm, Event, State
from reuse.train.schedule import lr_at

log = logging.getLogger("reuse.train")


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
             keep_logits: bool = False, flops: dict | None = None) -> dict[str, Any]:
    """Mean cross-entropy and accuracy of ``model`` (in eval mode) on ``data``; optionally the logits
    in example-id order. ``flops`` (a dict) receives the measured forward FLOPs."""
    was_training = model.training
    model.eval()
    total_loss, correct, n, logits_all, fl = 0.0, 0, 0, [], 0
    measured: dict[int, int] = {}
    for x, y, idx in data.batches(batch_size):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if flops is not None and x.shape[0] not in measured:
            with FlopCounterMode(display=False) as counter:
                out = model(x)
            measured[x.shape[0]] = counter.get_total_flops()
        else:
            out = model(x)
        fl += measured.get(x.shape[0], 0)
        total_loss += F.cross_entropy(out.float(), y, reduction="sum").item()
        correct += (out.argmax(1) == y).sum().item()
        n += y.shape[0]
        if keep_logits:
            logits_all.append(out.float().cpu())
    model.train(was_training)
    if flops is not None:
        flops["eval_flops"] = fl
    res = {"loss": total_loss / max(n, 1), "acc": correct / max(n, 1)}
    if keep_logits:
        res["logits"] = torch.cat(logits_all)
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
        bs = recipe["batch_size"]
        n_epoch = len(data.train)
        for a in self.algorithms:
            n_epoch = a.examples_per_epoch(n_epoch)
        spe = data.train.num_batches(bs, recipe.get("drop_last", False), n=n_epoch)
        if spe == 0 and recipe["epochs"] > 0:
            raise ValueError(f"batch_size {bs} exceeds the {len(data.train)} training examples with drop_last")
        model.to(self.device)
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
        self.resumed_from: int | None = None  # the epoch training resumed after, if it did
        self.totals = {"train_flops": 0, "eval_flops": 0, "train_time_s": 0.0, "eval_time_s": 0.0}
        for k, v in (initial_cost or {}).items():
            self.totals[k] += v

    # ----------------------------------------------------------------- events and checkpoints
    def fire(self, event: Event) -> None:
        for a in self.algorithms:
            a.on_event(event, self.state)

    def _payload(self, resumable: bool) -> dict[str, Any]:
        s = self.state
        payload = {"model": s.model.state_dict(), "model_spec": self.model_spec, "epoch": s.epoch,
                   "step": s.step, "seed": self.seed, "recipe": self.recipe, "identity": self.identity,
                   "fingerprint": self.data.train.fingerprint, "metrics": s.metrics}
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
            shutil.rmtree(self.state_dir)
            return False
        s = self.state
        s.model.load_state_dict(ckpt["model"])
        s.optimizer.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["rng_cpu"])
        if ckpt.get("rng_cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ckpt["rng_cuda"])
        s.epoch, s.step, s.examples_seen = ckpt["epoch"], ckpt["step"], ckpt["examples_seen"]
        s.metrics = list(ckpt["metrics"])
        self.totals = dict(ckpt["totals"])
        self._step_flops = dict(ckpt["step_flops"])
        if self.example_stats is not None:
            self.example_stats = ckpt["example_stats"]
        for a in self.algorithms:
            a.load_state_dict(ckpt["algorithms"].get(a.name, {}))
        self.resumed_from = s.epoch
        log.info("resumed from %s at epoch %d (step %d)", last, s.epoch, s.step)
        return True

    # ----------------------------------------------------------------- the loop
    def _train_step(self, batch) -> tuple[float, int, int]:
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
            s.outputs = s.model(x)
            s.loss = F.cross_entropy(s.outputs, y, label_smoothing=self.recipe.get("label_smoothing", 0.0))
            self.fire(Event.LOSS)
            s.optimizer.zero_grad(set_to_none=True)
            s.loss.backward()
            self.fire(Event.AFTER_BACKWARD)
            s.optimizer.step()
        finally:
            if counter is not None:
                counter.__exit__(None, None, None)
                self._step_flops[key] = counter.get_total_flops()
        self.totals["train_flops"] += self._step_flops[key]
        n = y.shape[0]
        s.step += 1
        s.examples_seen += n
        if y.ndim != 1:
            return s.loss.item() * n, 0, n
        hit = s.outputs.argmax(1) == y
        if self.example_stats is not None:
            with torch.no_grad():
                per = F.cross_entropy(s.outputs.detach().float(), y, reduction="none")
            ids = idx.cpu()
            self.example_stats["correct"][s.epoch, ids] = hit.to("cpu", torch.int8)
            self.example_stats["loss"][s.epoch, ids] = per.to("cpu", torch.float16)
        correct = hit.sum().item()
        return s.loss.item() * n, correct, n

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
        while s.epoch < r["epochs"]:
            self.fire(Event.EPOCH_START)
            t0 = time.perf_counter()
            loss_sum = correct = n = 0
            ids = None
            for a in self.algorithms:
                ids = a.epoch_ids(s) if ids is None else ids
            with self._bar(s.steps_per_epoch) as bar:
                for batch in self.data.train.batches(r["batch_size"], shuffle=ids is None, seed=self.seed,
                                                     epoch=s.epoch, augment=self.augment, indices=ids,
                                                     aug_key=s.extra.get("augment_key"),
                                                     drop_last=r.get("drop_last", False)):
                    l, c, b = self._train_step(batch)
                    loss_sum, correct, n = loss_sum + l, correct + c, n + b
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss_sum / n:.4f}", refresh=False)
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
        ev = evaluate(self.state.model, self.data.test, self.recipe.get("eval_batch_size", 1024), self.device, flops=fl)
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
        last = s.epoch % r.get("checkpoint_every", 1) == 0 or s.epoch == r["epochs"]
        if milestone or last:
            payload = self._payload(resumable=True)
            if milestone:
                save_checkpoint(self.state_dir / f"e{s.epoch}.pt", payload)
            if last:
                save_checkpoint(self.state_dir / "last.pt", payload)
            write_jsonl(self.state_dir / "metrics.jsonl", s.metrics)

    def _log_epoch(self, row: dict[str, Any]) -> None:
        test = f" test_loss {row['test_loss']:.4f} test_acc {row['test_acc']:.4f}" if "test_acc" in row else ""
        if not row["epoch"]:
            log.info("no training epochs:%s", test)
            return
        log.info("epoch %d/%d lr %.4g train_loss %.4f train_acc %.4f%s (%.2fs)", row["epoch"],
                 self.recipe["epochs"], row["lr"], row["train_loss"], row["train_acc"], test, row["epoch_time_s"])
        if not math.isfinite(row["train_loss"]):
            log.warning("training loss is %s at epoch %d: lower the learning rate", row["train_loss"], row["epoch"])
