"""The stages the Snakemake rules run. Rule scripts are one call into here.

Each stage reads its inputs, does its work in a scratch place, and moves finished files onto the
declared outputs only at the end, so a killed job leaves either no output or a complete one.

The shared stages (data, baselines, logit caches, scores, run tables, the report) are here. A
method's stages live in its folder (``reuse/methods/<name>/stage.py``): the generic training rule
hands each run to its method's stage as a :class:`Job` (:func:`train_method`), the generic study rule
calls the study's builder (:func:`run_study`), and a method's own rules call their stage through
:func:`run_stage`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import logging
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

import reuse
from reuse import data as rdata
from reuse import faults
from reuse import ops
from reuse.cache import LogitCache, views_for, write_logit_cache
from reuse.errors import ReuseError
from reuse.io import atomic_path, read_csv, read_json, save_npz, sha256_file, write_json, write_jsonl
from reuse.methods.registry import resolve
from reuse.models import build_model
from reuse.models.text import check_vocab
from reuse.train import Algorithm, Trainer, build_from_checkpoint, evaluate, load_checkpoint, seed_everything
from reuse.train import distributed

log = logging.getLogger("reuse")


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ReuseError("config asks for device: cuda but torch sees no GPU; set device: auto or cpu")
    return torch.device(device)


@contextlib.contextmanager
def logged(log_path: str | None, threads: int = 1):
    """Send logging and stderr to the job's log file, set the thread count, and turn a
    :class:`ReuseError` into one clear message (no traceback) and exit status 1."""
    torch.set_num_threads(max(1, int(threads)))
    stream = open(log_path, "a", buffering=1) if log_path else sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    old_stderr = sys.stderr
    if log_path:
        sys.stderr = stream
    try:
        yield
    except ReuseError as e:
        log.error("%s", e)
        print(f"reuse error: {e}", file=old_stderr)
        raise SystemExit(1) from None
    except Exception:
        log.exception("unexpected error (a bug in reuse: please report it with this log)")
        raise
    finally:
        sys.stderr = old_stderr
        root.removeHandler(handler)
        if log_path:
            stream.close()


def run_rule(snakemake: Any, stage: Callable[..., None]) -> None:
    """Entry point of a rule script: run ``stage(snakemake)`` under :func:`logged`."""
    log_path = snakemake.log[0] if len(snakemake.log) else None
    with logged(log_path, snakemake.threads):
        log.info("rule %s, wildcards %s", snakemake.rule, dict(snakemake.wildcards))
        faults.arm(faults.label(snakemake.rule, dict(snakemake.wildcards)))  # inert unless REUSE_FAULTS is set
        remove_stale_temps(snakemake.output)
        stage(snakemake)


def remove_stale_temps(outputs: Any) -> None:
    """Delete what a killed earlier attempt of this job left of its writes: the temporary files
    (``.<name>.<random>.tmp*``, :func:`reuse.io.atomic_path`) beside each declared output. Snakemake runs
    one job per output at a time, so none of them is being written."""
    for out in outputs:
        out = Path(str(out))
        for tmp in out.parent.glob(glob.escape(f".{out.name}.") + "*.tmp*"):
            tmp.unlink(missing_ok=True)


def run_stage(snakemake: Any) -> None:
    """Entry point of ``rules/scripts/stage.py``: the stage named by the rule's ``params.stage``
    (``"module:function"``, e.g. a method's own rule) called with the Snakemake object."""
    run_rule(snakemake, lambda sm: resolve(sm.params.stage)(sm))


load_data = rdata.load


@dataclasses.dataclass
class Job:
    """One run of a method, as the generic training rule (``rules/methods.smk``) hands it to the
    method's stage (:attr:`reuse.methods.registry.Method.stage`).

    ``cfg``: the variant's block; ``recipe``: :meth:`Method.recipe`; ``inputs``: the files the run
    reads besides the data (:meth:`Method.inputs`), by name, as Snakemake staged them (with a storage
    provider these are local copies: read past runs and caches only through them); ``params``:
    :meth:`Method.params`; ``outputs``: the run's files, as :func:`fit_and_write` takes them.
    """

    method: str
    variant: str
    cfg: dict
    model: str
    model_cfg: dict
    recipe: dict
    seed: int
    data_dir: str
    inputs: dict[str, list[str]]
    params: dict
    outputs: dict[str, Any]
    device_name: str = "auto"
    progress: str = "auto"
    #: the run's budget in multiples of its model's recipe epochs (:meth:`Method.budget`); None: the
    #: variant's ``budget``, else 1
    budget: float | None = None
    _data: Any = dataclasses.field(default=None, repr=False)

    @property
    def device(self) -> torch.device:
        return pick_device(self.device_name)

    def data(self):
        """The prepared dataset (loaded once)."""
        if self._data is None:
            self._data = load_data(self.data_dir)
        return self._data

    def fit(self, data, *, recipe: dict, algorithms: list[Algorithm] = (), reused: list[dict] = (),
            init: dict | None = None, init_id: str | None = None, initial_cost: dict | None = None,
            model_cfg: dict | None = None, seed: int | None = None, method_cfg: dict | None = None,
            finish: Callable[[Trainer], dict] | None = None) -> None:
        """Train the run with ``algorithms`` and write its outputs (:func:`fit_and_write`). A stage
        that decides the model or the seed itself (from a proposal made at run time) passes ``model_cfg``, ``seed`` and
        the run's recorded ``method_cfg``."""
        fit_and_write(data=data, model_name=self.model, model_cfg=model_cfg or self.model_cfg, recipe=recipe,
                      seed=self.seed if seed is None else seed, device=self.device, outputs=self.outputs,
                      progress=self.progress, method=self.method, variant=self.variant, algorithms=algorithms,
                      reused=reused, method_cfg=self.cfg if method_cfg is None else method_cfg, init=init,
                      init_id=init_id, initial_cost=initial_cost, finish=finish, budget=self.budget)

    @classmethod
    def from_rule(cls, sm: Any) -> "Job":
        """The job of a generic training rule's Snakemake object."""
        inputs = {k: [str(f) for f in (v if isinstance(v, list) else [v])] for k, v in sm.input.items()
                  if k not in ("npz", "meta")}
        key = sm.params.ckpt_key
        return cls(method=sm.params.method, variant=sm.params.variant, cfg=dict(sm.params.cfg), model=sm.params.model,
                   model_cfg=dict(sm.params.model_cfg), recipe=dict(sm.params.recipe), seed=int(sm.wildcards.seed),
                   data_dir=str(Path(sm.input.npz).parent), inputs=inputs, params=dict(sm.params.extra),
                   outputs={"ckpts": {key: sm.output.ckpts[0]}, "metrics": sm.output.metrics, "run": sm.output.run,
                            "predictions": sm.output.predictions,
                            "example_stats": sm.output.example_stats[0] if sm.output.example_stats else None,
                            "extra": [str(f) for f in sm.output.extra]},
                   device_name=sm.params.device, progress=sm.params.progress,
                   budget=_job_budget(sm))


def _job_budget(sm: Any) -> float | None:
    """The budget of a method run (:meth:`reuse.methods.registry.Method.budget`), planned from the
    workflow config the job's Snakemake object carries; None where it carries none."""
    config = getattr(sm, "config", None)
    if not isinstance(config, dict) or "models" not in config:
        return None
    from reuse.methods import registry

    return registry.get(sm.params.method, config).budget(config, sm.params.variant)


def train_method(snakemake: Any) -> None:
    """Entry point of ``rules/scripts/train_method.py``: one run of a registered method, by its stage."""
    run_rule(snakemake, lambda sm: resolve(sm.params.stage)(Job.from_rule(sm)))


def run_study(snakemake: Any) -> None:
    """Entry point of ``rules/scripts/study.py``: a study table by its builder (``params.build``)."""
    run_rule(snakemake, lambda sm: resolve(sm.params.build)(
        runs_csvs=list(sm.input.runs), baseline_csv=sm.input.baselines,
        extra={k: list(v) for k, v in sm.input.items() if k not in ("runs", "baselines")},
        params=dict(sm.params.params), out_csv=sm.output[0]))


# ----------------------------------------------------------------------------- rule entry points
# One per rule script of the shared rules (``rules/scripts/<name>.py``): the script hands its job to
# ``reuse.zygote.run(snakemake, "reuse.workflow:rule_<name>")``, which needs a function it can import
# by name. Each one unpacks the Snakemake object into its stage's arguments under run_rule.
def rule_prepare_data(snakemake: Any) -> None:
    run_rule(snakemake, lambda sm: prepare_data(sm.wildcards.dataset, dict(sm.params.spec), sm.output.npz,
                                                sm.output.meta))


def rule_train_baseline(snakemake: Any) -> None:
    """A baseline run (``rules/baseline.smk``): the run at budget 1, or, where the rule's params name
    one (``variant``, ``budget``), a run of the budget curve, whose one checkpoint is ``last``."""
    run_rule(snakemake, lambda sm: train_baseline(
        nproc=int(sm.params.nproc), log_path=sm.log[0] if len(sm.log) else None, threads=sm.threads,
        data_dir=str(Path(sm.input.npz).parent), model_name=sm.params.model, model_cfg=dict(sm.params.model_cfg),
        recipe=dict(sm.params.recipe), seed=int(sm.wildcards.seed), device=sm.params.device,
        progress=sm.params.progress, variant=getattr(sm.params, "variant", None),
        budget=getattr(sm.params, "budget", None),
        outputs={"ckpts": dict(zip(sm.params.epochs, sm.output.ckpts)), "metrics": sm.output.metrics,
                 "run": sm.output.run, "predictions": sm.output.predictions,
                 "example_stats": sm.output.example_stats[0] if sm.output.example_stats else None}))


def rule_logit_cache(snakemake: Any) -> None:
    run_rule(snakemake, lambda sm: logit_cache(
        data_dir=str(Path(sm.input.npz).parent), checkpoints=list(sm.input.ckpts),
        out_dirs=[str(Path(p).parent) for p in sm.output if p.endswith("meta.json")],
        cache_cfg=dict(sm.params.cache), device=sm.params.device))


def rule_summarize(snakemake: Any) -> None:
    run_rule(snakemake, lambda sm: summarize(list(sm.input), sm.output[0]))


def rule_score_run(snakemake: Any) -> None:
    run_rule(snakemake, lambda sm: score_run(
        data_dir=str(Path(sm.input.npz).parent), run_dir=str(Path(sm.input.run).parent), epochs=list(sm.params.epochs),
        names=list(sm.params.names), batch_size=sm.params.batch_size, device=sm.params.device,
        out_npz=sm.output.npz, out_json=sm.output.json))


def rule_score_table(snakemake: Any) -> None:
    run_rule(snakemake, lambda sm: score_table(
        run_npzs=[f for f in sm.input if f.endswith(".npz")], run_jsons=[f for f in sm.input if f.endswith(".json")],
        out_parquet=sm.output.parquet, out_json=sm.output.json))


def rule_score_agreement(snakemake: Any) -> None:
    run_rule(snakemake, lambda sm: score_agreement(run_npzs=list(sm.input), out_csv=sm.output[0]))


def rule_report(snakemake: Any) -> None:
    # the results folder is the one holding summary.parquet
    run_rule(snakemake, lambda sm: report(results=str(Path(sm.output.parquet).parent), config=dict(sm.params.config)))


def run_key(run_dir: str | os.PathLike) -> str:
    """A run's folder below its dataset, ``<model>/baseline/s<seed>`` or
    ``<model>/<method>/<variant>/s<seed>``, whatever folder holds the results: how studies match a
    run table's rows with files that another job staged elsewhere (a storage provider's local copies)."""
    parts = Path(run_dir).parts
    return "/".join(parts[-3:] if parts[-2] == "baseline" else parts[-4:])


def past_run_cost(run_dir: str) -> list[dict]:
    """What reusing the past run ``run_dir`` costs: its own training, and everything it reused in turn."""
    r = read_json(f"{run_dir}/run.json")
    return [{"kind": "past_run", "path": str(run_dir), "time_s": r["cost"]["train_time_s"],
             "flops": r["cost"]["train_flops"], "test_acc": r["final"]["test_acc"]}] + list(r.get("reused", []))


# ----------------------------------------------------------------------------- stages
def prepare_data(name: str, spec: dict, out_npz: str, out_json: str) -> None:
    t = time.perf_counter()
    meta = rdata.prepare(name, spec, out_npz, out_json)
    log.info("prepared %s: %d train / %d test examples, %d classes, input %s, in %.1fs", name, meta["n_train"],
             meta["n_test"], meta["num_classes"], meta["input_shape"], time.perf_counter() - t)


def train_run(*, data_dir: str, model_name: str, model_cfg: dict, recipe: dict, seed: int, device: str,
              outputs: dict[str, Any], progress: str = "auto", variant: str | None = None,
              budget: float | None = None) -> None:
    """Train one baseline run and write its declared outputs (see :func:`fit_and_write`); ``variant``
    and ``budget`` name a run of the baseline's budget curve (:func:`reuse.plan.budget_variant`).

    Under ``torchrun`` (``WORLD_SIZE`` > 1: ``python -m reuse train-run SPEC.json``) every process
    calls this: they join one process group and train the run data-parallel, and only rank 0 writes.
    """
    dev = distributed.init(pick_device(device))
    done = False
    try:
        fit_and_write(data=rdata.load(data_dir), model_name=model_name, model_cfg=model_cfg, recipe=recipe,
                      seed=seed, device=dev, outputs=outputs, progress=progress, variant=variant,
                      budget=1.0 if budget is None else float(budget))
        done = True
    finally:
        distributed.teardown(barrier=done)


def train_baseline(*, nproc: int = 1, log_path: str | None = None, threads: int = 1, **train_kwargs: Any) -> None:
    """The baseline rule's stage: :func:`train_run` in this process, or, with ``nproc`` > 1 (config
    ``ddp_processes``), in ``nproc`` data-parallel processes under ``torchrun`` that share the job's
    ``threads`` and append their output to ``log_path``."""
    if int(nproc) <= 1:
        train_run(**train_kwargs)
    else:
        distributed.launch_train_run(train_kwargs, nproc=int(nproc), log_path=log_path, threads=threads)


def fit_and_write(*, data, model_name: str, model_cfg: dict, recipe: dict, seed: int, device: torch.device,
                  outputs: dict[str, Any], progress: str = "auto", method: str = "baseline", variant: str | None = None,
                  algorithms: list[Algorithm] = (), reused: list[dict] = (), method_cfg: dict | None = None,
                  init: dict | None = None, init_id: str | None = None, initial_cost: dict | None = None,
                  finish: Callable[[Trainer], dict] | None = None, budget: float | None = None) -> None:
    """Train one run with ``algorithms`` and write its declared outputs.

    ``outputs``: ``ckpts`` ({epoch: path}), ``metrics``, ``run`` (run.json), ``predictions`` and,
    optionally, ``example_stats`` (per-epoch per-example correctness and loss). The
    run's progress lives in ``state/`` beside them until the run finishes; a rerun after a kill
    resumes from ``state/last.pt``. ``reused`` lists the cost of what the run reused (past runs,
    caches), kept apart from its own cost in run.json.

    ``init``: a state dict the run starts from instead of its fresh initialisation (past weights, or
    a mix of them), named by ``init_id`` (it joins the trainer's identity, so a resume never mixes starting
    points; on resume the weights come from ``state/last.pt``). ``initial_cost``: work done for the
    run before training (see :class:`reuse.train.Trainer`). A recipe with ``epochs: 0`` evaluates
    and writes the starting model as it is.

    ``finish(trainer)``: called once training is done (also when a rerun finds it done), before
    any output is written; it writes the method's own files (``outputs["extra"]``) and returns
    fields added to run.json. A run an algorithm stopped early records why in run.json's ``stopped``.

    ``budget``: the run's budget in multiples of its model's recipe epochs, run.json's ``budget``
    (default: ``method_cfg``'s ``budget`` if it has one, else 1). Where the data have a validation
    split (``holdout``), the final model is evaluated on it too: run.json's ``final.val_acc`` and
    ``final.val_loss``, its cost added to the evaluation cost (never the training cost).
    """
    if budget is None:
        budget = float((method_cfg or {}).get("budget", 1.0)) if isinstance(method_cfg, dict) else 1.0
    run_dir = Path(outputs["run"]).parent
    state_dir = run_dir / "state"
    spec = {"arch": model_cfg["arch"], "args": model_cfg.get("args", {}), "input_shape": list(data.input_shape),
            "num_classes": data.num_classes}
    check_vocab(spec, data.meta)  # a text dataset's token ids fit the model's embedding table
    seed_everything(seed)
    model = build_model(spec["arch"], spec["input_shape"], spec["num_classes"], **spec["args"])
    n_params = sum(p.numel() for p in model.parameters())
    if init is not None:
        model.load_state_dict(init)  # the stage that made `init` checked it fits the model
    log.info("%s/%s seed %d: %s with %d parameters on %s, %d epochs", data.name, model_name, seed, spec["arch"],
             n_params, device, recipe["epochs"])
    started = time.time()
    trainer = Trainer(model, data, recipe, seed=seed, state_dir=state_dir, model_spec=spec, device=device,
                      progress=progress, algorithms=algorithms, init_id=init_id, initial_cost=initial_cost)
    state = trainer.fit()
    more = finish(trainer) if finish is not None and distributed.is_main() else {}

    pred = evaluate(state.model, data.test, recipe.get("eval_batch_size", 1024), device, keep_logits=True,
                    shard=trainer.shard)
    val = evaluate_val(state.model, data, recipe, device, shard=trainer.shard)
    if not distributed.is_main():
        return  # under data parallelism rank 0 writes the run's outputs
    save_npz(outputs["predictions"], idx=np.arange(len(data.test)), target=data.test.y.numpy(), logits=pred["logits"].numpy())
    ckpt_files = {}
    for epoch, path in outputs["ckpts"].items():
        # Link (not move) out of state/, so a kill here leaves state/ whole for the rerun.
        src = state_dir / f"e{epoch}.pt"
        if epoch == "last" or (not src.exists() and int(epoch) == recipe["epochs"]):
            src = state_dir / "last.pt"  # the final epoch is kept even when not in checkpoint_epochs
        _link_or_copy(src, Path(path))
        ckpt_files[str(epoch)] = {"path": str(path), "sha256": sha256_file(path)}
    if outputs.get("example_stats"):
        if trainer.example_stats is None:
            raise ReuseError("example_stats.npz is a declared output but the recipe has example_stats: false")
        save_npz(outputs["example_stats"], correct=trainer.example_stats["correct"].numpy(),
                 loss=trainer.example_stats["loss"].numpy())
    write_jsonl(outputs["metrics"], state.metrics)
    last = state.metrics[-1]
    write_json(outputs["run"], {
        "dataset": data.name, "model": model_name, "method": method, "variant": variant, "seed": seed,
        "config": method_cfg,
        "arch": spec["arch"],
        "args": spec["args"], "num_parameters": n_params, "recipe": recipe,
        "fingerprint": data.train.fingerprint,
        "budget": float(budget),
        "final": {"test_acc": pred["acc"], "test_loss": pred["loss"], **_calibration(pred["logits"], data.test.y),
                  **val_fields(val)},
        "best_test_acc": max(m.get("test_acc", 0.0) for m in state.metrics),
        "cost": with_val_cost({k: last[k] for k in ("train_time_s", "eval_time_s", "train_flops", "eval_flops",
                                                    "examples_seen", "step")}, val),
        "reused": list(reused), "checkpoints": ckpt_files, "device": str(device), "threads": torch.get_num_threads(),
        "processes": distributed.world_size(),
        "versions": {"reuse": reuse.__version__, "torch": torch.__version__, "python": platform.python_version()},
        "stopped": state.extra.get("stop"), "started": started, "finished": time.time(), **more})
    shutil.rmtree(state_dir)
    log.info("finished: test accuracy %.4f, %.1fs training", pred["acc"], last["train_time_s"])


def evaluate_val(model: torch.nn.Module, data, recipe: dict, device: torch.device,
                 shard: tuple[int, int] | None = None) -> dict[str, Any] | None:
    """The final model's loss and accuracy on the dataset's validation split (the ``holdout`` examples
    taken out of training), with what evaluating it cost (``time_s``, ``flops``); None without one.
    Under data parallelism every process calls it (as :func:`reuse.train.evaluate`)."""
    if getattr(data, "val", None) is None or len(data.val) == 0:
        return None
    t = time.perf_counter()
    fl: dict[str, int] = {}
    ev = evaluate(model, data.val, recipe.get("eval_batch_size", 1024), device, flops=fl, shard=shard)
    return {"acc": ev["acc"], "loss": ev["loss"], "time_s": time.perf_counter() - t, "flops": fl.get("eval_flops", 0)}


def val_fields(val: dict[str, Any] | None) -> dict[str, float]:
    """run.json's ``final`` fields of a validation evaluation (:func:`evaluate_val`): none without one."""
    return {} if val is None else {"val_acc": val["acc"], "val_loss": val["loss"]}


def with_val_cost(cost: dict[str, Any], val: dict[str, Any] | None) -> dict[str, Any]:
    """``cost`` with a validation evaluation's time and FLOPs added to its evaluation cost."""
    if val is None:
        return cost
    return {**cost, "eval_time_s": cost["eval_time_s"] + val["time_s"], "eval_flops": cost["eval_flops"] + val["flops"]}


def _calibration(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, Any]:
    """Test NLL (cross-entropy, float64) and expected calibration error over 15 equal-width bins."""
    from reuse import metrics

    lg, t = logits.double().numpy(), targets.numpy()
    return {"test_nll": metrics.nll(lg, t), "test_ece": metrics.ece(lg, t, metrics.ECE_BINS),
            "ece_bins": metrics.ECE_BINS}


def _link_or_copy(src: Path, dst: Path) -> None:
    if not src.exists():
        raise ReuseError(f"{src} is missing, so {dst} cannot be written; delete {src.parent} to train the run again")
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # another file system: copied through the atomic writer (a full disk leaves no half copy)
        with atomic_path(dst, suffix=dst.suffix) as tmp:
            shutil.copyfile(src, tmp)


def logit_cache(*, data_dir: str, checkpoints: list[str], out_dirs: list[str], cache_cfg: dict, device: str) -> None:
    """Write the logit cache of each checkpoint into the matching folder of ``out_dirs``."""
    dev = pick_device(device)
    data = rdata.load(data_dir)
    for checkpoint in checkpoints:  # all readable and made on this data, before any cache is written
        load_checkpoint(checkpoint, fingerprint=data.train.fingerprint)
    for checkpoint, out_dir in zip(checkpoints, out_dirs, strict=True):
        ckpt = load_checkpoint(checkpoint, fingerprint=data.train.fingerprint)
        model = build_from_checkpoint(ckpt)
        seed = ckpt["seed"] if cache_cfg.get("seed") is None else cache_cfg["seed"]
        views = views_for(ckpt["recipe"].get("augment"), cache_cfg["views"], seed)
        t = time.perf_counter()
        meta = write_logit_cache(out_dir, model, data.train, views=views, fingerprint=data.train.fingerprint,
                                 source={"path": str(checkpoint), "epoch": ckpt["epoch"], "seed": ckpt["seed"],
                                         "sha256": sha256_file(checkpoint)},
                                 dtype=cache_cfg["dtype"], dense=cache_cfg["dense"], topk=cache_cfg["topk"],
                                 batch_size=cache_cfg["batch_size"], device=dev)
        cache = LogitCache.open(out_dir, fingerprint=data.train.fingerprint)
        clean = cache.logits(np.arange(len(data.train)), 0) if cache.meta["dense"] else \
            cache.probs(np.arange(len(data.train)), 0).log()
        acc = float((clean.argmax(1) == data.train.y).float().mean())
        el2n = float(ops.el2n(clean, data.train.y).mean())
        log.info("%s: cached %d examples x %d views x %d classes (%s) in %.1fs; clean view: train accuracy %.4f, "
                 "mean EL2N %.4f", out_dir, meta["n"], meta["num_views"], meta["num_classes"], meta["dtype"],
                 time.perf_counter() - t, acc, el2n)


def summarize(run_files: list[str], out_csv: str) -> None:
    """One row per finished run (dataset, model, method, variant, seed, test and validation accuracy,
    budget, own cost, reused cost) as CSV."""
    import pandas as pd

    rows = []
    for f in run_files:
        r = read_json(f)
        reused = r.get("reused", [])
        rows.append({"dataset": r["dataset"], "model": r["model"], "method": r["method"],
                     "variant": r.get("variant") or "", "seed": r["seed"], "arch": r["arch"],
                     "params": r["num_parameters"], "test_acc": r["final"]["test_acc"],
                     "test_loss": r["final"]["test_loss"], "val_acc": r["final"].get("val_acc"),
                     "val_loss": r["final"].get("val_loss"), "budget": r.get("budget"),
                     "best_test_acc": r["best_test_acc"],
                     "epochs": r["recipe"]["epochs"], **r["cost"],
                     "reused_time_s": sum(x["time_s"] for x in reused), "reused_flops": sum(x["flops"] for x in reused),
                     "reused_cache_bytes": sum(x.get("bytes", 0) for x in reused), "run": str(Path(f).parent),
                     **{f"cfg_{k}": v for k, v in _flat(r.get("config") or {}).items()}})
    if not rows:  # a dataset no model trains baselines on (a method's runs only): a table of no rows
        with atomic_path(out_csv, suffix=".csv") as tmp:
            pd.DataFrame(columns=["dataset", "model", "method", "variant", "seed", "test_acc"]).to_csv(tmp, index=False)
        log.info("summary of no runs")
        return
    df = pd.DataFrame(rows).sort_values(["dataset", "model", "method", "variant", "seed"])
    with atomic_path(out_csv, suffix=".csv") as tmp:
        df.to_csv(tmp, index=False)
    agg = df.groupby(["dataset", "model", "method", "variant"]).agg(
        n=("seed", "count"), acc_mean=("test_acc", "mean"), acc_std=("test_acc", "std"),
        time_s=("train_time_s", "mean"))
    log.info("summary of %d runs:\n%s", len(df), agg.to_string(float_format=lambda v: f"{v:.4f}"))


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}_"))
        else:
            out[f"{prefix}{k}"] = v if not isinstance(v, list) else ",".join(map(str, v))
    return out


