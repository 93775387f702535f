"""Per-example difficulty scores from past runs, and the score table that data methods read.

What past runs know about each training example, measured on the clean training set (no
augmentation, model in eval mode) at a run's saved checkpoints:

* ``grand``: the L2 norm of the example's cross-entropy gradient over all trainable parameters
  (Paul et al. 2021), exact, from :func:`reuse.ops.per_example_grad_norms`;
* ``el2n``: ``|| softmax(f(x)) - onehot(y) ||_2`` (Paul et al. 2021);
* ``loss``: the cross-entropy;
* ``margin``: the true class's logit minus the largest other logit (high = easy);
* ``forgetting``: forgetting events (Toneva et al. 2019) up to the checkpoint's epoch, counted from
  the correctness the run recorded for each example when it trained on it (the recipe's
  ``example_stats``); an example never classified correctly counts ``epoch``, more than any example
  that was learned can reach.

:func:`score_run` writes one run's scores (``scores.npz``, arrays ``[epochs, N]``);
:func:`write_score_table` averages runs into the dataset's table (parquet, long format: ``idx, score,
epoch, value, std, n_runs``) whose fingerprint :class:`ScoreTable` checks on opening.
:func:`rank_agreement` measures how stable each score is across runs, epochs and numbers of runs.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import logging
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from reuse.train.flops import FlopCounterMode

from reuse.data.fingerprint import check_fingerprint
from reuse.errors import CorruptArtifact, FingerprintMismatch, ReuseError
from reuse.io import atomic_path, read_json, save_npz, write_json
from reuse.safeload import read_npz

if TYPE_CHECKING:  # pandas is imported where it is used: a training job that reads scores needs none
    import pandas as pd

log = logging.getLogger("reuse.scores")


@dataclass(frozen=True)
class ScoreSpec:
    name: str
    hard_is_high: bool  # orientation: difficulty = value if hard_is_high else -value
    needs_backward: bool = False
    needs_example_stats: bool = False
    description: str = ""


SCORES: dict[str, ScoreSpec] = {s.name: s for s in (
    ScoreSpec("grand", True, needs_backward=True, description="per-example gradient norm"),
    ScoreSpec("el2n", True, description="error L2 norm"),
    ScoreSpec("loss", True, description="cross-entropy"),
    ScoreSpec("margin", False, description="true-class logit minus the largest other logit"),
    ScoreSpec("forgetting", True, needs_example_stats=True, description="forgetting events"),
)}


# ----------------------------------------------------------------------------- pure functions
def margins(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``logits[i, y_i] - max_{k != y_i} logits[i, k]`` (positive when correct)."""
    true = logits.gather(1, targets[:, None])[:, 0]
    other = logits.scatter(1, targets[:, None], float("-inf")).amax(1)
    return true - other


def forgetting_counts(correct: np.ndarray, upto: int | None = None) -> np.ndarray:
    """Forgetting events per example from per-epoch correctness ``correct`` [E, N] (1 correct, 0 wrong,
    -1 not seen that epoch), over the first ``upto`` epochs: the number of correct -> incorrect
    transitions between consecutive epochs in which the example was seen. An example never correct
    gets ``upto``, more than a learned example can reach (at most ``upto // 2``)."""
    c = np.asarray(correct)[: upto if upto is not None else len(correct)]
    e = c.shape[0]
    counts = np.zeros(c.shape[1], dtype=np.int64)
    prev = np.full(c.shape[1], -1, dtype=np.int8)
    for row in c:
        seen = row >= 0
        counts += (seen & (prev == 1) & (row == 0))
        prev = np.where(seen, row, prev)
    never = ~(c == 1).any(0)
    counts[never] = e
    return counts


def difficulty(values: np.ndarray, name: str) -> np.ndarray:
    """``values`` of score ``name`` oriented so that higher means harder."""
    return np.asarray(values, dtype=np.float64) * (1.0 if SCORES[name].hard_is_high else -1.0)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    import pandas as pd

    ra = pd.Series(a).rank().to_numpy()
    rb = pd.Series(b).rank().to_numpy()
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


