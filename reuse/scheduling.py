"""Snakemake's scheduling rounds made lighter for workflows of many short jobs.

On the default benchmark (about 700 one-core jobs of a few seconds, up to a few hundred ready at once)
Snakemake's own process took a sixth of a core that the jobs need, in two places of each scheduling
round (``snakemake.scheduling.job_scheduler.JobScheduler``):

* **Input sizes.** It stats every input of every ready job in every round, to rank jobs by input size
  (``update_input_sizes``). A ready job's inputs exist and do not change while it waits, so each job's
  are read once; and a round in which every core is busy selects no job, so it reads none.
* **Wake-ups.** Under the job rate limit (Snakemake's default, 100 jobs a second) every round starts a
  timer thread that wakes the scheduler a second later, and the round that wakes starts another: one
  pending wake-up at a time does the same, since any wake-up runs a whole round.

Which jobs run, and in which order, is what Snakemake would choose (the same sizes, the same rounds'
outcomes). :func:`lighten_scheduler` patches the class once, and leaves it alone when its shape is not
the one these patches were written for (another Snakemake version). The workflow calls it from
``rules/common.smk``. Imports only the standard library (and Snakemake, already loaded there).
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from typing import Any


def lighten_scheduler(scheduler_cls: Any = None) -> list[str]:
    """Patch ``scheduler_cls`` (default: Snakemake's ``JobScheduler``); returns what was patched."""
    if scheduler_cls is None:
        try:
            from snakemake.scheduling.job_scheduler import JobScheduler as scheduler_cls
        except ImportError:
            return []
    done = []
    orig = getattr(scheduler_cls, "update_input_sizes", None)
    if orig is not None and not getattr(orig, "_reuse_patched", False) and inspect.iscoroutinefunction(orig):
        scheduler_cls.update_input_sizes = _sizes_once(orig)
        done.append("update_input_sizes")
    wake = getattr(scheduler_cls, "_schedule_reevalutation", None)
    if wake is not None and not getattr(wake, "_reuse_patched", False) and \
            list(inspect.signature(wake).parameters) == ["self", "delay"]:
        scheduler_cls._schedule_reevalutation = _one_wake_up
        done.append("_schedule_reevalutation")
    return done


def _sizes_once(orig):
    async def update_input_sizes(self, jobs):
        sizes, resources = getattr(self, "_input_sizes", None), getattr(self, "resources", None)
        if not isinstance(sizes, dict) or not isinstance(resources, dict):
            return await orig(self, jobs)
        if resources.get("_cores") == 0:
            return None  # no job is selected this round: none is ranked
        sized = self.__dict__.setdefault("_reuse_sized_jobs", set())
        fresh = [job for job in jobs if job not in sized]
        new = [p for p in {p for job in fresh for p in job.input} if sizes.get(p) is None]

        async def size(path):
            return path, await path.size() if await path.exists() else None

        if new:
            sizes.update(await asyncio.gather(*[size(p) for p in new]))
        sized.update(fresh)
        return None

    update_input_sizes._reuse_patched = True
    return update_input_sizes


def _one_wake_up(self, delay) -> None:
    """Release the scheduler's semaphore after ``delay`` seconds, unless a wake-up as early is pending."""
    pending = self.__dict__.get("_reuse_wake")
    if pending is not None and pending[0].is_alive() and pending[1] <= time.monotonic() + delay:
        return
    timer = threading.Timer(delay, lambda: self._open_jobs.release())
    self._reuse_wake = (timer, time.monotonic() + delay)
    timer.start()


_one_wake_up._reuse_patched = True
