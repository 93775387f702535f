"""What several test modules share: a base training recipe, spy and kill algorithms for the trainer,
a small MLP trainer, and the Snakemake helpers of the workflow tests.

Test modules (and the scripts some tests run in a subprocess) import these from here, never from
another test module. Fixtures stay in tests/conftest.py; ``ROOT`` is re-exported from there.
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from reuse.models import build_model
from reuse.train import Algorithm, Event, State, Trainer, seed_everything
from tests.conftest import ROOT

__all__ = ["loop_norms", "ROOT", "RECIPE", "recipe", "Record", "Kill", "Stop", "StopAfter", "MLP_SPEC", "MLP_DROPOUT_SPEC",
           "make_trainer", "WORKFLOW_CONFIG", "smk", "jobs", "snapshot"]


# ----------------------------------------------------------------------------- recipes
# Two epochs of plain SGD at a constant rate: each test module states how its recipe differs.
RECIPE: dict[str, Any] = {"epochs": 2, "batch_size": 32, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
                          "schedule": {"name": "constant"}}


def _merge(base: dict, overrides: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def recipe(**overrides: Any) -> dict[str, Any]:
    """A fresh copy of :data:`RECIPE` with ``overrides``; a dict merges into the base's dict key by key,
    e.g. ``recipe(optimizer={"weight_decay": 5e-4})`` is SGD at lr 0.05 with momentum and weight decay.
    Any other value (``augment=None`` included) replaces the base's."""
    return _merge(RECIPE, overrides)


# ----------------------------------------------------------------------------- spy and kill algorithms
class Record(Algorithm):
    """A spy: at each of ``events`` (every event when none are given) appends ``what(state)`` to
    :attr:`seen`, or the event itself when ``what`` is None. ``what`` must copy what it keeps
    (``state.batch[0].clone()``): the trainer reuses and modifies its tensors."""

    name = "record"

    def __init__(self, *events: Event, what: Callable[[State], Any] | None = None):
        self.events, self.what = frozenset(events), what
        self.seen: list[Any] = []

    def on_event(self, event: Event, state: State) -> None:
        if not self.events or event in self.events:
            self.seen.append(event if self.what is None else self.what(state))


class Kill(Algorithm):
    """Interrupts training just before optimizer step ``step`` (at Event.BATCH, when ``state.step == step``)
    or at the end of epoch ``epoch`` (at Event.EPOCH_END, after that epoch's evaluation and before its
    checkpoint; epochs count from 1 there); inert when neither is given. It raises KeyboardInterrupt,
    or with ``sigkill=True`` kills its own process (SIGKILL), as a crash would.

    A resumed run must be given an (inert) ``Kill()`` too: the algorithms' names join the run's identity."""

    name = "kill"

    def __init__(self, step: int | None = None, epoch: int | None = None, sigkill: bool = False):
        self.step, self.epoch, self.sigkill = step, epoch, sigkill

    def on_event(self, event: Event, state: State) -> None:
        if ((event is Event.BATCH and self.step is not None and state.step == self.step)
                or (event is Event.EPOCH_END and self.epoch is not None and state.epoch == self.epoch)):
            if self.sigkill:
                os.kill(os.getpid(), signal.SIGKILL)
            raise KeyboardInterrupt


class Stop(Exception):
    """Raised by :class:`StopAfter`."""


class StopAfter(Trainer):
    """A trainer that raises :class:`Stop` (in every process) right after the checkpoint of epoch
    ``epoch``, as a kill would. For data-parallel runs, which refuse algorithms (and so :class:`Kill`);
    pass ``cls=functools.partial(StopAfter, epoch=2)`` to :func:`make_trainer`."""

    def __init__(self, *args: Any, epoch: int, **kwargs: Any):
        self.stop_epoch = epoch
        super().__init__(*args, **kwargs)

    def _checkpoint(self) -> None:
        super()._checkpoint()
        if self.state.epoch == self.stop_epoch:
            raise Stop


# ----------------------------------------------------------------------------- a small MLP trainer
MLP_SPEC = {"arch": "mlp", "args": {"hidden": [32, 32]}, "num_classes": 10}
MLP_DROPOUT_SPEC = {"arch": "mlp", "args": {"hidden": [32, 32], "dropout": 0.3}, "num_classes": 10}


