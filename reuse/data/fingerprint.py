"""Dataset fingerprints: what an artifact was computed on.

A fingerprint describes one split of one dataset: its kind, size, class count, input shape, and
SHA-256 hashes of its labels and inputs *in example-id order* (so a reordering is a different
dataset). Every artifact (checkpoint, logit cache, score table) stores the fingerprint of the data it
was made on, and loading it against other data raises :class:`FingerprintMismatch` naming the fields
that differ.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable

import numpy as np

from reuse.errors import FingerprintMismatch

# Fields that identify the data; everything else in a fingerprint is informative only.
IDENTITY_FIELDS = ("kind", "split", "n", "num_classes", "input_shape", "labels_sha256", "inputs_sha256")


def hash_array(a: np.ndarray) -> str:
    a = np.ascontiguousarray(a)
    h = hashlib.sha256()
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def hash_strings(items: Iterable[str]) -> str:
    h = hashlib.sha256()
    for s in items:
        h.update(s.encode())
        h.update(b"\0")
    return h.hexdigest()


def make_fingerprint(*, name: str, kind: str, split: str, labels: np.ndarray, inputs_sha256: str,
                     num_classes: int, input_shape: Iterable[int]) -> dict[str, Any]:
    labels = np.asarray(labels, dtype=np.int64)
    fp = {
        "name": name,
        "kind": kind,
        "split": split,
        "n": int(labels.shape[0]),
        "num_classes": int(num_classes),
        "input_shape": [int(s) for s in input_shape],
        "labels_sha256": hash_array(labels),
        "inputs_sha256": inputs_sha256,
    }
    fp["digest"] = digest(fp)
    return fp


def digest(fp: dict[str, Any]) -> str:
    ident = {k: fp[k] for k in IDENTITY_FIELDS}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def check_fingerprint(found: dict[str, Any], expected: dict[str, Any], what: str) -> None:
    """Raise :class:`FingerprintMismatch` unless ``found`` (stored with ``what``) matches ``expected``."""
    if not isinstance(found, dict) or "digest" not in found:
        raise FingerprintMismatch(
            f"{what} carries no dataset fingerprint, so it cannot be checked against "
            f"'{expected.get('name')}'. Rebuild it with this version of reuse.")
    if found["digest"] == expected["digest"] and digest(found) == found["digest"]:
        return
    diffs = [f"{k}: {_short(found.get(k))} here vs {_short(expected.get(k))} expected"
             for k in IDENTITY_FIELDS if found.get(k) != expected.get(k)]
    raise FingerprintMismatch(
        f"{what} was made for other data than '{expected.get('name')}' ({expected.get('split')} split): "
        + ("; ".join(diffs) or "its fingerprint digest does not match its fields (edited by hand?)")
        + ". Delete it and let the workflow rebuild it for this data, or point to the artifact made "
          "for this dataset.")


def _short(v: Any) -> str:
    s = str(v)
    return s[:12] + "…" if isinstance(v, str) and len(s) > 16 else s
