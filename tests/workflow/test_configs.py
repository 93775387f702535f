"""Every shipped config (config.yaml, configs/*.yaml) validates and builds its whole DAG in a dry run,
with one training job for every run it declares; the full CIFAR-100 benchmark scales to thousands of
jobs. The datasets are stood in for by empty files in each kind's layout: a dry run only checks that
they are there."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from reuse.config import expected_runs, validate_config
from reuse.methods.registry import methods
from tests.helpers import ROOT, jobs, smk

pytestmark = pytest.mark.workflow
CONFIGS = [ROOT / "config.yaml", *sorted((ROOT / "configs").glob("*.yaml"))]
TRAINING_RULES = ("train_baseline", *(m.name for m in methods()))


def stand_in_data(spec: dict, root: Path) -> None:
    """Empty files where a dataset of ``spec``'s kind must be found."""
    kind = spec["kind"]
    files = {"mnist": ["MNIST/raw/train-images-idx3-ubyte"],
             "fashion_mnist": ["FashionMNIST/raw/train-images-idx3-ubyte"],
             "cifar10": [f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)] + ["cifar-10-batches-py/test_batch"],
             "cifar100": ["cifar-100-python/train", "cifar-100-python/test"],
             "imagefolder": [f"{spec.get('train_dir', 'train')}/c0/0.jpg", f"{spec.get('test_dir', 'val')}/c0/0.jpg"],
             "text": [spec.get("train_file", "train.csv"), spec.get("test_file", "test.csv")],
             "tabular": [spec[k] for k in ("file", "train_file", "test_file") if k in spec],
             "mnist1d": [], "clusters": []}[kind]
    for f in files:
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        (root / f).touch()


def local_copy(config: Path, tmp_path: Path, **overrides) -> tuple[Path, dict]:
    """``config`` with its datasets' roots pointed at stand-in data under ``tmp_path``."""
    cfg = yaml.safe_load(config.read_text())
    cfg.update(overrides)
    for name, spec in cfg["datasets"].items():
        spec["root"] = str(tmp_path / "data" / name)
        stand_in_data(spec, Path(spec["root"]))
    out = tmp_path / config.name
    out.write_text(yaml.safe_dump(cfg))
    return out, cfg


def training_jobs(counts: dict[str, int]) -> int:
    return sum(n for rule, n in counts.items() if rule.split("__")[0] in TRAINING_RULES and "__" in rule)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_builds_its_whole_dag(config, tmp_path):
    path, cfg = local_copy(config, tmp_path)
    validate_config(cfg, source=str(config))
    r = smk(tmp_path, "-n", config=path, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    counts = jobs(r.stdout)
    assert training_jobs(counts) == len(list(expected_runs(cfg))), counts
    assert counts["report"] == 1 and counts["all"] == 1
    assert not (tmp_path / "results").exists()  # a dry run writes nothing


def test_full_cifar100_benchmark_scales_to_thousands_of_jobs(tmp_path):
    """CIFAR-100 with 20 seeds per run and scores from 10 past runs: about 1,500 jobs. The dry run must
    finish well inside the subprocess timeout (about 10 s on 2 cores; docs/performance.md)."""
    base = yaml.safe_load((ROOT / "configs" / "cifar100.yaml").read_text())
    path, cfg = local_copy(ROOT / "configs" / "cifar100.yaml", tmp_path,
                           baseline={"seeds": list(range(20))}, scores={**base["scores"], "runs": 10})
    validate_config(cfg, source="cifar100 x 20 seeds")
    r = smk(tmp_path, "-n", config=path, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    counts = jobs(r.stdout)
    assert sum(counts.values()) >= 1400, sum(counts.values())
    assert training_jobs(counts) == len(list(expected_runs(cfg)))
    assert counts["score_run"] == 10 and counts["train_baseline__cifar100__resnet56"] == 20
