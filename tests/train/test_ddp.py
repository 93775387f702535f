"""Data-parallel training: 2 processes under torchrun with gloo on the CPU, against one process.

One torchrun launch (a module-scoped fixture) runs the trainer-level checks in both processes and
saves what each saw; the tests compare that with single-process runs made here. A second launch goes
through the workflow's launcher and ``python -m reuse train-run``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from reuse.train import load_checkpoint
from tests import helpers
from tests.helpers import ROOT, recipe

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with the gloo backend is not available in this torch build")

# batch_size 35 over 240 examples: global batches of 35 (slices of 18 and 17) and a last one of 30,
# so the per-slice loss weighting is needed for the data-parallel step to equal the single-process one.
RECIPE = recipe(epochs=3, batch_size=35, optimizer={"weight_decay": 5e-4},
                schedule={"name": "cosine", "warmup_epochs": 1}, checkpoint_epochs=[2], checkpoint_every=1,
                augment={"translate": 2, "flip": True}, example_stats=True)
NPROC = 2


def make_trainer(data, state_dir, recipe=RECIPE, **kw):
    """An MLP trainer (without dropout unless ``spec`` says so) of the recipe above."""
    return helpers.make_trainer(data, state_dir, recipe, **kw)


# The fixture `ddp` runs this under torchrun, after a first line `RECIPE = {...}` (the recipe above).
WORKER = """
import sys
from functools import partial
from pathlib import Path

import torch
torch.set_num_threads(1)

import reuse.train.trainer as tr
from reuse.data import load
from reuse.errors import ConfigError
from reuse.train import Algorithm, distributed
from tests import helpers
from tests.helpers import MLP_DROPOUT_SPEC, Stop, StopAfter

make_trainer = partial(helpers.make_trainer, recipe=RECIPE)
data, out = load(sys.argv[1]), Path(sys.argv[2])
distributed.init(torch.device("cpu"))
rank = distributed.rank()
saved = []
_save = tr.save_checkpoint
tr.save_checkpoint = lambda path, payload: (saved.append(Path(path).name), _save(path, payload))
res = {"world": distributed.world_size()}

s = make_trainer(data, out / "plain").fit()
res["plain"] = {"weights": s.model.state_dict(), "metrics": s.metrics}
t = make_trainer(data, out / "plain_stats")
t.fit()
res["example_stats"] = t.example_stats
res["saved"] = list(saved)

try:
    make_trainer(data, out / "resumed", spec=MLP_DROPOUT_SPEC, cls=partial(StopAfter, epoch=2)).fit()
except Stop:
    pass
t = make_trainer(data, out / "resumed", spec=MLP_DROPOUT_SPEC)
s = t.fit()
res["resumed"] = {"from": t.resumed_from, "weights": s.model.state_dict(), "metrics": s.metrics}
s = make_trainer(data, out / "straight", spec=MLP_DROPOUT_SPEC).fit()
res["straight"] = {"weights": s.model.state_dict(), "metrics": s.metrics}

errors = []
for kw in ({"algorithms": [Algorithm()]}, {"recipe": {**RECIPE, "batch_size": 239}},
           {"recipe": {**RECIPE, "batch_size": 1}}):
    try:
        make_trainer(data, out / "refused", **kw)
        errors.append(None)
    except ConfigError as e:
        errors.append(str(e))