# ----------------------------------------------------------------------------- scores and data methods
def score_run(*, data_dir: str, run_dir: str, epochs: list[int], names: list[str], batch_size: int, device: str,
              out_npz: str, out_json: str) -> None:
    """Score every training example at the checkpoints ``epochs`` of one past run (reuse.scores)."""
    from reuse import scores

    data = rdata.load(data_dir)
    meta = scores.score_run(run_dir, data, epochs=epochs, names=names, batch_size=batch_size,
                            device=pick_device(device), out_npz=out_npz, out_json=out_json)
    log.info("scored %d examples of %s at epochs %s in %.1fs", meta["n"], run_dir, epochs, meta["cost"]["time_s"])


def score_table(*, run_npzs: list[str], run_jsons: list[str], out_parquet: str, out_json: str) -> None:
    from reuse import scores

    df = scores.write_score_table(run_npzs, run_jsons, out_parquet, out_json)
    means = df.groupby(["score", "epoch"], observed=True)["value"].mean().unstack("epoch")
    log.info("score table of %d runs, %d rows; mean per score and epoch:\n%s", len(run_npzs), len(df),
             means.to_string(float_format=lambda v: f"{v:.4g}"))


def score_agreement(*, run_npzs: list[str], out_csv: str) -> None:
    """The rank-agreement study of the scores across runs, epochs and numbers of runs."""
    from reuse import scores

    df = scores.rank_agreement(run_npzs)
    with atomic_path(out_csv, suffix=".csv") as tmp:
        df.to_csv(tmp, index=False)
    log.info("rank agreement:\n%s", df[df["kind"] == "runs"].to_string(index=False, float_format=lambda v: f"{v:.3f}"))


