"""Shared fixtures of the fault-injection tests (tests/faults): the finished artifacts of the tiny
workflow config that every stage reads, built once per session, a fresh copy of them per test, and
artifacts of the right format made for other data (a second prepared dataset) to swap in."""

from __future__ import annotations

import shutil
from pathlib import Path

from typing import Callable

import pytest
import torch
import yaml

from reuse import workflow
from reuse.methods.registry import get, resolve, studies
from reuse.plan import checkpoint_epochs, score_epochs
from reuse.workflow import Job
from tests.helpers import WORKFLOW_CONFIG, method_job, smk, train_baseline

DS = "tiny"


def tiny_config() -> dict:
    from reuse.config import validate_config

    return validate_config(yaml.safe_load(WORKFLOW_CONFIG.read_text()))


def method_cases(cfg: dict) -> list[tuple[str, str, int]]:
    """(method, variant, seed): the first variant and seed on the tiny dataset of every registered
    method (the registry's list, plugins included), so a new method is never silently skipped."""
    from reuse.methods.registry import methods

    out = []
    for m in methods(cfg):
        variants = [v for ds, v in m.variants(cfg) if ds == DS]
        if variants:
            out.append((m.name, variants[0], m.seeds(cfg, variants[0])[0]))
    return out


def absent_methods(cfg: dict) -> list[str]:
    """The registered methods the tiny config declares no run of (so no stage of theirs runs here)."""
    from reuse.methods.registry import methods

    return [m.name for m in methods(cfg) if not any(ds == DS for ds, _ in m.variants(cfg))]


def stray_temps(root: Path) -> list[str]:
    """Temporary files of the atomic writer (``.<name>.<random>.tmp<suffix>``) anywhere under ``root``."""
    return sorted(str(p.relative_to(root)) for p in root.rglob(".*.tmp*"))


def others(snap: dict, *prefixes: str) -> dict:
    """The entries of a :func:`tests.helpers.snapshot` outside the folders/files ``prefixes``."""
    return {k: v for k, v in snap.items() if not k.startswith(prefixes)}


# ----------------------------------------------------------------------------- the stages, in-process
# Each runs one artifact-producing stage on the results folder ``res`` as its rule would, after removing
# the rule's outputs (as Snakemake does before a job).
CFG = tiny_config()
BASE = f"{DS}/mlp/baseline/s0"  # the baseline run the training cases redo
CNN = f"{DS}/cnn/baseline/s0"  # the scored, cached, attacked baseline run


def _data(res: Path) -> str:
    return str(res / DS / "data")


def remove(res: Path, *rel: str) -> None:
    """Remove outputs (files or folders) before the stage runs, as Snakemake does."""
    for r in rel:
        p = res / r
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- the stages
def prepare(res: Path) -> None:
    remove(res, f"{DS}/data/data.npz", f"{DS}/data/dataset.json")
    d = res / DS / "data"
    workflow.prepare_data(DS, CFG["datasets"][DS], str(d / "data.npz"), str(d / "dataset.json"))


def baseline(res: Path) -> None:
    run = res / BASE
    remove(res, *(f"{BASE}/{f}" for f in ("ckpt", "metrics.jsonl", "run.json", "predictions.npz",
                                           "example_stats.npz", "state")))
    train_baseline(CFG, _data(res), run, "mlp", example_stats=True)


def logit_cache(res: Path) -> None:
    epochs = checkpoint_epochs(CFG, "cnn")
    remove(res, f"{CNN}/logits")
    workflow.logit_cache(data_dir=_data(res), checkpoints=[str(res / CNN / "ckpt" / f"e{e}.pt") for e in epochs],
                         out_dirs=[str(res / CNN / "logits" / f"e{e}") for e in epochs], cache_cfg=CFG["cache"],
                         device="cpu")


def score_run(res: Path) -> None:
    remove(res, f"{CNN}/scores.npz", f"{CNN}/scores.json")
    workflow.score_run(data_dir=_data(res), run_dir=str(res / CNN), epochs=score_epochs(CFG),
                       names=CFG["scores"]["names"], batch_size=CFG["scores"]["batch_size"], device="cpu",
                       out_npz=str(res / CNN / "scores.npz"), out_json=str(res / CNN / "scores.json"))


def _scored(res: Path, ext: str) -> list[str]:
    return [str(res / DS / "cnn" / "baseline" / f"s{s}" / f"scores.{ext}") for s in (0, 1)]


def score_table(res: Path) -> None:
    remove(res, f"{DS}/scores.parquet", f"{DS}/scores.json")
    workflow.score_table(run_npzs=_scored(res, "npz"), run_jsons=_scored(res, "json"),
                         out_parquet=str(res / DS / "scores.parquet"), out_json=str(res / DS / "scores.json"))


def score_agreement(res: Path) -> None:
    workflow.score_agreement(run_npzs=_scored(res, "npz"), out_csv=str(res / DS / "studies" / "score_agreement.csv"))