res["errors"] = errors
torch.save(res, out / f"rank{rank}.pt")
distributed.teardown()
"""


def torchrun(args, cwd, timeout=120):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={NPROC}", *args]
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def ddp(tiny_data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    script = out / "worker.py"
    script.write_text(f"RECIPE = {RECIPE!r}\n" + textwrap.dedent(WORKER))
    torchrun([str(script), str(tiny_data_dir), str(out)], cwd=ROOT)
    return out, [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(NPROC)]


def assert_close_weights(a, b, exact=False):
    assert list(a) == list(b)  # the same keys: no "module." prefix from the DDP wrapper
    for k in a:
        if exact:
            assert torch.equal(a[k], b[k]), k
        else:
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


def test_data_parallel_step_matches_one_process(ddp, tiny_data, tmp_path):
    out, ranks = ddp
    assert [r["world"] for r in ranks] == [NPROC] * NPROC
    single = make_trainer(tiny_data, tmp_path / "single").fit()
    for r in ranks:  # every process ends with the single-process weights
        assert_close_weights(r["plain"]["weights"], single.model.state_dict())
    untimed = [[{k: v for k, v in m.items() if not k.endswith("time_s")} for m in r["plain"]["metrics"]] for r in ranks]
    assert untimed[0] == untimed[1]  # the reduced metrics agree
    for m, ref in zip(ranks[0]["plain"]["metrics"], single.metrics):
        for k in ("epoch", "step", "examples_seen", "train_flops", "eval_flops"):
            assert m[k] == ref[k], k
        for k in ("lr", "train_loss", "train_acc", "test_loss", "test_acc"):
            assert m[k] == pytest.approx(ref[k], rel=1e-4, abs=1e-6), k
    # the checkpoints rank 0 wrote hold the unwrapped weights
    ckpt = load_checkpoint(out / "plain" / "last.pt")
    assert ckpt["epoch"] == 3 and len(ckpt["rng_ranks"]) == NPROC
    assert_close_weights(ckpt["model"], single.model.state_dict())
    assert (out / "plain" / "e2.pt").exists()
    metrics = [json.loads(line) for line in (out / "plain" / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2, 3]


def test_only_rank_0_writes(ddp):
    _, ranks = ddp
    assert ranks[1]["saved"] == []
    assert ranks[0]["saved"] and set(ranks[0]["saved"]) == {"e2.pt", "last.pt"}


def test_example_stats_are_combined_over_processes(ddp, tiny_data, tmp_path):
    _, ranks = ddp
    t = make_trainer(tiny_data, tmp_path / "single")
    t.fit()
    ref = t.example_stats
    for r in ranks:
        got = r["example_stats"]
        assert (got["correct"] >= 0).all()  # every example seen every epoch (no drop_last)
        assert (got["correct"] == ref["correct"]).float().mean() > 0.99  # argmax ties may differ
        torch.testing.assert_close(got["loss"].float(), ref["loss"].float(), rtol=1e-2, atol=1e-3)


def test_resume_under_data_parallelism_matches_an_uninterrupted_run(ddp):
    """Stopped after the epoch-2 checkpoint and resumed, with dropout (a per-process RNG stream, saved
    for every process): bit-identical to an uninterrupted data-parallel run."""
    _, ranks = ddp
    for r in ranks:
        assert r["resumed"]["from"] == 2
        assert_close_weights(r["resumed"]["weights"], r["straight"]["weights"], exact=True)
        assert [m["train_loss"] for m in r["resumed"]["metrics"]] == [m["train_loss"] for m in r["straight"]["metrics"]]


def test_unsupported_settings_are_clear_errors(ddp):
    _, ranks = ddp
    algorithms, last_batch, small_batch = ranks[0]["errors"]
    assert "data-parallel training (2 processes) does not support algorithms (algorithm)" in algorithms
    assert "ddp_processes: 1" in algorithms
    assert "last batch of each epoch holds 1 example(s), fewer than the 2" in last_batch
    assert "batch_size 1 cannot be split over 2 data-parallel processes" in small_batch


def test_train_run_entry_point_writes_what_one_process_does(tiny_data_dir, tmp_path, monkeypatch):
    """The workflow's launcher (ddp_processes: 2) runs `python -m reuse train-run` under torchrun; its
    outputs match a single-process train_run's."""
    from reuse.workflow import train_baseline, train_run

    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.chdir(ROOT)
    recipe = {**RECIPE, "epochs": 2, "checkpoint_epochs": [1]}
    kw = dict(data_dir=str(tiny_data_dir), model_name="mlp", model_cfg={"arch": "mlp", "args": {"hidden": [32, 32]}},
              recipe=recipe, seed=0, device="cpu", progress="off")

    def outputs(d):
        return {"ckpts": {1: str(d / "ckpt" / "e1.pt"), 2: str(d / "ckpt" / "e2.pt")}, "metrics": str(d / "metrics.jsonl"),
                "run": str(d / "run.json"), "predictions": str(d / "predictions.npz"),
                "example_stats": str(d / "example_stats.npz")}

    train_run(**kw, outputs=outputs(tmp_path / "single"))
    (tmp_path / "ddp").mkdir()
    log_path = tmp_path / "ddp" / "train.log"
    train_baseline(nproc=NPROC, log_path=str(log_path), threads=2, **kw, outputs=outputs(tmp_path / "ddp"))

    one, two = tmp_path / "single", tmp_path / "ddp"
    assert sorted(p.name for p in one.iterdir()) == sorted(p.name for p in two.iterdir() if p.name != "train.log")
    assert "rank 0/2" in log_path.read_text()
    r1, r2 = (json.loads((d / "run.json").read_text()) for d in (one, two))
    assert (r1["processes"], r2["processes"]) == (1, NPROC)
    assert r2["final"]["test_acc"] == pytest.approx(r1["final"]["test_acc"])
    for k in ("train_flops", "eval_flops", "examples_seen", "step"):
        assert r2["cost"][k] == r1["cost"][k], k
    p1, p2 = np.load(one / "predictions.npz"), np.load(two / "predictions.npz")
    assert np.array_equal(p1["idx"], p2["idx"]) and np.array_equal(p1["target"], p2["target"])
    np.testing.assert_allclose(p2["logits"], p1["logits"], rtol=1e-4, atol=1e-5)
    for e in (1, 2):
        assert_close_weights(load_checkpoint(two / "ckpt" / f"e{e}.pt")["model"],
                             load_checkpoint(one / "ckpt" / f"e{e}.pt")["model"])
    s1, s2 = np.load(one / "example_stats.npz"), np.load(two / "example_stats.npz")
    assert (s1["correct"] == s2["correct"]).mean() > 0.99
    m1, m2 = ([json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()] for d in (one, two))
    assert [m["test_acc"] for m in m2] == pytest.approx([m["test_acc"] for m in m1])


