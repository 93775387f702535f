"""The workflow stage of ``curriculum``: train one run that sees the data in score order, paced."""

from __future__ import annotations

import logging

from reuse.methods.curriculum.curriculum import Curriculum, curriculum_order
from reuse.plan import budget_recipe
from reuse.scores import job_difficulty
from reuse.workflow import Job

log = logging.getLogger("reuse")


def train(job: Job) -> None:
    cfg = job.cfg
    data = job.data()
    diff, reused = job_difficulty(job, data)
    recipe = budget_recipe(job.recipe, cfg["budget"])
    algo = Curriculum(curriculum_order(diff, cfg["order"], seed=job.seed, n=len(data.train)), pacing=cfg["pacing"],
                      start=cfg["start"], full_at=cfg["full_at"], stages=cfg["stages"])
    log.info("curriculum %s: %s order by %s, %s pacing from %.2f to all data at %.0f%% of %d epochs", job.variant,
             cfg["order"], cfg["score"], cfg["pacing"], cfg["start"], 100 * cfg["full_at"], recipe["epochs"])
    job.fit(data, recipe=recipe, algorithms=[algo], reused=reused)
