"""The workflow stage of ``reweight``: train one run whose per-example losses are weighted by rank."""

from __future__ import annotations

import logging
import math

from reuse.methods.reweight.reweight import Reweight, rank_weights
from reuse.plan import rescale_recipe
from reuse.scores import job_difficulty
from reuse.workflow import Job

log = logging.getLogger("reuse")


def train(job: Job) -> None:
    cfg, recipe = job.cfg, job.recipe
    data = job.data()
    diff, reused = job_difficulty(job, data)
    epochs = recipe["epochs"]
    new_epochs = max(1, math.ceil(cfg["budget"] * epochs))
    w = rank_weights(diff, cfg["strength"])
    log.info("reweight %s: weights %.2f..%.2f by %s rank", job.variant, w.min(), w.max(), cfg["score"])
    job.fit(data, recipe=rescale_recipe(recipe, new_epochs, new_epochs / epochs), algorithms=[Reweight(w)],
            reused=reused)
