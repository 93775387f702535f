from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from reuse.errors import CorruptArtifact, FingerprintMismatch
from reuse.train import Event, load_checkpoint
from tests import helpers
from tests.helpers import MLP_DROPOUT_SPEC, ROOT, Kill, Record, recipe

RECIPE = recipe(epochs=4, optimizer={"weight_decay": 5e-4}, schedule={"name": "cosine", "warmup_epochs": 1},
                checkpoint_epochs=[2], checkpoint_every=1, augment={"translate": 2, "flip": True})


def make_trainer(data, state_dir, recipe=RECIPE, algorithms=()):
    return helpers.make_trainer(data, state_dir, recipe, spec=MLP_DROPOUT_SPEC, algorithms=algorithms)


def test_training_learns_and_records_metrics(tiny_data, tmp_path):
    s = make_trainer(tiny_data, tmp_path, {**RECIPE, "epochs": 8}).fit()
    assert len(s.metrics) == 8 and s.step == 8 * 8  # 240 examples / 32 = 8 steps per epoch
    first, last = s.metrics[0], s.metrics[-1]
    assert last["train_loss"] < first["train_loss"]
    assert last["test_acc"] > 0.2  # well above chance (0.1) on 10 classes
    assert last["examples_seen"] == 8 * 240
    for key in ("lr", "train_acc", "test_loss", "epoch_time_s", "train_time_s", "train_flops", "eval_flops"):
        assert key in last
    assert (tmp_path / "e2.pt").exists() and (tmp_path / "last.pt").exists()


def test_flops_are_measured_exactly(tiny_data, tmp_path):
    """A Linear layer costs 2*B*in*out FLOPs forward, the same again for the weight gradient, and again for
    the input gradient except at the first layer (its input needs no gradient)."""
    s = make_trainer(tiny_data, tmp_path, {**RECIPE, "epochs": 1, "augment": None}).fit()
    dims = [(40, 32), (32, 32), (32, 10)]
    n = len(tiny_data.train)
    expect = sum(6 * n * i * o for i, o in dims) - 2 * n * 40 * 32
    assert s.metrics[-1]["train_flops"] == expect
    assert s.metrics[-1]["eval_flops"] == sum(2 * len(tiny_data.test) * i * o for i, o in dims)


def test_events_fire_in_order(tiny_data, tmp_path):
    class Recorder(Record):  # records every event
        def on_event(self, event, state):
            super().on_event(event, state)
            if event is Event.LOSS:
                assert state.loss is not None and state.outputs.shape[0] == state.batch[0].shape[0]
                state.loss = state.loss * 0  # a hook can replace the loss: nothing is learned

    rec = Recorder()
    t = make_trainer(tiny_data, tmp_path, {**RECIPE, "epochs": 2, "optimizer": {**RECIPE["optimizer"], "weight_decay": 0}},
                     algorithms=[rec])
    before = [p.detach().clone() for p in t.state.model.parameters()]
    t.fit()
    per_batch = [Event.BATCH, Event.LOSS, Event.AFTER_BACKWARD]
    epoch = [Event.EPOCH_START] + per_batch * 8 + [Event.EPOCH_END]
    assert rec.seen == [Event.FIT_START] + epoch * 2 + [Event.FIT_END]
    assert all(torch.equal(a, b) for a, b in zip(before, t.state.model.parameters()))


def test_resume_matches_an_uninterrupted_run_after_sigkill(tiny_data_dir, tiny_data, tmp_path):
    """Kill a training process (SIGKILL) after its epoch-2 checkpoint; the resumed run must end with
    bit-identical weights to an uninterrupted one (dropout and augmentation included)."""
    script = tmp_path / "killed.py"
    script.write_text(textwrap.dedent(f"""
        import torch
        torch.set_num_threads(1)
        from reuse.data import load
        from tests.helpers import MLP_DROPOUT_SPEC, Kill, make_trainer

        make_trainer(load({str(tiny_data_dir)!r}), {str(tmp_path / 'killed')!r}, {RECIPE!r}, spec=MLP_DROPOUT_SPEC,
                     algorithms=[Kill(step=2 * 8 + 3, sigkill=True)]).fit()
    """))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(script)], env=env, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    assert load_checkpoint(tmp_path / "killed" / "last.pt")["epoch"] == 2

    trainer = make_trainer(tiny_data, tmp_path / "killed", algorithms=[Kill()])
    resumed = trainer.fit()
    assert trainer.resumed_from == 2
    straight = make_trainer(tiny_data, tmp_path / "straight", algorithms=[Kill()]).fit()
    for (k, a), b in zip(resumed.model.state_dict().items(), straight.model.state_dict().values()):
        assert torch.equal(a, b), k
    assert [m["train_loss"] for m in resumed.metrics] == [m["train_loss"] for m in straight.metrics]


def test_resume_state_of_another_recipe_is_discarded(tiny_data, tmp_path):
    make_trainer(tiny_data, tmp_path, {**RECIPE, "epochs": 1}).fit()
    t = make_trainer(tiny_data, tmp_path, {**RECIPE, "epochs": 2, "batch_size": 16})
    s = t.fit()
    assert t.resumed_from is None and s.step == 2 * 15  # trained from scratch with the new recipe


def test_corrupt_resume_state_is_a_clear_error(tiny_data, tmp_path):
    make_trainer(tiny_data, tmp_path, {**RECIPE, "epochs": 1}).fit()
    (tmp_path / "last.pt").write_bytes((tmp_path / "last.pt").read_bytes()[:100])
    with pytest.raises(CorruptArtifact, match=r"last.pt is corrupt or truncated.*Delete it"):
        make_trainer(tiny_data, tmp_path, {**RECIPE, "epochs": 1}).fit()


def test_checkpoint_of_other_data_is_refused(tiny_data, tmp_path):
    make_trainer(tiny_data, tmp_path, {**RECIPE, "epochs": 1}).fit()
    other = dict(tiny_data.train.fingerprint, n=999)
    from reuse.data.fingerprint import digest

    other["digest"] = digest(other)
    with pytest.raises(FingerprintMismatch, match="n: 240 here vs 999 expected"):
        load_checkpoint(tmp_path / "last.pt", fingerprint=other)


@pytest.mark.parametrize("optimizer,schedule", [
    ({"name": "adamw", "lr": 3e-3, "weight_decay": 0.01}, {"name": "onecycle", "pct_start": 0.3}),
    ({"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True}, {"name": "step", "milestones": [2], "gamma": 0.1}),
])
def test_optimizers_schedules_and_label_smoothing_train(tiny_data, tmp_path, optimizer, schedule):
    recipe = {**RECIPE, "epochs": 3, "optimizer": optimizer, "schedule": schedule, "label_smoothing": 0.1}
    t = make_trainer(tiny_data, tmp_path, recipe)
    assert type(t.state.optimizer).__name__ == {"adamw": "AdamW", "sgd": "SGD"}[optimizer["name"]]
    s = t.fit()
    assert s.metrics[-1]["train_loss"] < s.metrics[0]["train_loss"]
    if schedule["name"] == "step":
        assert s.metrics[-1]["lr"] == pytest.approx(0.005)