# ----------------------------------------------------------------------------- scoring a checkpoint
def checkpoint_scores(model: torch.nn.Module, data, names: Iterable[str], *, batch_size: int,
                      device: torch.device) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The scores ``names`` (forward ones and ``grand``) of every training example under ``model``,
    and their cost (seconds, FLOPs of the aten operations: the norm kernels are not counted)."""
    from reuse import ops

    names = [n for n in names if not SCORES[n].needs_example_stats]
    if not names:
        return {}, {"time_s": 0.0, "flops": 0}
    model.eval().to(device)
    n = len(data)
    out = {k: np.empty(n, dtype=np.float32) for k in names}
    flops: dict[int, int] = {}
    total_flops = 0
    t0 = time.perf_counter()
    for x, y, idx in data.batches(batch_size):
        x, y = x.to(device), y.to(device)
        counter = FlopCounterMode(display=False) if x.shape[0] not in flops else None
        with counter if counter is not None else contextlib.nullcontext():
            forward = any(k != "grand" for k in names)
            logits = None
            if "grand" in names:  # one forward + backward gives the norms and the logits
                got = ops.per_example_grad_norms(model, x, y, return_logits=forward)
                norms, logits = got if forward else (got, None)
                out["grand"][idx.numpy()] = norms.float().cpu().numpy()
            if forward:
                if logits is None:
                    with torch.no_grad():
                        logits = model(x)
                logits = logits.float()
                if "el2n" in names:
                    out["el2n"][idx.numpy()] = ops.el2n(logits, y).cpu().numpy()
                if "loss" in names:
                    out["loss"][idx.numpy()] = F.cross_entropy(logits, y, reduction="none").cpu().numpy()
                if "margin" in names:
                    out["margin"][idx.numpy()] = margins(logits, y).cpu().numpy()
        if counter is not None:
            flops[x.shape[0]] = counter.get_total_flops()
        total_flops += flops[x.shape[0]]
    return out, {"time_s": time.perf_counter() - t0, "flops": int(total_flops)}


def score_run(run_dir: str | Path, data, *, epochs: list[int], names: list[str], batch_size: int,
              device: torch.device, out_npz: str | Path, out_json: str | Path) -> dict[str, Any]:
    """Score every training example at each checkpoint epoch of the past run in ``run_dir``; write
    ``out_npz`` (one ``[len(epochs), N]`` float32 array per score, and ``epochs``) and ``out_json``
    (run, epochs, fingerprint, cost)."""
    from reuse.train import build_from_checkpoint, load_checkpoint

    run_dir = Path(run_dir)
    fp = data.train.fingerprint
    n = len(data.train)
    arrays = {k: np.empty((len(epochs), n), dtype=np.float32) for k in names}
    cost = {"time_s": 0.0, "flops": 0}
    stats = None
    if any(SCORES[k].needs_example_stats for k in names):
        path = run_dir / "example_stats.npz"
        if not path.exists():
            raise ReuseError(f"{path} is missing: forgetting events need the per-example statistics a run "
                             "records with `example_stats: true` in its recipe; enable it and retrain, or "
                             "drop 'forgetting' from scores.names")
        stats = read_npz(path, ["correct"], what="per-example statistics")["correct"]
    for i, e in enumerate(epochs):
        ckpt = load_checkpoint(run_dir / "ckpt" / f"e{e}.pt", fingerprint=fp, map_location="cpu")
        model = build_from_checkpoint(ckpt)
        got, c = checkpoint_scores(model, data.train, names, batch_size=batch_size, device=device)
        for k, v in got.items():
            arrays[k][i] = v
        if stats is not None:
            arrays["forgetting"][i] = forgetting_counts(stats, upto=e)
        cost["time_s"] += c["time_s"]
        cost["flops"] += c["flops"]
        log.info("%s epoch %d: %s (%.1fs)", run_dir, e,
                 ", ".join(f"{k} mean {arrays[k][i].mean():.4g}" for k in names), c["time_s"])
    save_npz(out_npz, epochs=np.asarray(epochs, dtype=np.int64), **arrays)
    meta = {"run": str(run_dir), "epochs": list(epochs), "scores": list(names), "n": n, "fingerprint": fp,
            "cost": {**cost, "note": "flops count aten operations; the per-layer norm kernels are not counted"}}
    write_json(out_json, meta)
    return meta


# ----------------------------------------------------------------------------- the table
def load_run_scores(npz: str | Path) -> dict[str, np.ndarray]:
    try:
        with np.load(npz, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise CorruptArtifact(f"score file {npz} is unreadable ({e}); delete it and re-run snakemake") from e


def write_score_table(run_npzs: list[str], run_jsons: list[str], out_parquet: str | Path,
                      out_json: str | Path) -> pd.DataFrame:
    """Average the runs' scores into one long table ``idx, score, epoch, value, std, n_runs``."""
    import pandas as pd

    metas = [read_json(j) for j in run_jsons]
    fp = metas[0]["fingerprint"]
    for j, m in zip(run_jsons, metas):
        try:
            check_fingerprint(m["fingerprint"], fp, f"score file {j}")
        except FingerprintMismatch as e:  # without the data, which of the two is this dataset's is unknown
            raise FingerprintMismatch(
                f"score files {run_jsons[0]} and {j} were made for different data, so they cannot be averaged "
                f"({e}). Delete the score files (scores.npz, scores.json) of the run made for other data, or of "
                "both if unsure, and re-run snakemake.") from None
    runs = [load_run_scores(p) for p in run_npzs]
    epochs = runs[0]["epochs"]
    names = [k for k in runs[0] if k != "epochs"]
    frames = []
    n = len(runs[0][names[0]][0])
    for name in names:
        stack = np.stack([r[name] for r in runs]).astype(np.float64)  # [R, E, N]
        for i, e in enumerate(epochs):
            frames.append(pd.DataFrame({
                "idx": np.arange(n, dtype=np.int64), "score": name, "epoch": int(e),
                "value": stack[:, i].mean(0), "std": stack[:, i].std(0, ddof=1) if len(runs) > 1 else np.nan,
                "n_runs": len(runs)}))
    df = pd.concat(frames, ignore_index=True)
    df["score"] = df["score"].astype("category")
    meta = {"fingerprint": fp, "runs": [m["run"] for m in metas], "epochs": [int(e) for e in epochs],
            "scores": names, "n": n,
            "cost": {"time_s": sum(m["cost"]["time_s"] for m in metas),
                     "flops": sum(m["cost"]["flops"] for m in metas)}}
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                           b"reuse": json.dumps(meta, sort_keys=True).encode()})
    with atomic_path(out_parquet, suffix=".parquet") as tmp:
        pq.write_table(table, tmp)
    write_json(out_json, meta)
    return df


