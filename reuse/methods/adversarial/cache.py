"""The adversarial-example cache: perturbations generated once against past runs, reused by new runs.

A cache is a folder with two files:

- ``adv.npz``: ``delta`` (N, *input_shape) float16, the perturbation of every training example in
  example-id order (row i belongs to example id i), and the valid input range ``lo``, ``hi``
  (float32, per channel) the attack used;
- ``meta.json``: format, n, input shape, the attack (kind, norm, eps, step, steps, random_start), the
  source runs and checkpoints attacked (path, epoch, seed, SHA-256; several = their mean logits), the
  dataset fingerprint (checked on open), the source ensemble's clean and adversarial accuracy on the
  training set, and the generation's cost ``{time_s, flops}``.

Storing the perturbation in float16 (not the adversarial input) keeps the file at half the size of
the float32 inputs and exact where it matters: the clean input is re-read from the dataset. Rounding
may move a coordinate just outside the ``eps`` ball, so :meth:`AdvCache.adversarial` projects the
perturbation back onto the ball and clamps into the bounds at use time.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reuse.cache import open_meta
from reuse.errors import CorruptArtifact
from reuse.io import save_npz, write_json
from reuse.methods.adversarial.attacks import attack_split, clip_to_bounds, project

FORMAT = "reuse-adv-cache/1"


def write_adv_cache(out_npz: str | os.PathLike, out_meta: str | os.PathLike, model: torch.nn.Module, split, *,
                    spec: dict[str, Any], bounds: tuple[torch.Tensor, torch.Tensor], fingerprint: dict,
                    source: list[dict], batch_size: int = 1024, device: torch.device | str = "cpu",
                    seed: int = 0) -> dict[str, Any]:
    """Attack every example of ``split`` (the training split) with ``spec`` against ``model`` (a past
    run, or :class:`MeanLogits` of several) and write the cache. Returns its metadata."""
    device = torch.device(device)
    model.to(device)
    n = len(split)
    delta = np.zeros((n, *split.input_shape), dtype=np.float16)

    def keep(idx, x, x_adv, y):
        delta[idx.numpy()] = (x_adv - x).cpu().numpy().astype(np.float16)

    res = attack_split(model, split, spec, bounds, batch_size=batch_size, device=device, seed=seed, on_batch=keep)
    lo, hi = (b.float().cpu().numpy() for b in bounds)
    save_npz(out_npz, delta=delta, lo=lo, hi=hi)
    meta = {"format": FORMAT, "n": n, "input_shape": list(split.input_shape), "dtype": "float16",
            "attack": dict(spec), "seed": seed, "source": source, "fingerprint": fingerprint,
            "source_clean_acc": res["clean_acc"], "source_adv_acc": res["robust_acc"],
            "bytes": int(delta.nbytes + lo.nbytes + hi.nbytes), "cost": res["cost"]}
    write_json(out_meta, meta)
    return meta


class AdvCache:
    """A cache opened for reading: the float16 perturbations, the bounds and the metadata."""

    def __init__(self, path: Path, meta: dict[str, Any], delta: np.ndarray, bounds: tuple[torch.Tensor, torch.Tensor]):
        self.path, self.meta, self.delta, self.bounds = path, meta, delta, bounds

    @classmethod
    def open(cls, path: str | os.PathLike, fingerprint: dict | None = None) -> "AdvCache":
        """Open the cache in folder ``path`` (adv.npz + meta.json); refuse it if ``fingerprint`` (the
        data it is used with) differs from the data it was made for."""
        path = Path(path)
        meta = open_meta(path, "adversarial cache", FORMAT, fingerprint)
        try:
            with np.load(path / "adv.npz", allow_pickle=False) as z:
                delta, lo, hi = z["delta"], z["lo"], z["hi"]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            raise CorruptArtifact(f"{path / 'adv.npz'} is missing or unreadable ({e}); delete {path} and re-run "
                                  "snakemake to rebuild the cache") from e
        shape = (meta["n"], *meta["input_shape"])
        if delta.shape != shape:
            raise CorruptArtifact(f"{path / 'adv.npz'} holds perturbations of shape {delta.shape}, meta.json says "
                                  f"{shape}; delete {path} and re-run snakemake")
        return cls(path, meta, delta, (torch.from_numpy(lo), torch.from_numpy(hi)))

    @property
    def attack(self) -> dict[str, Any]:
        return self.meta["attack"]

    @property
    def nbytes(self) -> int:
        return int(self.delta.nbytes)

    def perturbation(self, idx: torch.Tensor | np.ndarray) -> torch.Tensor:
        """The stored float32 perturbations of examples ``idx``, projected back onto the eps ball."""
        ids = np.asarray(idx.cpu() if torch.is_tensor(idx) else idx)
        d = torch.from_numpy(self.delta[ids].astype(np.float32))
        return project(d, float(self.attack["eps"]), self.attack["norm"])

    def adversarial(self, x_clean: torch.Tensor, idx: torch.Tensor | np.ndarray) -> torch.Tensor:
        """The adversarial inputs of examples ``idx`` whose clean (unaugmented) inputs are ``x_clean``:
        ``x + delta`` within eps of ``x`` and within the bounds."""
        d = self.perturbation(idx).to(x_clean.device, x_clean.dtype)
        return clip_to_bounds(x_clean, x_clean + d, self.bounds)
