from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
MNIST_ROOT = ROOT.parent / "shared" / "data"

torch.set_num_threads(1)
# fork servers the workflow tests start (reuse/zygote.py) exit soon after the last job
os.environ.setdefault("REUSE_ZYGOTE_IDLE_S", "20")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> Path:
    """A prepared MNIST-1D of 300 examples (240 train / 60 test)."""
    from reuse.data import prepare

    d = tmp_path_factory.mktemp("tiny_data")
    prepare("tiny", {"kind": "mnist1d", "mnist1d": {"num_samples": 300, "seed": 3}}, d / "data.npz", d / "dataset.json")
    return d


@pytest.fixture(scope="session")
def tiny_data(tiny_data_dir):
    from reuse.data import load

    return load(tiny_data_dir)
