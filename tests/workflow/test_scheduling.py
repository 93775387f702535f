"""reuse.scheduling: Snakemake's rounds made lighter without changing what they decide. A stand-in
scheduler with the shape of Snakemake's JobScheduler counts what each round does; the real class is
checked to still have that shape (so the patch is applied to the running Snakemake)."""

from __future__ import annotations

import asyncio
import threading
import time

from reuse.scheduling import lighten_scheduler


class Path:
    """A stand-in for Snakemake's _IOFile: counts its stats."""

    stats = 0

    def __init__(self, name: str, size: int | None):
        self.name, self._size = name, size

    async def exists(self):
        Path.stats += 1
        return self._size is not None

    async def size(self):
        Path.stats += 1
        return self._size


class Job:
    def __init__(self, *inputs):
        self.input = list(inputs)


class Scheduler:
    def __init__(self, cores: int):
        self._input_sizes = {}
        self.resources = {"_cores": cores}
        self._open_jobs = threading.Semaphore(0)
        self.timers = 0

    async def update_input_sizes(self, jobs):  # Snakemake's: every input of every job, every round
        for job in jobs:
            for p in job.input:
                self._input_sizes[p] = await p.size() if await p.exists() else None

    def _schedule_reevalutation(self, delay):
        self.timers += 1
        threading.Timer(delay, lambda: self._open_jobs.release()).start()


def test_input_sizes_are_read_once_per_job_and_not_while_every_core_is_busy():
    class S(Scheduler):
        pass

    assert lighten_scheduler(S) == ["update_input_sizes", "_schedule_reevalutation"]
    assert lighten_scheduler(S) == []  # once
    a, b, missing = Path("a", 10), Path("b", 20), Path("m", None)
    j1, j2 = Job(a, b), Job(b, missing)
    s = S(cores=2)
    Path.stats = 0
    asyncio.run(s.update_input_sizes([j1, j2]))
    assert s._input_sizes == {a: 10, b: 20, missing: None}  # what Snakemake's own round records
    first = Path.stats
    asyncio.run(s.update_input_sizes([j1, j2]))
    assert Path.stats == first  # the same ready jobs: nothing read again
    s.resources["_cores"] = 0
    asyncio.run(s.update_input_sizes([Job(Path("c", 5))]))
    assert Path.stats == first  # a round with every core busy ranks nothing
    s.resources["_cores"] = 1
    c = Path("c", 5)
    asyncio.run(s.update_input_sizes([j1, Job(c)]))
    assert s._input_sizes[c] == 5 and Path.stats == first + 2  # only the new job's new input


def test_one_wake_up_is_pending_at_a_time_and_it_wakes_the_scheduler():
    class S(Scheduler):
        pass

    lighten_scheduler(S)
    s = S(cores=2)
    for _ in range(5):
        s._schedule_reevalutation(0.2)
    assert not s._open_jobs.acquire(timeout=0.05)
    assert s._open_jobs.acquire(timeout=2)  # woken once ...
    assert not s._open_jobs.acquire(timeout=0.4)  # ... not five times
    s._schedule_reevalutation(1.5)
    s._schedule_reevalutation(0.1)  # an earlier wake-up than the pending one is still started
    t = time.monotonic()
    assert s._open_jobs.acquire(timeout=1) and time.monotonic() - t < 1.0


def test_snakemake_has_the_shape_the_patch_expects():
    import inspect

    from snakemake.scheduling.job_scheduler import JobScheduler

    assert inspect.iscoroutinefunction(JobScheduler.update_input_sizes)
    assert list(inspect.signature(JobScheduler._schedule_reevalutation).parameters) == ["self", "delay"]
    lighten_scheduler()  # what the workflow does: patched (or already patched by an earlier call)
    assert getattr(JobScheduler.update_input_sizes, "_reuse_patched", False)
    assert getattr(JobScheduler._schedule_reevalutation, "_reuse_patched", False)