def test_failed_data_parallel_run_names_its_log(tmp_path, monkeypatch):
    """A failing torchrun (here a stand-in, to save a launch) raises naming the log and keeps the spec."""
    import reuse.train.distributed as rd
    from reuse.errors import ReuseError
    from reuse.workflow import train_baseline

    calls = []

    def fake_run(cmd, stdout=None, **kw):
        calls.append(cmd)
        stdout.write("error: something went wrong\n")
        return subprocess.CompletedProcess(cmd, 1)

    monkeypatch.setattr(rd.subprocess, "run", fake_run)
    d = tmp_path / "run"
    kw = dict(data_dir="data", model_name="mlp", model_cfg={"arch": "mlp"}, recipe=RECIPE, seed=0, device="cpu",
              outputs={"ckpts": {1: "e1.pt"}, "run": str(d / "run.json")})
    with pytest.raises(ReuseError, match=r"\(2 processes under torchrun\) failed with exit status 1; see .*train.log"):
        train_baseline(nproc=2, log_path=str(tmp_path / "train.log"), threads=4, **kw)
    assert calls[0][1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m"]
    assert calls[0][6:8] == ["reuse", "train-run"] and json.loads(Path(calls[0][8]).read_text())["seed"] == 0
    assert "something went wrong" in (tmp_path / "train.log").read_text()


@pytest.mark.parametrize("kind", ["tensor", "imagefolder"])
def test_shards_partition_each_global_batch(kind, tiny_data, tmp_path):
    """The processes' slices of a global batch are the batch, split in order, with the same augmented
    inputs (augmentation is keyed per example)."""
    if kind == "tensor":
        from reuse.data.augment import Augment

        split, bs, world, aug = tiny_data.train, 35, 3, Augment.from_spec(RECIPE["augment"])
    else:
        from PIL import Image

        from reuse.data import load, prepare

        rng = np.random.default_rng(0)
        for sub, n in (("train", 4), ("val", 1)):
            for cls, k in (("ant", n), ("bee", n - 1 if sub == "train" else n)):
                (tmp_path / sub / cls).mkdir(parents=True)
                for i in range(k):
                    Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(tmp_path / sub / cls / f"{i}.png")
        prepare("imgs", {"kind": "imagefolder", "root": str(tmp_path), "train_dir": "train", "test_dir": "val",
                         "image_size": 16}, tmp_path / "prep" / "data.npz", tmp_path / "prep" / "dataset.json")
        split, bs, world, aug = load(tmp_path / "prep").train, 4, 2, True  # 7 images: slices 2+2, 2+1
    kw = dict(shuffle=True, seed=1, epoch=2, augment=aug)
    full = list(split.batches(bs, **kw))
    shards = [list(split.batches(bs, shard=(r, world), **kw)) for r in range(world)]
    assert all(len(s) == len(full) for s in shards)
    for i, (x, y, idx) in enumerate(full):
        assert torch.equal(torch.cat([s[i][2] for s in shards]), idx)
        assert torch.equal(torch.cat([s[i][1] for s in shards]), y)
        torch.testing.assert_close(torch.cat([s[i][0] for s in shards]), x)
