import math

import pytest

from reuse.train import lr_at


def lrs(schedule, spe=10, epochs=10, lr=1.0):
    return [lr_at(s, base_lr=lr, schedule=schedule, steps_per_epoch=spe, total_steps=spe * epochs) for s in range(spe * epochs)]


def test_step_schedule_drops_at_milestones():
    v = lrs({"name": "step", "milestones": [3, 6.5], "gamma": 0.1})
    assert v[29] == 1.0 and v[30] == pytest.approx(0.1) and v[64] == pytest.approx(0.1) and v[65] == pytest.approx(0.01)


def test_cosine_with_warmup():
    v = lrs({"name": "cosine", "warmup_epochs": 1})
    assert v[0] == pytest.approx(0.1) and v[9] == pytest.approx(1.0)
    assert v[10] == pytest.approx(1.0)
    mid = 10 + 45
    assert v[mid] == pytest.approx(0.5 * (1 + math.cos(math.pi * 45 / 90)))
    assert v[-1] < 1e-3 and all(a >= b for a, b in zip(v[10:], v[11:]))


def test_cosine_floor_and_constant():
    assert min(lrs({"name": "cosine", "final_fraction": 0.1})) >= 0.1
    assert set(lrs({"name": "constant"})) == {1.0}


def test_onecycle_peaks_at_pct_start():
    v = lrs({"name": "onecycle", "pct_start": 0.3, "start_fraction": 0.1, "end_fraction": 0.0})
    assert v[0] == pytest.approx(0.1) and max(v) == pytest.approx(1.0) and v.index(max(v)) == 30
    assert v[-1] == pytest.approx(1 / 70, abs=1e-9)


def test_unknown_schedule():
    with pytest.raises(ValueError, match="unknown schedule"):
        lrs({"name": "linear"})
