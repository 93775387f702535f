"""Reading numpy files from results folders, which are untrusted input (docs/security.md).

``np.load`` unpickles object arrays when it is allowed to pickle, and a pickle can run code; every
``np.load`` in the package passes ``allow_pickle=False``. :func:`read_npz` is that call for the
stages that read a past run's small ``.npz`` files (predictions, per-example statistics, transfer
values): it reads the arrays they ask for and turns every way the file can be wrong into one error
that names the file and how to rebuild it.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from reuse.errors import CorruptArtifact, UnsafeArtifact

REBUILD = "delete it and re-run snakemake: the rule that wrote it runs again"


def read_npz(path: str | os.PathLike, keys: list[str] | tuple[str, ...] | None = None, *,
             what: str = "array file", rebuild: str = REBUILD) -> dict[str, np.ndarray]:
    """The arrays ``keys`` (all, if ``None``) of the ``.npz`` at ``path``, read into memory with
    ``allow_pickle=False``. A file that holds pickled objects (an object array, or a pickle under an
    ``.npz`` name) is :class:`UnsafeArtifact`, refused unread; one that is truncated, not an ``.npz``
    or lacks a key is :class:`CorruptArtifact`. A missing file is ``FileNotFoundError``, as before."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise ValueError("an .npy array, not an .npz archive")
            missing = [k for k in keys or () if k not in z.files]
            if missing:
                raise KeyError(f"no array {', '.join(missing)} (it holds {', '.join(z.files) or 'none'})")
            return {k: z[k] for k in (z.files if keys is None else keys)}
    except FileNotFoundError:
        raise
    except ValueError as e:
        if "allow_pickle" in str(e) and (_pickled(path) or "Object arrays" in str(e)):
            raise UnsafeArtifact(f"{what} {path} holds pickled Python objects, which this package never writes, so "
                                 f"it was not loaded (loading it could run code); {rebuild}") from None
        why = "not a numpy file" if "allow_pickle" in str(e) else str(e)  # numpy's message for unknown formats
        raise CorruptArtifact(f"{what} {path} is unreadable ({why}); {rebuild}") from e
    except (OSError, EOFError, KeyError, zipfile.BadZipFile) as e:
        raise CorruptArtifact(f"{what} {path} is unreadable ({type(e).__name__}: {e}); {rebuild}") from e


def _pickled(path: Path) -> bool:
    """Whether ``path`` starts as a pickle of protocol 2 or later does (the PROTO opcode)."""
    with open(path, "rb") as f:
        return f.read(1) == b"\x80"