# numpy dtypes of the arrow types a score table's columns hold
_ARROW_DTYPES = {"int8": np.int8, "int16": np.int16, "int32": np.int32, "int64": np.int64, "float": np.float32,
                 "double": np.float64}


def _arrow_to_numpy(col: Any) -> np.ndarray:
    """An arrow column as numpy: a primitive column without nulls straight from its data buffers, a
    dictionary column (the score names) by its dictionary and indices. pyarrow's own ``to_numpy`` would
    import pandas (about 0.2 s in every job that reads scores); anything else still goes through it."""
    import pyarrow as pa

    def primitive(arr: Any) -> np.ndarray | None:
        dtype = _ARROW_DTYPES.get(str(arr.type))
        if dtype is None or arr.null_count:
            return None
        size = np.dtype(dtype).itemsize
        return np.frombuffer(arr.buffers()[1], dtype=dtype, count=len(arr), offset=arr.offset * size)

    parts = []
    for chunk in col.chunks:
        if pa.types.is_dictionary(chunk.type):
            names, codes = chunk.dictionary.to_pylist(), primitive(chunk.indices)
            part = None if codes is None else np.asarray(names, dtype=object)[codes]
        else:
            part = primitive(chunk)
        parts.append(chunk.to_numpy(zero_copy_only=False) if part is None else part)
    return np.concatenate(parts) if parts else col.to_numpy()


class ScoreTable:
    """A dataset's score table, checked against the data it is used with. Read with pyarrow and looked
    up with numpy (a training job that reads scores imports no pandas); :attr:`df` is the table as a
    pandas DataFrame, for the report and the command line."""

    def __init__(self, path: Path, table: Any, meta: dict[str, Any]):
        self.path, self.table, self.meta = path, table, meta

    @classmethod
    def open(cls, path: str | Path, fingerprint: dict | None = None) -> "ScoreTable":
        import pyarrow.parquet as pq

        path = Path(path)
        try:
            table = pq.ParquetFile(path).read()  # (pq.read_table would import pandas, through pyarrow.dataset)
            meta = json.loads(table.schema.metadata[b"reuse"])
        except FileNotFoundError:
            raise ReuseError(f"score table {path} does not exist; run the workflow's `scores` rule "
                             "(snakemake) to compute it from the past runs") from None
        except (OSError, KeyError, TypeError, ValueError) as e:
            raise CorruptArtifact(f"score table {path} is unreadable ({e}); delete it and re-run snakemake") from e
        if fingerprint is not None:
            check_fingerprint(meta["fingerprint"], fingerprint, f"score table {path}")
        return cls(path, table, meta)

    @functools.cached_property
    def df(self) -> pd.DataFrame:
        return self.table.to_pandas()

    @property
    def n(self) -> int:
        return int(self.meta["n"])

    @functools.cached_property
    def _columns(self) -> dict[str, np.ndarray]:
        """The columns :meth:`values` looks up, as numpy arrays (read once)."""
        try:
            return {c: _arrow_to_numpy(self.table.column(c)) for c in ("score", "epoch", "idx", "value")}
        except KeyError as e:
            raise CorruptArtifact(f"score table {self.path} has no column {e}; delete it and re-run snakemake") from e

    def values(self, name: str, epoch: int) -> np.ndarray:
        """The run-averaged score ``name`` at ``epoch``, in example-id order."""
        if name not in self.meta["scores"]:
            raise ReuseError(f"score table {self.path} has no score '{name}' (has {', '.join(self.meta['scores'])}); "
                             "add it to scores.names in the config")
        if epoch not in self.meta["epochs"]:
            raise ReuseError(f"score table {self.path} has no epoch {epoch} (has {self.meta['epochs']}); "
                             "use one of those or add the epoch to scores.epochs")
        c = self._columns
        rows = (c["score"] == name) & (c["epoch"] == epoch)
        v = c["value"][rows][np.argsort(c["idx"][rows], kind="stable")]
        if len(v) != self.n:
            raise CorruptArtifact(f"score table {self.path}: {name} at epoch {epoch} has {len(v)} rows, not {self.n}")
        return v

    def difficulty(self, name: str, epoch: int) -> np.ndarray:
        """The score oriented so that higher means harder."""
        return difficulty(self.values(name, epoch), name)