def variant_study(*, runs_csvs: list[str], baseline_csv: str, extra: dict[str, list[str]], params: dict,
                  out_csv: str) -> None:
    """Aggregate a method's runs per setting (mean, std, n over seeds), beside the baseline of the same
    model: one row per combination of ``params["keys"]`` (summary columns such as ``cfg_score``)."""
    import pandas as pd

    keys = list(params["keys"])
    runs = pd.concat([read_csv(f) for f in runs_csvs], ignore_index=True)
    for k in keys:
        if k not in runs:
            runs[k] = float("nan")
    if "cfg_score" in runs:
        runs["cfg_score"] = runs["cfg_score"].fillna("none")
    agg = runs.groupby(keys + ["variant"], dropna=False).agg(
        n=("seed", "count"), acc_mean=("test_acc", "mean"), acc_std=("test_acc", "std"),
        steps=("step", "mean"), examples_seen=("examples_seen", "mean"), train_time_s=("train_time_s", "mean")
    ).reset_index()
    base = read_csv(baseline_csv)
    base = base[base["model"].isin(agg["model"])].groupby("model").agg(
        baseline_n=("seed", "count"), baseline_acc_mean=("test_acc", "mean"), baseline_acc_std=("test_acc", "std"),
        baseline_steps=("step", "mean")).reset_index()
    agg = agg.merge(base, on="model", how="left")
    agg["acc_delta"] = agg["acc_mean"] - agg["baseline_acc_mean"]
    with atomic_path(out_csv, suffix=".csv") as tmp:
        agg.to_csv(tmp, index=False)
    log.info("study of %s:\n%s", ", ".join(sorted(set(runs["method"]))),
             agg.drop(columns=["model"]).to_string(index=False, float_format=lambda v: f"{v:.4f}"))


# ----------------------------------------------------------------------------- report
def report(*, results: str, config: dict | None = None, out_dir: str | None = None) -> dict[str, Any]:
    """The summary table (``<results>/summary.parquet``, ``.csv``) and the report pages from every run
    under ``results``; with ``config``, every run it declares that did not finish is shown missing."""
    from reuse.report import build

    out = build(results, config, out_dir=out_dir)
    runs = out["runs"]
    bad = runs[runs["status"] != "ok"]
    for r in bad.itertuples(index=False):
        log.warning("not finished (%s): %s/%s/%s/%s seed %s %s", r.status, r.dataset, r.model, r.method, r.variant,
                    r.seed, r.error)
    log.info("report: %d of %d runs finished; %s", len(runs) - len(bad), len(runs),
             Path(out_dir or Path(results) / "report") / "index.html")
    return out
