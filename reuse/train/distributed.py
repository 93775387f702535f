"""Data-parallel training under ``torchrun``: the process group, collectives and the launcher.

``torchrun --nproc-per-node N`` starts N processes and tells each its place in ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK``. :func:`init` joins them into one process group (NCCL on CUDA,
one GPU per process chosen by the local rank; gloo on CPU). Everything here does nothing when
``WORLD_SIZE`` is unset or 1, so single-process training never touches ``torch.distributed``.

:func:`launch_train_run` runs one :func:`reuse.workflow.train_run` under ``torchrun`` as a
subprocess (``python -m reuse train-run SPEC.json`` in every process); the workflow uses it when
the config's ``ddp_processes`` is above 1.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.distributed as dist

from reuse.errors import ReuseError

log = logging.getLogger("reuse.train")


@dataclass(frozen=True)
class DistEnv:
    """This process's place among torchrun's processes (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0


def from_env(environ: dict[str, str] | None = None) -> DistEnv:
    """Read torchrun's ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (defaults: one process)."""
    e = os.environ if environ is None else environ
    world = int(e.get("WORLD_SIZE") or 1)
    if world <= 1:
        return DistEnv()
    rank = int(e.get("RANK") or 0)
    return DistEnv(rank=rank, world_size=world, local_rank=int(e.get("LOCAL_RANK") or rank))


def active() -> bool:
    """Whether this process is one of several in an initialised process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0: the one process that writes checkpoints, metrics and outputs."""
    return rank() == 0


def init(device: torch.device) -> torch.device:
    """Join torchrun's process group when ``WORLD_SIZE`` > 1 and return the device this process
    trains on: ``cuda:LOCAL_RANK`` (set as the current CUDA device, NCCL) when ``device`` is CUDA,
    ``device`` itself (gloo) otherwise. Returns ``device`` unchanged without torchrun."""
    env = from_env()
    if env.world_size <= 1:
        return device
    if not dist.is_available():
        raise ReuseError(f"WORLD_SIZE={env.world_size} asks for data-parallel training, but this torch build "
                         "has no torch.distributed; set ddp_processes: 1")
    if device.type == "cuda":
        n = torch.cuda.device_count()
        if env.local_rank >= n:
            raise ReuseError(f"data-parallel process with LOCAL_RANK {env.local_rank} finds only {n} GPU(s): run "
                             "at most one process per GPU (ddp_processes <= the GPUs each job gets)")
        torch.cuda.set_device(env.local_rank)
        device = torch.device("cuda", env.local_rank)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, **({"device_id": device} if device.type == "cuda" else {}))
        log.info("process group: rank %d of %d (local rank %d), %s on %s", env.rank, env.world_size,
                 env.local_rank, backend, device)
    return device


def teardown(barrier: bool = True) -> None:
    """Leave the process group (after a barrier, so no process exits while another still needs it;
    pass ``barrier=False`` on an error path: the others may be waiting in another collective)."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    if barrier and dist.get_world_size() > 1:
        dist.barrier()
    dist.destroy_process_group()


def barrier() -> None:
    if active():
        dist.barrier()


def _comm_device() -> torch.device:
    """Where collective tensors must live: the current GPU for NCCL, the CPU for gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The elementwise sum of ``t`` over all processes (a new tensor on ``t``'s device; ``t``
    itself without a process group)."""
    if not active():
        return t
    w = t.detach().to(_comm_device(), copy=True)
    dist.all_reduce(w, op=dist.ReduceOp.SUM)
    return w.to(t.device)


def sum_scalars(values: Sequence[int | float]) -> list[int | float]:
    """Each of ``values`` (numbers or one-element tensors) summed over all processes, as Python numbers;
    integers stay exact (int64), floats are float64."""
    values = [v.item() if isinstance(v, torch.Tensor) else v for v in values]
    if not active():
        return list(values)
    is_int = [isinstance(v, (int, bool)) for v in values]
    ints = all_reduce_sum(torch.tensor([int(v) for v, i in zip(values, is_int) if i] or [0], dtype=torch.int64))
    floats = all_reduce_sum(torch.tensor([float(v) for v, i in zip(values, is_int) if not i] or [0.0],
                                         dtype=torch.float64))
    it, ft = iter(ints.tolist()), iter(floats.tolist())
    return [next(it) if i else next(ft) for i in is_int]


def gather_objects(obj: Any) -> list[Any]:
    """``obj`` of every process, in rank order (``[obj]`` without a process group)."""
    if not active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` in :class:`~torch.nn.parallel.DistributedDataParallel` under a process group
    (gradients averaged over processes in backward), else ``model`` itself."""
    if not active():
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


# ----------------------------------------------------------------------------- launcher
def launch_train_run(train_kwargs: dict[str, Any], *, nproc: int, log_path: str | None = None,
                     threads: int = 1) -> None:
    """Run :func:`reuse.workflow.train_run` with ``train_kwargs`` in ``nproc`` data-parallel processes.

    Writes the keyword arguments to ``train_spec.json`` in the run's folder and runs
    ``python -m torch.distributed.run --standalone --nproc-per-node N -m reuse train-run SPEC``; the
    processes' output is appended to ``log_path``, each process gets ``threads // nproc`` CPU
    threads. A failure raises :class:`ReuseError` naming the log. The spec is removed on success.
    """
    from reuse.io import write_json

    spec = Path(train_kwargs["outputs"]["run"]).parent / "train_spec.json"
    write_json(spec, train_kwargs)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={int(nproc)}",
           "-m", "reuse", "train-run", str(spec)]
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, int(threads) // int(nproc)))}
    log.info("data-parallel training in %d processes: %s", nproc, " ".join(cmd))
    out = open(log_path, "a", buffering=1) if log_path else None
    try:
        rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT if out else None, env=env).returncode
    finally:
        if out is not None:
            out.close()
    if rc != 0:
        raise ReuseError(f"data-parallel training ({nproc} processes under torchrun) failed with exit status {rc}; "
                         f"see {log_path or 'the output above'} (its spec: {spec})")
    spec.unlink(missing_ok=True)
