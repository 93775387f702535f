"""Checkpoints: written atomically, read with a clear error when corrupt or made for other data.

A checkpoint is a ``torch.save`` dict with ``model`` (state dict), ``model_spec`` (arch, args, input
shape, classes: enough to rebuild the module), ``fingerprint`` (the training split it was trained on),
``epoch``/``step``, and, for resumable checkpoints, the optimizer, RNG states, metrics so far and the
algorithms' states.

A checkpoint is untrusted input (it may come from another user, a bucket or a copied results folder):
it is read with ``torch.load(weights_only=True)``, whose unpickler builds tensors and plain containers
and calls nothing else, so a file whose pickle names ``os.system`` (or any other global) is refused
with :class:`UnsafeArtifact` before anything runs. :func:`save_checkpoint` writes only what that
loader reads back (plain data: see :func:`plain`), so a checkpoint this package wrote always loads.
See docs/security.md.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reuse.data.fingerprint import check_fingerprint
from reuse.errors import CorruptArtifact, UnsafeArtifact
from reuse.io import atomic_path

FORMAT_VERSION = 1


# What torch's weights_only unpickler rebuilds without an allow-list (torch 2.x): a checkpoint holds
# nothing else, so it loads with no trust decision at all.
_LEAVES = (type(None), bool, int, float, complex, str, bytes, bytearray, torch.Size, torch.dtype, torch.device)
_MAPPINGS = (dict, collections.OrderedDict, collections.Counter)
_SEQUENCES = (list, tuple, set)


def plain(obj: Any, where: str = "checkpoint") -> Any:
    """``obj`` as data the safe loader reads back: tensors, numbers, strings, bytes, torch dtypes,
    devices and sizes, in dicts (``OrderedDict`` too, with a state dict's ``_metadata``), lists,
    tuples and sets. numpy scalars become Python numbers; anything else (an object, a numpy array, a
    namedtuple, a defaultdict, a function) raises ``TypeError`` naming its key path, here at save
    time, rather than a file that no later run could load. Returns ``obj`` itself when nothing in it
    changed."""
    t = type(obj)
    if t in _LEAVES or t is torch.Tensor or t is torch.nn.Parameter:
        return obj
    if isinstance(obj, np.generic) and obj.dtype != object:
        return obj.item()
    if t in _MAPPINGS:
        for k in obj:
            plain(k, f"a key of {where}")
        items = {k: plain(v, f"{where}[{k!r}]") for k, v in obj.items()}
        before = {} if t is dict else vars(obj)  # OrderedDict, Counter: a state dict's _metadata
        attrs = {k: plain(v, f"{where}.{k}") for k, v in before.items()}
        if all(items[k] is v for k, v in obj.items()) and all(attrs[k] is v for k, v in before.items()):
            return obj
        out = t(items)
        if attrs:
            vars(out).update(attrs)
        return out
    if t in _SEQUENCES:
        new = [plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return obj if all(n is v for n, v in zip(new, obj)) else t(new)
    hint = " (store torch.from_numpy(it) instead)" if t is np.ndarray else ""
    raise TypeError(f"{where} is a {t.__module__}.{t.__qualname__}{hint}, which a checkpoint cannot hold: "
                    "checkpoints are loaded with torch.load(weights_only=True), which rebuilds only tensors "
                    "and plain data. Store it as plain data (a state_dict(), numbers, strings, lists, dicts)")


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    data = plain({"format": FORMAT_VERSION, **payload})
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(data, tmp)


def _refusal(e: BaseException) -> str | None:
    """What torch's weights_only unpickler refused (``GLOBAL posix.system``, an opcode), or ``None``
    when ``e`` is not such a refusal (a truncated or damaged file)."""
    text = str(e)
    if not isinstance(e, pickle.UnpicklingError) or "Weights only load failed" not in text:
        return None
    m = re.search(r"GLOBAL ([\w.<>]+)", text)
    if m:
        return f"it names the global {m.group(1)}"
    reasons = [ln.strip() for ln in text.splitlines()
               if ln.strip() and not any(w in ln for w in ("weights_only", "Weights only", "trust", "Check the "))]
    return reasons[0][:200] if reasons else "the safe unpickler refused it"


def load_checkpoint(path: str | os.PathLike, *, fingerprint: dict | None = None,
                    map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint; raise :class:`CorruptArtifact` if unreadable and
    :class:`FingerprintMismatch` if ``fingerprint`` is given and differs from the stored one."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)  # never False: docs/security.md
    except Exception as e:  # torch raises RuntimeError, EOFError, UnpicklingError, ... on damage
        refused = _refusal(e)
        if refused is not None:
            raise UnsafeArtifact(
                f"checkpoint {path} holds more than tensors and plain data ({refused}), so it was not loaded: "
                "loading it could run code. It is hostile or was not written by this package. Delete it and "
                "re-run snakemake: the run that wrote it is retrained and everything else is left as it "
                "is.") from None
        raise CorruptArtifact(
            f"checkpoint {path} is corrupt or truncated ({type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}). "
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
