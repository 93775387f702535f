"""The workflow stage of ``prune``: train one run on the examples the score table keeps."""

from __future__ import annotations

import logging

from reuse.methods.prune.prune import Prune, matched_epochs, select
from reuse.plan import rescale_recipe
from reuse.scores import job_difficulty
from reuse.workflow import Job

log = logging.getLogger("reuse")


def train(job: Job) -> None:
    cfg, recipe = job.cfg, job.recipe
    data = job.data()
    n = len(data.train)
    diff, reused = job_difficulty(job, data)
    epochs, budget = recipe["epochs"], cfg["budget"]
    ids = select(diff, cfg["keep"], mode=cfg["mode"], drop=cfg["drop"], labels=data.train.y.numpy(),
                 class_balanced=cfg["class_balanced"], seed=job.seed, n=n)
    new_epochs = matched_epochs(n, len(ids), recipe["batch_size"], epochs, drop_last=recipe["drop_last"], budget=budget)
    log.info("prune %s: keep %d of %d examples (%s by %s), %d epochs for the same steps as %d x %d epochs",
             job.variant, len(ids), n, cfg["mode"], cfg["score"], new_epochs, budget, epochs)
    job.fit(data, recipe=rescale_recipe(recipe, new_epochs, new_epochs / epochs), algorithms=[Prune(ids)],
            reused=reused)