def adv_cache(res: Path) -> None:
    from reuse.methods.adversarial.stage import adv_cache as stage

    remove(res, f"{DS}/adv/pgd")
    inputs = get("adv", CFG).cache_inputs(CFG, DS, "pgd")
    attack = CFG["adv"]["caches"]["pgd"]["attack"]
    stage(data_dir=_data(res), checkpoints=[str(res / f) for f in inputs["ckpts"]],
          runs=[str((res / f).parent) for f in inputs["runs"]], attack=attack,
          out_npz=str(res / DS / "adv" / "pgd" / "adv.npz"), out_meta=str(res / DS / "adv" / "pgd" / "meta.json"),
          batch_size=attack["batch_size"], device="cpu")


def robust_eval(res: Path) -> None:
    from reuse.methods.adversarial.stage import robust_eval_run

    attack = CFG["adv"]["robust"]
    robust_eval_run(data_dir=_data(res), checkpoint=str(res / CNN / "ckpt" / "e3.pt"), attack=attack,
                    out_json=str(res / CNN / "robust.json"), batch_size=attack["batch_size"], device="cpu")


def summarize(res: Path) -> None:
    remove(res, f"{DS}/baselines.csv")
    workflow.summarize([str(res / DS / m / "baseline" / f"s{s}" / "run.json") for m in ("mlp", "cnn") for s in (0, 1)],
                       str(res / DS / "baselines.csv"))


def study(res: Path) -> None:
    s = studies(CFG)["prune"]
    resolve(s.build)(runs_csvs=[str(res / DS / "prune.csv")], baseline_csv=str(res / DS / "baselines.csv"), extra={},
                     params=s.params(CFG) if s.params else {}, out_csv=str(res / DS / "studies" / "prune.csv"))


def report(res: Path) -> dict:
    return workflow.report(results=str(res), config=None)


def method_run(name: str, variant: str, seed: int) -> Callable[[Path], None]:
    def run(res: Path) -> None:
        m = get(name, CFG)
        remove(res, m.run_dir(CFG, DS, variant, seed))
        job = method_job(CFG, name, DS, variant, seed, res, res / DS / "data")
        resolve(m.stage)(Job(**job))
    return run



@pytest.fixture(scope="session")
def cfg() -> dict:
    return tiny_config()


@pytest.fixture(scope="session")
def built(tmp_path_factory, cfg) -> Path:
    """A workflow folder where Snakemake made what every stage under test reads: the prepared data,
    the baselines (checkpoints, logit caches, run table), the scores, the adversarial cache, the run
    table of one method with a study, and every input of each registered method's first run."""
    wd = tmp_path_factory.mktemp("faults_built")
    targets = {f"{DS}/baselines.csv", f"{DS}/scores.parquet", f"{DS}/scores.json", f"{DS}/adv/pgd/meta.json",
               f"{DS}/prune.csv"}
    from reuse.methods.registry import get

    for name, variant, seed in method_cases(cfg):
        for files in get(name, cfg).inputs(cfg, DS, variant, seed).values():
            targets.update(files)
    r = smk(wd, *sorted(f"results/{t}" for t in targets))
    assert r.returncode == 0, r.stderr[-3000:]
    return wd


@pytest.fixture
def res(built, tmp_path) -> Path:
    """A fresh copy of the built results folder (modification times kept)."""
    out = tmp_path / "results"
    shutil.copytree(built / "results", out, copy_function=shutil.copy2)
    return out


@pytest.fixture(scope="session")
def foreign(tmp_path_factory, cfg, built) -> Path:
    """Right-format artifacts made for other data: the tiny dataset prepared from another seed, a CNN
    baseline trained on it (checkpoints, example statistics, run.json), its logit caches, its score
    files and score table, and an MLP baseline's checkpoints; laid out as the tiny results are
    (``<foreign>/tiny/...``, seed 0)."""
    from reuse import workflow
    from reuse.plan import checkpoint_epochs, score_epochs

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("faults_foreign")
    data = root / DS / "data"
    spec = {**cfg["datasets"][DS], "mnist1d": {**cfg["datasets"][DS]["mnist1d"], "seed": 8}}
    workflow.prepare_data(DS, spec, str(data / "data.npz"), str(data / "dataset.json"))
    for model in ("mlp", "cnn"):
        run = train_baseline(cfg, data, root / DS / model / "baseline" / "s0", model, example_stats=True)
        epochs = checkpoint_epochs(cfg, model)
    workflow.logit_cache(data_dir=str(data), checkpoints=[str(run / "ckpt" / f"e{e}.pt") for e in epochs],
                         out_dirs=[str(run / "logits" / f"e{e}") for e in epochs], cache_cfg=cfg["cache"],
                         device="cpu")
    workflow.score_run(data_dir=str(data), run_dir=str(run), epochs=score_epochs(cfg), names=cfg["scores"]["names"],
                       batch_size=cfg["scores"]["batch_size"], device="cpu", out_npz=str(run / "scores.npz"),
                       out_json=str(run / "scores.json"))
    workflow.score_table(run_npzs=[str(run / "scores.npz")], run_jsons=[str(run / "scores.json")],
                         out_parquet=str(root / DS / "scores.parquet"), out_json=str(root / DS / "scores.json"))
    return root


