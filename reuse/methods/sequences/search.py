"""The search's Optuna side: distributions, seeded samplers and pruners, and the journal that cluster
jobs share, kept in step with the workflow's files.

The workflow's files are the truth: trial k's job reads every earlier trial's run.json (which records
its Optuna trial in full) and first makes the journal agree with them (:func:`reconcile`): a trial the
journal lacks (a fresh journal, or one on another machine's disk) is added as recorded, one the
journal left RUNNING (a job killed after its training) is finished as recorded, and one it holds
differently is an error. A journal that another config or seed wrote is refused (:func:`open_study`).
Each trial's sampler is seeded from (seed, trial number), so the same config, seed and earlier results
propose the same trial in any process.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import (CategoricalDistribution, FloatDistribution, IntDistribution,
                                  distribution_to_json, json_to_distribution)
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock
from optuna.trial import FrozenTrial, TrialState, create_trial

from reuse.errors import ReuseError
from reuse.methods.sequences.space import decode_choice, encode_choice, is_range

log = logging.getLogger("reuse")
optuna.logging.set_verbosity(optuna.logging.WARNING)

#: seconds after which a journal lock left by a killed job is broken (Optuna's grace period)
LOCK_GRACE_S = 10


def distributions(space: dict) -> dict[str, Any]:
    """Optuna distributions of a (checked) space, by name."""
    out = {}
    for name, s in sorted(space.items()):
        if not is_range(s):
            out[name] = CategoricalDistribution([encode_choice(c) for c in s["choices"]])
        elif isinstance(s["low"], int) and isinstance(s["high"], int) and not isinstance(s.get("step"), float):
            out[name] = IntDistribution(s["low"], s["high"], log=bool(s.get("log")), step=int(s.get("step") or 1))
        else:
            out[name] = FloatDistribution(float(s["low"]), float(s["high"]), log=bool(s.get("log")), step=s.get("step"))
    return out


def decode(params: dict, space: dict) -> dict:
    """A trial's values as the config spells them (choices decoded)."""
    return {k: (v if is_range(space[k]) else decode_choice(space[k], v)) for k, v in params.items()}


def seed_for(seed: int, trial: int) -> int:
    return int(hashlib.sha256(f"search:{seed}:{trial}".encode()).hexdigest()[:8], 16)


def make_sampler(cfg: dict, seed: int, trial: int) -> optuna.samplers.BaseSampler:
    """The sampler that proposes trial ``trial`` of the repeat ``seed``."""
    name = cfg["name"]
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed_for(seed, trial))
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed_for(seed, trial), n_startup_trials=cfg["startup_trials"])
    if name == "qmc":  # the Sobol sequence is indexed by the trial number: one seed per repeat
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return optuna.samplers.QMCSampler(seed=seed_for(seed, 0), scramble=True, warn_independent_sampling=False,
                                              warn_asynchronous_seeding=False)
    raise ReuseError(f"unknown sampler '{name}' (random, qmc, tpe)")


def make_pruner(cfg: dict | None, max_epochs: int) -> optuna.pruners.BasePruner:
    """The policy's pruner (one epoch is one unit of resource); none without ``cfg``."""
    if not cfg:
        return optuna.pruners.NopPruner()
    if cfg["kind"] == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=cfg["min_resource"],
                                                      reduction_factor=cfg["reduction_factor"])
    if cfg["kind"] == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=cfg["min_resource"],
                                              max_resource=cfg.get("max_resource") or max_epochs,
                                              reduction_factor=cfg["reduction_factor"])
    raise ReuseError(f"unknown pruner '{cfg['kind']}' (halving, hyperband)")


def repair(path: Path) -> None:
    """Drop a partial last record (a job killed while appending to the journal): the operation it
    held never happened. Optuna would otherwise fail on the next record appended after it."""
    if not path.exists():
        return
    lock = JournalFileSymlinkLock(str(path), grace_period=LOCK_GRACE_S)
    lock.acquire()
    try:
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            log.warning("journal %s ends in a partial record (%d bytes, a job killed while writing it); dropping it",
                        path, len(data) - keep)
            with open(path, "r+b") as f:
                f.truncate(keep)
                f.flush()
                os.fsync(f.fileno())
    finally:
        lock.release()