# ----------------------------------------------------------------------------- agreement study
def rank_agreement(run_npzs: list[str], *, max_subsets: int = 20, seed: int = 0) -> pd.DataFrame:
    """How stable each score's ranking is. Rows of three kinds:

    * ``runs``: Spearman between two runs' scores at the same epoch, mean over all pairs;
    * ``epochs``: Spearman between the run-averaged scores at two epochs;
    * ``n_runs``: Spearman between the mean over ``k`` runs and the mean over the other runs,
      averaged over up to ``max_subsets`` subsets of size ``k`` (k = 1 .. R-1): how many past runs a
      score needs before adding more stops changing its ranking.
    """
    import pandas as pd

    runs = [load_run_scores(p) for p in run_npzs]
    epochs = [int(e) for e in runs[0]["epochs"]]
    names = [k for k in runs[0] if k != "epochs"]
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    for name in names:
        stack = np.stack([r[name] for r in runs]).astype(np.float64)  # [R, E, N]
        n_runs = len(runs)
        for i, e in enumerate(epochs):
            pairs = [spearman(stack[a, i], stack[b, i]) for a, b in itertools.combinations(range(n_runs), 2)]
            if pairs:
                rows.append({"kind": "runs", "score": name, "epoch": e, "other_epoch": e, "k": 1,
                             "spearman": float(np.nanmean(pairs)), "spearman_std": float(np.nanstd(pairs)),
                             "n": len(pairs)})
            for j, e2 in enumerate(epochs):
                if j > i:
                    rows.append({"kind": "epochs", "score": name, "epoch": e, "other_epoch": e2, "k": n_runs,
                                 "spearman": spearman(stack[:, i].mean(0), stack[:, j].mean(0)),
                                 "spearman_std": float("nan"), "n": 1})
            for k in range(1, n_runs):
                subsets = list(itertools.combinations(range(n_runs), k))
                if len(subsets) > max_subsets:
                    subsets = [subsets[t] for t in rng.choice(len(subsets), max_subsets, replace=False)]
                vals = []
                for sub in subsets:
                    rest = [r for r in range(n_runs) if r not in sub]
                    vals.append(spearman(stack[list(sub), i].mean(0), stack[rest, i].mean(0)))
                rows.append({"kind": "n_runs", "score": name, "epoch": e, "other_epoch": e, "k": k,
                             "spearman": float(np.nanmean(vals)), "spearman_std": float(np.nanstd(vals)),
                             "n": len(vals)})
    return pd.DataFrame(rows)


def job_difficulty(job: Any, data: Any) -> tuple[np.ndarray | None, list[dict]]:
    """The difficulty a data method's run orders or weighs examples by, and what reading it reused.

    ``job`` (a :class:`reuse.workflow.Job`) names the score table and the scored past runs' run.json
    in its staged inputs (``scores``, ``past_runs``; both empty for a random variant, which reads
    neither: then None and nothing reused), the ``score`` in its variant and the scored epoch in its
    params (``score_epoch``)."""
    if not job.inputs.get("scores"):
        return None, []
    path = job.inputs["scores"][0]
    table = ScoreTable.open(path, fingerprint=data.train.fingerprint)
    diff = table.difficulty(job.cfg["score"], job.params["score_epoch"])
    reused = []
    for f in job.inputs["past_runs"]:
        c = read_json(f)["cost"]
        reused.append({"kind": "past_run", "path": str(Path(f).parent), "time_s": c["train_time_s"],
                       "flops": c["train_flops"]})
    reused.append({"kind": "score_table", "path": path, "time_s": table.meta["cost"]["time_s"],
                   "flops": table.meta["cost"]["flops"]})
    return diff, reused
