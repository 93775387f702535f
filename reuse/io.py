"""Atomic artifact writes and small JSON helpers.

Every artifact is written to a temporary file in the destination's folder and renamed into place, so
a killed job never leaves a half-written file under a name that looks finished. A disk that fills
up mid-write (ENOSPC, or a quota: EDQUOT) leaves no temporary file and the name untouched, and is one
:class:`reuse.errors.DiskFull` error naming the file and the fix.

Fault injection (tests, drills): with ``REUSE_FAULT_DISK_FULL`` set to a glob (``fnmatch`` on the
destination's full path, e.g. ``*/s1/run.json``), every :func:`atomic_path` whose destination matches
has its temporary file cut to half of what the writer wrote and then fails with ENOSPC, as a disk
that filled up mid-write would. Unset (the normal case) it costs one environment lookup per file.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from reuse import faults
from reuse.errors import CorruptArtifact, DiskFull

#: the environment variable of the disk-full fault injection (see the module's docstring)
FAULT_DISK_FULL = "REUSE_FAULT_DISK_FULL"
_FULL = (errno.ENOSPC, errno.EDQUOT)

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` if the block succeeds."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + suffix, dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        yield tmp
        faults.point("write")  # tests/faults: a kill here leaves the file written, not renamed
        _maybe_fill_disk(path, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except OSError as e:
        if e.errno not in _FULL or isinstance(e, DiskFull):
            raise
        raise DiskFull(disk_full_message(path, e)) from e
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def disk_full_message(path: str | os.PathLike, error: OSError | None = None) -> str:
    """What a full disk while writing ``path`` means and what to do."""
    why = os.strerror(error.errno) if error is not None and error.errno else "No space left on device"
    return (f"the disk is full: writing {path} failed ({why}). Nothing was written under that name and no "
            f"temporary file was left; finished results are untouched. Free space on the disk holding "
            f"{Path(path).parent} (or point `results` at a larger one) and re-run snakemake: it redoes only the "
            "jobs that did not finish.")


def _maybe_fill_disk(path: Path, tmp: Path) -> None:
    """The fault injection: if ``REUSE_FAULT_DISK_FULL`` matches ``path``, cut ``tmp`` to half its size (a
    write that stopped part way) and fail with ENOSPC."""
    pattern = os.environ.get(FAULT_DISK_FULL)
    if not pattern or not fnmatch.fnmatch(str(path), pattern):
        return
    with open(tmp, "rb+") as f:
        f.truncate(os.fstat(f.fileno()).st_size // 2)
    raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} (injected by {FAULT_DISK_FULL})", str(tmp))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


class CorruptJSON(CorruptArtifact, ValueError):
    """A JSON artifact that does not parse (truncated, emptied, overwritten). Also a ``ValueError``, as
    ``json.loads``'s own error is, for code that handles that."""


def read_json(path: str | os.PathLike) -> Any:
    """The JSON document in ``path``; :class:`CorruptJSON` naming the file and the fix if it is not one."""
    text = Path(path).read_text(errors="replace")
    try:
        return json.loads(text)
    except ValueError as e:
        raise CorruptJSON(corrupt_message(path, f"not valid JSON: {e}")) from e


def corrupt_message(path: str | os.PathLike, why: str) -> str:
    """What a damaged artifact means and what to do: delete it, and Snakemake remakes it."""
    return (f"{path} is corrupt or truncated ({why}). Delete it and re-run snakemake: the job that made it "
            "runs again, and the results that do not depend on it are left as they are.")


def read_csv(path: str | os.PathLike, **kwargs: Any):
    """A table the workflow wrote (run tables, studies) as a pandas DataFrame; :class:`CorruptArtifact`
    naming the file and the fix if it is empty, cut short (every table written here ends in a newline),
    or does not parse. A missing file stays a ``FileNotFoundError``."""
    import io as _io

    import pandas as pd

    data = Path(path).read_bytes()
    if not data.strip():
        raise CorruptArtifact(corrupt_message(path, "it is empty"))
    if not data.endswith(b"\n"):
        raise CorruptArtifact(corrupt_message(path, "its last line is cut short"))
    try:
        return pd.read_csv(_io.BytesIO(data), **kwargs)
    except ValueError as e:  # pandas' EmptyDataError and ParserError are ValueErrors
        raise CorruptArtifact(corrupt_message(path, f"{type(e).__name__}: {str(e)[:200]}")) from e


def write_jsonl(path: str | os.PathLike, rows: list[dict]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(r, sort_keys=True, default=_json_default) + "\n" for r in rows))


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    lines = Path(path).read_text(errors="replace").splitlines()
    try:
        return [json.loads(line) for line in lines if line.strip()]
    except ValueError as e:
        raise CorruptJSON(corrupt_message(path, f"a line is not valid JSON: {e}")) from e


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, array)


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")