def make_trainer(data, state_dir, recipe: dict[str, Any], spec: dict[str, Any] = MLP_SPEC, algorithms=(),
                 cls: Callable[..., Trainer] = Trainer) -> Trainer:
    """A ``cls`` trainer (seed 1, no progress bar) of the model ``spec`` describes, on ``data``."""
    seed_everything(1)
    model = build_model(spec["arch"], data.input_shape, spec["num_classes"], **spec["args"])
    return cls(model, data, recipe, seed=1, state_dir=state_dir, algorithms=algorithms, progress="off",
               model_spec={**spec, "input_shape": list(data.input_shape)})


# ----------------------------------------------------------------------------- the Snakemake workflow
WORKFLOW_CONFIG = ROOT / "tests" / "workflow" / "config.yaml"  # the tiny config of tests/workflow


def smk(workdir: Path, *args: str, config: Path = WORKFLOW_CONFIG, timeout: int = 600) -> subprocess.CompletedProcess:
    """Runs the workflow (2 cores) in ``workdir`` with ``config`` and the extra command-line ``args``."""
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(config), "--cores", "2", "--rerun-incomplete", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=workdir)


def jobs(dry_run_output: str) -> dict[str, int]:
    """Job counts from a dry run's 'Job stats' table."""
    table = dry_run_output.split("Job stats:")[1].split("total")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def snapshot(root: Path) -> dict[str, tuple[float, str]]:
    """Every file under ``root`` but the logs: its modification time and SHA-256."""
    return {str(p.relative_to(root)): (p.stat().st_mtime, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*")) if p.is_file() and not p.name.endswith(".log")}


# ----------------------------------------------------------------------------- per-example gradient norms
def loop_norms(model: nn.Module, inputs, targets) -> torch.Tensor:
    """Per-example gradient norms, one example at a time (float64 result)."""
    flags = {m: m.training for m in model.modules()}
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    out = []
    try:
        for i in range(inputs.shape[0]):
            loss = F.cross_entropy(model(inputs[i : i + 1]), targets[i : i + 1], reduction="sum")
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            out.append(sum(g.double().square().sum() for g in grads if g is not None).sqrt())
    finally:
        for m, flag in flags.items():
            m.training = flag
    return torch.stack(out)


def method_job(cfg: dict, method: str, dataset: str, variant: str, seed: int, results: Path, data_dir: Path,
               out: Path | None = None) -> dict:
    """The keyword arguments of the :class:`reuse.workflow.Job` that the generic training rule would
    give one run of a registered method: inputs under ``results`` (where the earlier runs are),
    outputs in the run's folder under ``out`` (default ``results``)."""
    from reuse.methods.registry import get

    m = get(method, cfg)
    key, ckpt_name = m.final_checkpoint(cfg, variant)
    run = Path(out or results) / m.run_dir(cfg, dataset, variant, seed)
    return {"method": method, "variant": variant, "cfg": m.variant(cfg, variant), "model": m.model(cfg, variant),
            "model_cfg": cfg["models"][m.model(cfg, variant)], "recipe": m.recipe(cfg, variant), "seed": seed,
            "data_dir": str(data_dir),
            "inputs": {k: [str(Path(results) / f) for f in v] for k, v in m.inputs(cfg, dataset, variant, seed).items()},
            "params": m.params(cfg, dataset, variant),
            "outputs": {"ckpts": {key: str(run / "ckpt" / ckpt_name)}, "metrics": str(run / "metrics.jsonl"),
                        "run": str(run / "run.json"), "predictions": str(run / "predictions.npz"),
                        "example_stats": str(run / "example_stats.npz") if m.example_stats(cfg, variant) else None,
                        "extra": [str(run / f) for f in m.extra_outputs(cfg, variant)]},
            "device_name": "cpu", "progress": "off"}


def train_baseline(cfg: dict, data_dir: Path, run: Path, model: str, seed: int = 0, *, example_stats: bool = False,
                   epochs: int | None = None) -> Path:
    """A baseline run of ``model`` in folder ``run``, as the baseline rule trains it (its recipe and checkpoint
    epochs; ``epochs`` cuts the recipe to that many, with one checkpoint at its end). Returns ``run``."""
    from reuse.plan import checkpoint_epochs, recipe_for
    from reuse.workflow import train_run

    recipe = recipe_for(cfg, model) if epochs is None else {**recipe_for(cfg, model), "epochs": epochs}
    ckpts = checkpoint_epochs(cfg, model) if epochs is None else [epochs]
    run = Path(run)
    train_run(data_dir=str(data_dir), model_name=model, model_cfg=cfg["models"][model], recipe=recipe, seed=seed,
              device="cpu", progress="off",
              outputs={"ckpts": {e: str(run / "ckpt" / f"e{e}.pt") for e in ckpts}, "metrics": str(run / "metrics.jsonl"),
                       "run": str(run / "run.json"), "predictions": str(run / "predictions.npz"),
                       "example_stats": str(run / "example_stats.npz") if example_stats else None})
    return run


# ----------------------------------------------------------------------------- fork server jobs
# Stages that tests/test_zygote.py runs as rule jobs ("tests.helpers:zygote_<name>"), through the fork
# server (reuse.zygote) and in a process of their own, to compare the two.
def zygote_train(snakemake) -> None:
    """Train a tiny model on a fixed seed under :func:`reuse.workflow.run_rule` (which sets the
    job's threads); write its weights (``output.weights``, .npy), what the process looked like
    (``output.facts``, the same on both paths) and which process it was (``output.where``)."""
    import json
    import logging
    import random
    import tempfile

    import numpy as np

    from reuse.workflow import run_rule

    where = {"pid": os.getpid(), "ppid": os.getppid(), "torch_seed": torch.initial_seed(),
             "numpy_draw": float(np.random.rand())}  # a fresh process's generators start unseeded
    facts = {"root_handlers": len(logging.getLogger().handlers), "cwd": os.getcwd(),
             "var": os.environ.get("ZYGOTE_TEST_VAR"), "argv": sys.argv[2:], "tmp": tempfile.gettempdir(),
             "streams": [(s.encoding, s.errors, s.line_buffering, s.write_through, type(s.buffer).__name__)
                         for s in (sys.stdin, sys.stdout, sys.stderr)],
             "cuda_initialized": torch.cuda.is_initialized()}

    def train(sm) -> None:
        seed_everything(int(sm.params.seed))
        facts.update(threads=torch.get_num_threads(), random=random.random(), numpy=float(np.random.rand()))
        model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 4))
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        x, y = torch.randn(512, 16), torch.randint(0, 4, (512,))
        for _ in range(20):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        np.save(sm.output.weights, torch.cat([p.detach().flatten() for p in model.parameters()]).numpy())
        Path(sm.output.facts).write_text(json.dumps(facts, sort_keys=True))
        Path(sm.output.where).write_text(json.dumps(where))

    run_rule(snakemake, train)


def zygote_where(snakemake) -> None:
    """Write which process ran the job (``pid``, ``ppid``) to ``output[0]``."""
    import json

    Path(snakemake.output[0]).write_text(json.dumps({"pid": os.getpid(), "ppid": os.getppid()}))


def zygote_sleep(snakemake) -> None:
    """Write the job's pid to ``output.started``, sleep ``params.sleep`` seconds, then touch ``output.done``."""
    import time

    Path(snakemake.output.started).write_text(str(os.getpid()))
    time.sleep(float(snakemake.params.sleep))
    Path(snakemake.output.done).touch()


def zygote_fail(snakemake) -> None:
    """Say so on stderr, then raise ``ValueError``."""
    print("about to fail", file=sys.stderr)
    raise ValueError(f"boom {snakemake.params.n}")


def zygote_exit(snakemake) -> None:
    sys.exit(snakemake.params.code)


def zygote_reuse_error(snakemake) -> None:
    """A :class:`reuse.errors.ReuseError` under run_rule: one clear line and exit status 1."""
    from reuse.errors import ReuseError
    from reuse.workflow import run_rule

    def stage(sm):
        raise ReuseError(f"nothing to do for {sm.params.n}")

    run_rule(snakemake, stage)
