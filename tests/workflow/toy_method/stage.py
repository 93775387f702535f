"""The ``toy`` stage: weights ``1 + strength * (1 - p_true)`` (normalised to mean 1) from the past
run's cached clean-view probabilities, trained with the built-in re-weighting hook."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from reuse.cache import LogitCache
from reuse.methods.reweight import Reweight
from reuse.workflow import Job, past_run_cost


def confidence_weights(p_true: np.ndarray, strength: float) -> np.ndarray:
    w = 1.0 + strength * (1.0 - p_true)
    return w / w.mean()


def train(job: Job) -> None:
    data = job.data()
    files = [Path(f) for f in job.inputs["past"]]
    run = next(f for f in files if f.name == "run.json").parent
    cache = LogitCache.open(next(f for f in files if f.name == "meta.json").parent, fingerprint=data.train.fingerprint)
    ids = np.arange(len(data.train))
    p = cache.probs(ids, 0).double().numpy()
    w = confidence_weights(p[ids, data.train.y.numpy()], job.cfg["strength"])
    job.fit(data, recipe={**job.recipe, "checkpoint_epochs": []}, algorithms=[Reweight(w)],
            reused=past_run_cost(str(run)))