def open_study(path: Path, name: str, identity: str, sampler, pruner) -> optuna.Study:
    """The study ``name`` in the journal file ``path`` (made if absent), refused if another config
    or seed wrote it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    repair(path)
    storage = JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileSymlinkLock(
        str(path), grace_period=LOCK_GRACE_S)))
    study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner,
                                direction="maximize", load_if_exists=True)
    mine = study.user_attrs.get("identity")
    if mine is None:
        if study.trials:
            raise ReuseError(f"search journal {path} holds trials of study '{name}' but no identity, so it was not "
                             f"written by this workflow; delete it (the trials are rebuilt from the run folders)")
        study.set_user_attr("identity", identity)
    elif mine != identity:
        raise ReuseError(f"search journal {path} was written by another config or seed (identity {mine}, this "
                         f"search is {identity}); delete it to start this search's journal afresh (finished "
                         "trials of this config are rebuilt from their run folders)")
    return study


def record(t: FrozenTrial) -> dict:
    """Everything that rebuilds trial ``t`` in a journal (run.json's ``trial``)."""
    return {"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
            "distributions": {k: distribution_to_json(d) for k, d in t.distributions.items()},
            "intermediate_values": {str(k): v for k, v in t.intermediate_values.items()},
            "system_attrs": t.system_attrs}


def same_value(a: float | None, b: float | None) -> bool:
    """Whether two trial values are the same (both absent, or equal to rounding)."""
    return (a is None and b is None) or (a is not None and b is not None and math.isclose(a, b, abs_tol=1e-12))


def reconcile(study: optuna.Study, records: list[dict], path: Path) -> None:
    """Make the journal's trials 0..len(records)-1 those the run folders record (see the module doc)."""
    trials = study.get_trials(deepcopy=False)
    for j, rec in enumerate(records):
        if rec["number"] != j:
            raise ReuseError(f"trial inputs out of order: expected trial {j}, got {rec['number']}")
        state = TrialState[rec["state"]]
        inter = {int(k): v for k, v in rec["intermediate_values"].items()}
        if j < len(trials):
            t = trials[j]
            if t.params != rec["params"]:
                raise ReuseError(f"search journal {path}: trial {j} has params {t.params} but its run folder "
                                 f"records {rec['params']}; delete the journal (it is rebuilt from the run folders)")
            if t.state == TrialState.RUNNING:
                log.info("journal: finishing trial %d as its run folder records it (%s)", j, rec["state"])
                for step, v in inter.items():
                    if step not in t.intermediate_values:
                        study._storage.set_trial_intermediate_value(t._trial_id, step, v)
                for k, v in rec["system_attrs"].items():
                    if t.system_attrs.get(k) != v:
                        study._storage.set_trial_system_attr(t._trial_id, k, v)
                study.tell(j, rec["value"] if state == TrialState.COMPLETE else None, state=state)
            elif t.state != state or not same_value(t.value, rec["value"]):
                raise ReuseError(f"search journal {path}: trial {j} is {t.state.name} ({t.value}) but its run folder "
                                 f"records {rec['state']} ({rec['value']}); delete the journal (it is rebuilt from "
                                 "the run folders)")
        else:
            log.info("journal: adding trial %d from its run folder (%s)", j, rec["state"])
            study.add_trial(create_trial(
                state=state, value=rec["value"], params=rec["params"],
                distributions={k: json_to_distribution(d) for k, d in rec["distributions"].items()},
                intermediate_values=inter, system_attrs=rec["system_attrs"]))
    if len(study.get_trials(deepcopy=False)) < len(records):  # pragma: no cover - add_trial numbers in order
        raise ReuseError(f"search journal {path} could not be brought up to trial {len(records)}")


def trial(study: optuna.Study, k: int, dists: dict) -> tuple[FrozenTrial, optuna.trial.Trial | None]:
    """Trial number ``k``: the journal's (a rerun of a killed job) or a new proposal. Returns it
    frozen, and a live :class:`optuna.trial.Trial` when it is still running."""
    trials = study.get_trials(deepcopy=False)
    if len(trials) < k:
        raise ReuseError(f"the journal holds {len(trials)} trials; trial {k} needs the {k} before it")
    if len(trials) == k:
        live = study.ask(fixed_distributions=dists)
        return study.get_trials(deepcopy=False)[k], live
    t = trials[k]
    log.info("journal: trial %d exists (%s), from an earlier attempt of this job; reusing its params", k, t.state.name)
    return t, (optuna.trial.Trial(study, t._trial_id) if t.state == TrialState.RUNNING else None)


def ranked(records: list[dict]) -> list[int]:
    """The finished (not pruned) trials, best validation accuracy first (ties: the earlier trial)."""
    done = [r for r in records if r["state"] == "COMPLETE" and r["value"] is not None]
    return [r["number"] for r in sorted(done, key=lambda r: (-r["value"], r["number"]))]
