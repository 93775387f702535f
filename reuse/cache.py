"""Logit caches: a past run's outputs on every training example, one array indexed by example id.

A cache folder (``.../logits/e<epoch>/``) holds:

``logits.npy``
    (N, V, C) float16 (or float32): logits of example ``idx`` on view ``v`` at row ``[idx, v]``.
    Memory-mappable with ``np.load(..., mmap_mode="r", allow_pickle=False)``.
``topk_values.npy``, ``topk_indices.npy``, ``logsumexp.npy`` (when ``topk`` > 0)
    The sparse form: the k largest logits per row (descending) with their class ids, and the row's
    log-sum-exp. At temperature 1 the kept classes have probability ``exp(value - logsumexp)``; the
    remaining mass ``1 - sum`` is spread uniformly over the other ``C - k`` classes.
``meta.json``
    Shapes, dtype, the views (``{"kind": "clean"}`` or ``{"kind": "augment", "seed", "view",
    "augment"}``), the checkpoint it came from (path, epoch, SHA-256), the dataset fingerprint and the
    cost of writing it (seconds and measured forward FLOPs).

A view ``{"kind": "augment", "seed": s, "view": v}`` is exactly the input a run with augmentation
seed ``s`` sees in epoch ``v`` (see :mod:`reuse.data.augment`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from reuse.train.flops import FlopCounterMode

from reuse.data.augment import Augment
from reuse.data.fingerprint import check_fingerprint
from reuse.errors import CorruptArtifact, ReuseError
from reuse.io import atomic_path, read_json, write_json

FORMAT = "reuse.logit_cache/1"
F16_MAX = float(np.finfo(np.float16).max)


def views_for(augment: dict | None, k: int, seed: int) -> list[dict[str, Any]]:
    """The clean view, then views 0..k-1 of ``augment`` with ``seed`` (none without augmentation)."""
    views: list[dict[str, Any]] = [{"kind": "clean"}]
    aug = Augment.from_spec(augment)
    if aug is not None:
        views += [{"kind": "augment", "seed": seed, "view": v, "augment": aug.spec()} for v in range(k)]
    return views


@torch.no_grad()
def write_logit_cache(out_dir: str | os.PathLike, model: torch.nn.Module, data, *, views: list[dict],
                      fingerprint: dict, source: dict, dtype: str = "float16", dense: bool = True, topk: int = 0,
                      batch_size: int = 1024, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Evaluate ``model`` (eval mode) on every example of ``data`` for each view and write the cache.

    Arrays are filled batch by batch into memory maps, so the cache never has to fit in RAM; each
    file is renamed into place only when complete, and ``meta.json`` is written last.
    """
    out_dir = Path(out_dir)
    n, v, c = len(data), len(views), data.num_classes
    if topk >= c:
        raise ReuseError(f"cache.topk={topk} must be smaller than the {c} classes; use the dense form instead")
    np_dtype = np.dtype(dtype)
    model.eval().to(device)
    files: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    if dense:
        files["logits"] = ((n, v, c), np_dtype)
    if topk:
        files.update(topk_values=((n, v, topk), np_dtype),
                     topk_indices=((n, v, topk), np.dtype(np.int16 if c <= 32767 else np.int32)),
                     logsumexp=((n, v), np.dtype(np.float32)))
    t0, flops, batch_flops = time.perf_counter(), 0, {}
    with _memmaps(out_dir, files) as arrays:
        for j, view in enumerate(views):
            aug = Augment.from_spec(view.get("augment")) if view["kind"] == "augment" else None
            for start in range(0, n, batch_size):
                ids = torch.arange(start, min(n, start + batch_size))
                x, _, _ = data.get(ids, aug, view.get("seed", 0), view.get("view", 0))
                if len(ids) not in batch_flops:
                    with FlopCounterMode(display=False) as counter:
                        logits = model(x.to(device)).float().cpu()
                    batch_flops[len(ids)] = counter.get_total_flops()
                else:
                    logits = model(x.to(device)).float().cpu()
                flops += batch_flops[len(ids)]
                if not torch.isfinite(logits).all():
                    raise ReuseError(f"the model's logits are not finite on examples {start}..{start + len(ids) - 1}; "
                                     f"the checkpoint {source.get('path')} has diverged")
                if np_dtype == np.float16 and logits.abs().max() > F16_MAX:
                    raise ReuseError(f"logits exceed the float16 range ({logits.abs().max():.3g}); set cache.dtype: float32")
                sl = slice(start, start + len(ids))
                if dense:
                    arrays["logits"][sl, j] = logits.numpy().astype(np_dtype)
                if topk:
                    val, ind = logits.topk(topk, dim=1)
                    stored = torch.from_numpy(val.numpy().astype(np_dtype))
                    arrays["topk_values"][sl, j] = stored.numpy()
                    arrays["topk_indices"][sl, j] = ind.numpy()
                    # The log-normaliser of the logits with the kept values as stored (rounded), so the
                    # kept mass exp(value - logsumexp) stays below 1 however large the logits are.
                    arrays["logsumexp"][sl, j] = torch.logsumexp(logits.scatter(1, ind, stored.float()), 1).numpy()
    meta = {"format": FORMAT, "n": n, "num_views": v, "num_classes": c, "dtype": dtype, "dense": dense,
            "topk": topk, "views": views, "source": source, "fingerprint": fingerprint,
            "topk_rest": "uniform over the classes not kept" if topk else None,
            "cost": {"time_s": time.perf_counter() - t0, "flops": flops}}
    write_json(out_dir / "meta.json", meta)
    return meta


