"""Fault injection for the fault-tolerance tests (``tests/faults``): hold a job at a chosen point so a
test can SIGKILL the whole run (Snakemake and the job) right there.

Inert unless the environment variable ``REUSE_FAULTS`` names a plan file (JSON). A job that starts
while it is set is *armed* (:func:`arm`, which :func:`reuse.workflow.run_rule` calls with the job's
rule and wildcards) and counts the points it passes (:func:`point`): its start, every artifact write
just before the rename that publishes it (:func:`reuse.io.atomic_path`) and every training step
(:class:`reuse.train.Trainer`). The plan is one of

``{"count": FILE}``
    append one line ``<job>\\t<point>\\t<pid>\\t<ppid>`` per point to FILE (how many points each job has,
    and which process ran it);
``{"job": JOB, "at": K, "mark": FILE}``
    the job labelled JOB (``<rule> <wildcards>``, as :func:`label` writes it) stops at its K-th point:
    it writes FILE (JSON: ``pid``, ``ppid``, ``job``, ``point``, ``k``) and waits there, for the test to
    kill the run, at most ``hold_s`` seconds (default 300), after which it exits with status 137.

Any other plan (``{}``) arms nothing. Unarmed, :func:`point` is one global lookup. ``REUSE_FAULTS``
starts with ``REUSE_``, so it is part of a fork server's key (``reuse/zygote.py``): keep its value
fixed for a test session and change the plan file's contents instead.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

#: the environment variable naming the plan file
ENV = "REUSE_FAULTS"

_plan: dict[str, Any] | None = None  # None: unarmed (the normal case)
_job = ""
_count = 0


def label(rule: str, wildcards: dict[str, Any]) -> str:
    """A job's name in a plan: its rule and its wildcards, e.g. ``kd__tiny__ens seed=0``."""
    return " ".join([str(rule), *(f"{k}={wildcards[k]}" for k in sorted(wildcards))])


def arm(job: str) -> None:
    """Arm this process for the job labelled ``job`` if ``REUSE_FAULTS`` names a plan that concerns it;
    otherwise disarm it. Counts the job's start as its first point."""
    global _plan, _job, _count
    _plan, _job, _count = None, job, 0
    path = os.environ.get(ENV)
    if not path or not os.path.exists(path):
        return
    with open(path) as f:
        plan = json.load(f)
    if "count" in plan or plan.get("job") == job:
        _plan = plan
        point("start")


def point(name: str) -> None:
    """A point where a fault may strike (see the module docstring); nothing when unarmed."""
    if _plan is None:
        return
    global _count
    _count += 1
    if "count" in _plan:
        line = f"{_job}\t{name}\t{os.getpid()}\t{os.getppid()}\n"
        fd = os.open(_plan["count"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())  # one O_APPEND write: concurrent jobs' lines do not interleave
        finally:
            os.close(fd)
    elif _count == int(_plan["at"]):
        mark = _plan["mark"]
        with open(mark + ".tmp", "w") as f:
            json.dump({"pid": os.getpid(), "ppid": os.getppid(), "job": _job, "point": name, "k": _count}, f)
        os.replace(mark + ".tmp", mark)
        time.sleep(float(_plan.get("hold_s", 300)))
        os._exit(137)  # nobody killed the run: end as a killed job would
