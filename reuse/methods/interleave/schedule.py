"""Which task trains when: the turns of an interleaved run and of its baselines, at equal steps.

Pure functions (no torch), shared by the spec (the config check), the stage and the tests.

A run is a list of :class:`Turn` s. Every schedule spends the same ``steps`` optimisation steps of
one batch each, and every task gets the same share of them (``steps / K``, the remainder to the
first tasks):

- ``interleaved`` with ``rounds`` R: for each round, each task in turn trains the shared encoder and
  its own head for its share of the round (``steps / K / R``), starting from the encoder the
  previous turn left; R = 1 is ``blocked`` (task 1 for all its steps, then task 2, ...).
- ``joint``: one turn of all ``steps``, every step's batch split among the K tasks and its loss the
  mean over the batch, so each task sees the same number of examples as in the other schedules.
- ``independent``: K models with no shared weights, model k trains task k alone for its share.
"""

from __future__ import annotations

from dataclasses import dataclass

KINDS = ("interleaved", "joint", "independent")


@dataclass(frozen=True)
class Turn:
    """``steps`` consecutive optimisation steps of encoder ``model`` (0 unless independent) on the
    summed loss of ``tasks`` (one task, or all of them for joint training)."""

    tasks: tuple[int, ...]
    steps: int
    model: int = 0


def split_steps(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` near-equal whole parts, the larger ones first."""
    if parts < 1:
        raise ValueError(f"cannot split {total} steps into {parts} parts")
    q, r = divmod(total, parts)
    return [q + (i < r) for i in range(parts)]


def turns(kind: str, num_tasks: int, steps: int, rounds: int = 1) -> list[Turn]:
    """The turns of a run of ``kind`` over ``num_tasks`` tasks and ``steps`` steps (``rounds``: interleaved only)."""
    if num_tasks < 1 or steps < num_tasks:
        raise ValueError(f"{steps} steps cannot give each of {num_tasks} tasks a step")
    share = split_steps(steps, num_tasks)
    if kind == "interleaved":
        if rounds < 1 or rounds > min(share):
            raise ValueError(f"{rounds} rounds need at least {rounds} steps per task, but a task gets {min(share)}")
        per_round = [split_steps(s, rounds) for s in share]
        return [Turn((k,), per_round[k][r]) for r in range(rounds) for k in range(num_tasks)]
    if kind == "joint":
        return [Turn(tuple(range(num_tasks)), steps)]
    if kind == "independent":
        return [Turn((k,), share[k], model=k) for k in range(num_tasks)]
    raise ValueError(f"unknown schedule '{kind}' ({', '.join(KINDS)})")


def task_steps(schedule: list[Turn], num_tasks: int) -> list[int]:
    """Steps in which each task's loss is part of the step's loss."""
    out = [0] * num_tasks
    for t in schedule:
        for k in t.tasks:
            out[k] += t.steps
    return out


def model_steps(schedule: list[Turn]) -> dict[int, int]:
    """Each encoder's total steps (its learning-rate schedule runs over them)."""
    out: dict[int, int] = {}
    for t in schedule:
        out[t.model] = out.get(t.model, 0) + t.steps
    return out


def split_batch(batch_size: int, tasks: tuple[int, ...]) -> dict[int, int]:
    """Each task's examples in one step's batch: all of it for one task, near-equal parts for several."""
    return dict(zip(tasks, split_steps(batch_size, len(tasks))))


def task_examples(schedule: list[Turn], num_tasks: int, batch_size: int) -> list[int]:
    """Training examples each task's loss sees (its part of every batch it is in)."""
    out = [0] * num_tasks
    for t in schedule:
        for k, n in split_batch(batch_size, t.tasks).items():
            out[k] += t.steps * n
    return out


def last_turns(schedule: list[Turn], num_tasks: int) -> list[int]:
    """Each task's last turn (an index into ``schedule``)."""
    last = [-1] * num_tasks
    for i, t in enumerate(schedule):
        for k in t.tasks:
            last[k] = i
    return last


def forgetting(schedule: list[Turn], acc_after: list[list[float]]) -> list[float]:
    """Per task, its test accuracy right after its last turn minus at the end of the run
    (``acc_after[i][k]``: task k's accuracy after turn i). Positive: the later turns of other tasks
    lowered it; 0 by construction where no turn follows (the last task, joint training, a model of
    its own)."""
    k = len(acc_after[-1])
    return [acc_after[i][t] - acc_after[-1][t] for t, i in enumerate(last_turns(schedule, k))]