class _memmaps:
    """Open .npy memory maps under temporary names; rename them into place on success."""

    def __init__(self, out_dir: Path, files: dict[str, tuple[tuple[int, ...], np.dtype]]):
        self.out_dir, self.files = out_dir, files
        self._ctx: list = []

    def __enter__(self) -> dict[str, np.memmap]:
        arrays = {}
        for name, (shape, dt) in self.files.items():
            ctx = atomic_path(self.out_dir / f"{name}.npy", suffix=".npy")
            tmp = ctx.__enter__()
            self._ctx.append(ctx)
            arrays[name] = np.lib.format.open_memmap(tmp, mode="w+", dtype=dt, shape=shape)
        self.arrays = arrays
        return arrays

    def __exit__(self, *exc) -> None:
        given = error = exc[1]
        try:
            for a in self.arrays.values():
                a.flush()
        except BaseException as e:  # a flush that fails (a full disk) fails every file
            error = e
        self.arrays.clear()
        # Every file's context is closed, also after one failed (a full disk while moving one into
        # place): each removes its own temporary file; the files already moved into place are removed
        # too, so a failed cache leaves none of its arrays behind.
        done = []
        for name, ctx in zip(self.files, self._ctx):
            try:
                ctx.__exit__(*((type(error), error, error.__traceback__) if error is not None else (None, None, None)))
                if error is None:
                    done.append(self.out_dir / f"{name}.npy")
            except BaseException as e:
                error = e
        if error is not None:
            for path in done:
                path.unlink(missing_ok=True)
            if error is not given:
                raise error


def open_meta(path: Path, what: str, fmt: str, fingerprint: dict | None = None) -> dict[str, Any]:
    """The meta.json of the cache folder ``path`` (a ``what``, e.g. "logit cache"), checked: it
    exists, parses, has format ``fmt`` and, if ``fingerprint`` is given, was made for that data."""
    try:
        meta = read_json(path / "meta.json")
    except FileNotFoundError as e:
        raise ReuseError(f"no {what} in {path} (meta.json missing); build it with snakemake") from e
    except ValueError as e:
        raise CorruptArtifact(f"{path / 'meta.json'} is not valid JSON ({e}); delete {path} and re-run snakemake") from e
    if meta.get("format") != fmt:
        raise CorruptArtifact(f"{path} is not a {fmt} cache (format {meta.get('format')!r}); delete it and re-run "
                              "snakemake")
    if fingerprint is not None:
        check_fingerprint(meta.get("fingerprint"), fingerprint, f"{what} {path}")
    return meta


