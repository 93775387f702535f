"""The workflow stage of ``reweight``: train one run whose per-example losses are weighted by rank."""

from __future__ import annotations

import logging

from reuse.methods.reweight.reweight import Reweight, rank_weights
from reuse.plan import budget_recipe
from reuse.scores import job_difficulty
from reuse.workflow import Job

log = logging.getLogger("reuse")


def train(job: Job) -> None:
    data = job.data()
    diff, reused = job_difficulty(job, data)
    w = rank_weights(diff, job.cfg["strength"])
    log.info("reweight %s: weights %.2f..%.2f by %s rank", job.variant, w.min(), w.max(), job.cfg["score"])
    job.fit(data, recipe=budget_recipe(job.recipe, job.cfg["budget"]), algorithms=[Reweight(w)], reused=reused)
