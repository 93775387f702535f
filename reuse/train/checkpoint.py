"""Checkpoints: written atomically, read with a clear error when corrupt or made for other data.

A checkpoint is a ``torch.save`` dict with ``model`` (state dict), ``model_spec`` (arch, args, input
shape, classes: enough to rebuild the module), ``fingerprint`` (the training split it was trained on),
``epoch``/``step``, and, for resumable checkpoints, the optimizer, RNG states, metrics so far and the
algorithms' states.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from reuse.data.fingerprint import check_fingerprint
from reuse.errors import CorruptArtifact
from reuse.io import atomic_path

FORMAT_VERSION = 1


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save({"format": FORMAT_VERSION, **payload}, tmp)


def load_checkpoint(path: str | os.PathLike, *, fingerprint: dict | None = None,
                    map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint; raise :class:`CorruptArtifact` if unreadable and
    :class:`FingerprintMismatch` if ``fingerprint`` is given and differs from the stored one."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # torch raises RuntimeError, EOFError, UnpicklingError, ... on damage
        raise CorruptArtifact(
            f"checkpoint {path} is corrupt or truncated ({type(e).__name__}: {str(e).splitlines()[0][:200]}). "
            "Delete it and re-run snakemake: the run that wrote it is retrained (deterministically) and "
            "everything else is left as it is.") from e
    if not isinstance(ckpt, dict) or "model" not in ckpt or ckpt.get("format") != FORMAT_VERSION:
        raise CorruptArtifact(f"{path} is not a reuse checkpoint (format {FORMAT_VERSION}); delete it and "
                              "re-run snakemake to rebuild it")
    if fingerprint is not None:
        check_fingerprint(ckpt.get("fingerprint"), fingerprint, f"checkpoint {path}")
    return ckpt


def build_from_checkpoint(ckpt: dict[str, Any]) -> torch.nn.Module:
    from reuse.models import build_model

    spec = ckpt["model_spec"]
    model = build_model(spec["arch"], spec["input_shape"], spec["num_classes"], **spec.get("args", {}))
    model.load_state_dict(ckpt["model"])
    return model


def recipe_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]