class LogitCache:
    """A cache opened for reading: memory-mapped arrays plus their metadata."""

    def __init__(self, path: Path, meta: dict[str, Any], arrays: dict[str, np.ndarray]):
        self.path, self.meta, self.arrays = path, meta, arrays

    @classmethod
    def open(cls, path: str | os.PathLike, fingerprint: dict | None = None) -> "LogitCache":
        """Open the cache in ``path``; refuse it if ``fingerprint`` (the data it is used with) differs."""
        path = Path(path)
        meta = open_meta(path, "logit cache", FORMAT, fingerprint)
        n, v, c, k = meta["n"], meta["num_views"], meta["num_classes"], meta["topk"]
        expect = {}
        if meta["dense"]:
            expect["logits"] = (n, v, c)
        if k:
            expect.update(topk_values=(n, v, k), topk_indices=(n, v, k), logsumexp=(n, v))
        arrays = {}
        for name, shape in expect.items():
            try:
                arrays[name] = np.load(path / f"{name}.npy", mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError, EOFError) as e:
                raise CorruptArtifact(f"{path / (name + '.npy')} is missing or unreadable ({e}); delete {path} and "
                                      "re-run snakemake to rebuild the cache") from e
            if arrays[name].shape != shape:
                raise CorruptArtifact(f"{path / (name + '.npy')} has shape {arrays[name].shape}, meta.json says "
                                      f"{shape}; delete {path} and re-run snakemake")
        return cls(path, meta, arrays)

    @property
    def views(self) -> list[dict[str, Any]]:
        return self.meta["views"]

    def view_index(self, kind: str = "clean", seed: int | None = None, view: int | None = None) -> int:
        for i, vw in enumerate(self.views):
            if vw["kind"] == kind and (kind == "clean" or (vw["seed"] == seed and vw["view"] == view)):
                return i
        raise ReuseError(f"logit cache {self.path} has no {kind} view (seed={seed}, view={view}); it holds "
                         f"{len(self.views)} views: rebuild it with more cache.views")

    def logits(self, idx: torch.Tensor | np.ndarray, view: int = 0) -> torch.Tensor:
        """Dense float32 logits of examples ``idx`` on cached view number ``view``: (B, C)."""
        if "logits" not in self.arrays:
            raise ReuseError(f"logit cache {self.path} was written without the dense form (cache.dense: false)")
        ids = np.asarray(idx.cpu() if torch.is_tensor(idx) else idx)
        return torch.from_numpy(np.asarray(self.arrays["logits"][ids, view], dtype=np.float32))

    def probs(self, idx: torch.Tensor | np.ndarray, view: int = 0) -> torch.Tensor:
        """Probabilities at temperature 1, from the dense form or else rebuilt from the top-k form."""
        if "logits" in self.arrays:
            return torch.softmax(self.logits(idx, view), dim=1)
        ids = np.asarray(idx.cpu() if torch.is_tensor(idx) else idx)
        val = torch.from_numpy(np.asarray(self.arrays["topk_values"][ids, view], dtype=np.float32))
        ind = torch.from_numpy(np.asarray(self.arrays["topk_indices"][ids, view], dtype=np.int64))
        lse = torch.from_numpy(np.asarray(self.arrays["logsumexp"][ids, view], dtype=np.float32))
        kept = torch.exp(val - lse[:, None])
        c, k = self.meta["num_classes"], self.meta["topk"]
        rest = (1 - kept.sum(1, keepdim=True)).clamp_min(0) / (c - k)
        return rest.expand(-1, c).clone().scatter_(1, ind, kept)
