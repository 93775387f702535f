"""Past runs are untrusted input: loading a hostile file runs no code (docs/security.md).

Every case builds a real hostile file, a pickle whose ``__reduce__`` calls ``os.system`` to create a
sentinel file, puts it where the project reads that artifact from (a checkpoint, a resume state, a
cache, a score file, a prepared dataset, a CIFAR batch, a table), hands it to the loader the stage
calls, and checks that the loader raises one error of the project's type naming the file and that
the sentinel was never created. ``test_the_payload_is_live`` shows the payload does run when
unpickled the unsafe way, so every "no sentinel" check can fail.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from reuse.errors import CorruptArtifact, DataError, ReuseError, UnsafeArtifact


class Boom:
    """Unpickling this runs ``touch <sentinel>``: the payload a hostile file carries."""

    def __init__(self, sentinel: Path):
        self.sentinel = sentinel

    def __reduce__(self):
        return os.system, (f"touch {self.sentinel}",)


def payload(sentinel: Path, protocol: int = 4) -> bytes:
    return pickle.dumps({"model": Boom(sentinel), "format": 1}, protocol=protocol)


def test_the_payload_is_live(tmp_path):
    sentinel = tmp_path / "ran"
    pickle.loads(payload(sentinel))  # the unsafe way: what every loader below must not do
    assert sentinel.exists()


# ----------------------------------------------------------------------------- the hostile files
def checkpoint_torch_save(d: Path, s: Path):
    """A torch.save checkpoint (zip format) whose pickle holds the payload, named like a past run's."""
    path = d / "ckpt" / "e3.pt"
    path.parent.mkdir()
    torch.save({"format": 1, "model": Boom(s), "model_spec": {}}, path)
    from reuse.train import load_checkpoint

    return path, lambda: load_checkpoint(path)


def checkpoint_legacy_pickle(d: Path, s: Path):
    """A bare pickle under a checkpoint's name (torch.load's legacy, non-zip format)."""
    path = d / "e1.pt"
    path.write_bytes(payload(s, protocol=2))
    from reuse.train import load_checkpoint

    return path, lambda: load_checkpoint(path, map_location="cpu")


def cached_teacher_checkpoint(d: Path, s: Path):
    """A torch.save of a module-like object: the teacher checkpoint a distillation stage reads."""
    path = d / "teacher" / "ckpt" / "e2.pt"
    path.parent.mkdir(parents=True)
    torch.save({"format": 1, "model": {"w": torch.zeros(2)}, "algorithms": {"x": Boom(s)}}, path)
    from reuse.train import load_checkpoint

    return path, lambda: load_checkpoint(path)


def prepared_data_object_array(d: Path, s: Path, tiny_data_dir: Path):
    """data.npz of a prepared dataset, whose x_train is an object array (a pickle inside the .npy)."""
    out = d / "data"
    out.mkdir()
    shutil.copy(tiny_data_dir / "dataset.json", out / "dataset.json")
    with np.load(tiny_data_dir / "data.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["x_train"] = np.array([Boom(s)] * 3, dtype=object)
    np.savez(out / "data.npz", **arrays)
    from reuse.data import load

    return out / "data.npz", lambda: load(out)


def prepared_data_pickle(d: Path, s: Path, tiny_data_dir: Path):
    """A bare pickle under the name data.npz."""
    out = d / "data"
    out.mkdir()
    shutil.copy(tiny_data_dir / "dataset.json", out / "dataset.json")
    (out / "data.npz").write_bytes(payload(s))
    from reuse.data import load

    return out / "data.npz", lambda: load(out)


def dataset_json_pickle(d: Path, s: Path, tiny_data_dir: Path):
    """dataset.json replaced by a pickle (protocol 0: printable text)."""
    out = d / "data"
    out.mkdir()
    shutil.copy(tiny_data_dir / "data.npz", out / "data.npz")
    (out / "dataset.json").write_bytes(payload(s, protocol=0))
    from reuse.data import load

    return out, lambda: load(out)


def logit_cache_npy(d: Path, s: Path):
    """A logit cache whose logits.npy is an np.save of an object array."""
    from reuse.cache import FORMAT, LogitCache

    out = d / "cache"
    out.mkdir()
    (out / "meta.json").write_text(json.dumps({"format": FORMAT, "n": 2, "num_views": 1, "num_classes": 3,
                                               "topk": 0, "dense": True, "views": [{"kind": "clean"}]}))
    np.save(out / "logits.npy", np.array([Boom(s)], dtype=object), allow_pickle=True)
    return out / "logits.npy", lambda: LogitCache.open(out)


def logit_cache_meta_pickle(d: Path, s: Path):
    """A logit cache whose meta.json is a pickle."""
    from reuse.cache import LogitCache

    out = d / "cache"
    out.mkdir()
    (out / "meta.json").write_bytes(payload(s))
    return out / "meta.json", lambda: LogitCache.open(out)


def adv_cache_npz(d: Path, s: Path):
    """An adversarial cache whose adv.npz holds an object array."""
    from reuse.methods.adversarial.cache import FORMAT, AdvCache

    out = d / "adv"
    out.mkdir()
    (out / "meta.json").write_text(json.dumps({"format": FORMAT, "n": 1, "input_shape": [1, 4]}))
    np.savez(out / "adv.npz", delta=np.array([Boom(s)], dtype=object), lo=np.zeros(1), hi=np.ones(1))
    return out / "adv.npz", lambda: AdvCache.open(out)


def run_scores_npz(d: Path, s: Path):
    """A past run's score file (scores/<run>.npz) holding an object array."""
    from reuse.scores import load_run_scores

    path = d / "s0.npz"
    np.savez(path, epochs=np.arange(2), el2n=np.array([Boom(s)], dtype=object))
    return path, lambda: load_run_scores(path)


def score_table_pickle(d: Path, s: Path):
    """A bare pickle under a score table's name (scores.parquet)."""
    from reuse.scores import ScoreTable

    path = d / "scores.parquet"
    path.write_bytes(payload(s))
    return path, lambda: ScoreTable.open(path)


def predictions_npz(d: Path, s: Path):
    """A run's predictions.npz (read by the bias study and the specialists) with an object array."""
    from reuse.safeload import read_npz

    path = d / "predictions.npz"
    np.savez(path, logits=np.array([Boom(s)], dtype=object), target=np.zeros(1, dtype=np.int64))
    return path, lambda: read_npz(path, ["logits", "target"], what="predictions")


def predictions_pickle(d: Path, s: Path):
    """A bare pickle under the name predictions.npz."""
    from reuse.safeload import read_npz

    path = d / "predictions.npz"
    path.write_bytes(payload(s))
    return path, lambda: read_npz(path, what="predictions")


def example_stats_sequences(d: Path, s: Path):
    """example_stats.npz of an earlier step, as a sequence's forgetting scores read it."""
    from reuse.methods.sequences.stage import forgetting_scores

    path = d / "example_stats.npz"
    np.savez(path, correct=np.array([Boom(s)], dtype=object))
    return path, lambda: forgetting_scores(np.arange(1), [str(path)])


def transfer_values_npz(d: Path, s: Path):
    """A transfer run's per-example values file with a pickled member."""
    from reuse.safeload import read_npz

    path = d / "values.npz"
    np.savez(path, y=np.array([Boom(s)], dtype=object))
    return path, lambda: read_npz(path, ["y"], what="transfer values")


def cifar_batch(d: Path, s: Path):
    """A CIFAR-10 data_batch_1 (the python-pickle format) whose dict holds the payload."""
    from reuse.data.sources import read
    from tests.data.test_sources import write_cifar

    write_cifar(d, "cifar10")
    path = d / "cifar-10-batches-py" / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": Boom(s), b"labels": [0]}, protocol=2))
    return path, lambda: read("c", {"kind": "cifar10", "root": str(d)})


def cifar_batch_eval(d: Path, s: Path):
    """A CIFAR-100 train file whose pickle calls builtins.eval (protocol 0, as Python 2 wrote)."""
    from reuse.data.sources import read
    from tests.data.test_sources import write_cifar

    class Eval:
        def __reduce__(self):
            return eval, (f"__import__('os').system('touch {s}')",)

    write_cifar(d, "cifar100")
    path = d / "cifar-100-python" / "train"
    path.write_bytes(pickle.dumps({b"data": Eval(), b"fine_labels": [0]}, protocol=0))
    return path, lambda: read("c", {"kind": "cifar100", "root": str(d)})


def cifar_batch_codec(d: Path, s: Path):
    """A CIFAR batch asking _codecs.encode for a codec other than latin-1 (the one global besides
    numpy's it may name)."""
    import _codecs

    from reuse.data.sources import read
    from tests.data.test_sources import write_cifar

    class Enc:
        def __reduce__(self):
            return _codecs.encode, ("x", "rot13")

    write_cifar(d, "cifar10")
    path = d / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(pickle.dumps({b"data": Enc(), b"labels": [0], b"x": Boom(s)}, protocol=2))
    return path, lambda: read("c", {"kind": "cifar10", "root": str(d)})


def tabular_parquet(d: Path, s: Path):
    """A pickle under a tabular dataset's .parquet name."""
    from reuse.data.tabular import Table

    path = d / "table.parquet"
    path.write_bytes(payload(s))
    return path, lambda: Table(path, "t")


def tabular_csv(d: Path, s: Path):
    """A pickle under a tabular dataset's .csv name."""
    from reuse.data.tabular import Table

    path = d / "table.csv"
    path.write_bytes(payload(s))
    return path, lambda: Table(path, "t")


def text_jsonl(d: Path, s: Path):
    """A pickle (protocol 0: ASCII) under a text dataset's JSON-lines name."""
    from reuse.data.text import read_table

    path = d / "train.jsonl"
    path.write_bytes(payload(s, protocol=0))
    return path, lambda: read_table(path, "text", "label", name="t")


NEEDS_DATA = {prepared_data_object_array, prepared_data_pickle, dataset_json_pickle}

# (builder, the error the loader raises): UnsafeArtifact where the loader recognises a pickle and
# refuses it; CorruptArtifact / DataError where the safe reader finds no format it knows.
CASES = [
    (checkpoint_torch_save, UnsafeArtifact),
    (checkpoint_legacy_pickle, UnsafeArtifact),
    (cached_teacher_checkpoint, UnsafeArtifact),
    (prepared_data_object_array, UnsafeArtifact),
    (prepared_data_pickle, UnsafeArtifact),
    (dataset_json_pickle, CorruptArtifact),
    (logit_cache_npy, CorruptArtifact),
    (logit_cache_meta_pickle, CorruptArtifact),
    (adv_cache_npz, CorruptArtifact),
    (run_scores_npz, CorruptArtifact),
    (score_table_pickle, CorruptArtifact),
    (predictions_npz, UnsafeArtifact),
    (predictions_pickle, UnsafeArtifact),
    (example_stats_sequences, UnsafeArtifact),
    (transfer_values_npz, UnsafeArtifact),
    (cifar_batch, UnsafeArtifact),
    (cifar_batch_eval, UnsafeArtifact),
    (cifar_batch_codec, UnsafeArtifact),
    (tabular_parquet, DataError),
    (tabular_csv, DataError),
    (text_jsonl, DataError),
]


@pytest.mark.parametrize("build,error", CASES, ids=[b.__name__ for b, _ in CASES])
def test_a_hostile_file_is_refused_and_runs_nothing(tmp_path, request, build, error):
    sentinel = tmp_path / "SENTINEL"
    d = tmp_path / "results"
    d.mkdir()
    extra = [request.getfixturevalue("tiny_data_dir")] if build in NEEDS_DATA else []
    path, load = build(d, sentinel, *extra)
    with pytest.raises(ReuseError) as caught:
        load()
    assert isinstance(caught.value, error), f"{type(caught.value).__name__}: {caught.value}"
    assert str(path) in str(caught.value)
    assert "re-run snakemake" in str(caught.value) or "re-download" in str(caught.value) or error is DataError
    assert "weights_only=False" not in str(caught.value)  # never advise the unsafe way
    assert not sentinel.exists(), f"loading {path.name} ran the payload"


def test_a_hostile_resume_state_is_refused_before_training(tiny_data, tmp_path):
    """The trainer reads last.pt on start; a hostile one stops the run with the fix, and runs nothing."""
    from tests.helpers import make_trainer, recipe

    sentinel = tmp_path / "SENTINEL"
    state = tmp_path / "state"
    state.mkdir()
    torch.save({"format": 1, "model": {}, "identity": "x", "rng_cpu": Boom(sentinel)}, state / "last.pt")
    with pytest.raises(UnsafeArtifact, match=r"last\.pt holds more than tensors.*posix\.system.*re-run snakemake"):
        make_trainer(tiny_data, state, recipe(epochs=1)).fit()
    assert not sentinel.exists()


def test_hostile_example_stats_stop_a_scoring_job(tiny_data, tmp_path):
    """score_run reads the past run's example_stats.npz (forgetting events) before its checkpoints."""
    from reuse.scores import score_run

    sentinel = tmp_path / "SENTINEL"
    run = tmp_path / "run"
    run.mkdir()
    np.savez(run / "example_stats.npz", correct=np.array([Boom(sentinel)], dtype=object))
    with pytest.raises(UnsafeArtifact, match="example_stats.npz holds pickled Python objects"):
        score_run(run, tiny_data, epochs=[1], names=["forgetting"], batch_size=8, device=torch.device("cpu"),
                  out_npz=tmp_path / "o.npz", out_json=tmp_path / "o.json")
    assert not sentinel.exists()


def test_the_report_lists_a_run_with_hostile_predictions_as_unreadable(tmp_path):
    """The report reads every run's predictions.npz; a hostile one marks that run unreadable."""
    from reuse.report.collect import collect

    sentinel = tmp_path / "SENTINEL"
    run = tmp_path / "results" / "d" / "mlp" / "baseline" / "s0"
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"dataset": "d", "model": "mlp", "method": "baseline", "seed": 0}))
    np.savez(run / "predictions.npz", logits=np.array([Boom(sentinel)], dtype=object), target=np.zeros(1))
    got = collect(tmp_path / "results")
    assert any(str(run / "run.json") in p and "allow_pickle=False" in p for p in got.problems), got.problems
    assert not sentinel.exists()


def test_a_parquet_pickled_extension_type_stays_inert(tmp_path):
    """Arrow's old pickle-based extension type (arrow.py_extension_type, CVE-2023-47248) is read as
    its plain storage: a score table carrying one in its schema loads, and the pickle never runs."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from reuse.scores import ScoreTable

    sentinel = tmp_path / "SENTINEL"
    field = pa.field("value", pa.float64(), metadata={b"ARROW:extension:name": b"arrow.py_extension_type",
                                                      b"ARROW:extension:metadata": pickle.dumps(Boom(sentinel))})
    table = pa.table({"idx": pa.array([0, 1]), "value": pa.array([0.5, 1.5])})
    table = table.cast(pa.schema([table.schema.field("idx"), field]))
    table = table.replace_schema_metadata({b"reuse": json.dumps({"n": 2, "fingerprint": None}).encode()})
    pq.write_table(table, tmp_path / "scores.parquet")
    opened = ScoreTable.open(tmp_path / "scores.parquet")
    assert opened.df["value"].tolist() == [0.5, 1.5]
    assert not sentinel.exists()


# ----------------------------------------------------------------------------- what still loads
def test_cifar_batches_written_under_numpy_1_still_load(tmp_path):
    """The published CIFAR files were pickled under Python 2 and numpy 1 (``numpy.core.multiarray``);
    the restricted reader maps those names to numpy 2's ``numpy._core``."""
    from reuse.data.sources import read
    from tests.data.test_sources import write_cifar

    expect = write_cifar(tmp_path, "cifar10")
    for name in expect:
        f = tmp_path / "cifar-10-batches-py" / name
        raw = f.read_bytes()
        assert b"numpy._core.multiarray" in raw
        f.write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    got = read("c", {"kind": "cifar10", "root": str(tmp_path)})
    np.testing.assert_array_equal(got.x_train[:4].reshape(4, -1), expect["data_batch_1"][0])


def test_cifar_batches_of_pickle_protocol_5_still_load(tmp_path):
    """numpy's protocol-5 form of an array (``_frombuffer``) is allowed too."""
    from reuse.data.sources import read

    base = tmp_path / "cifar-100-python"
    base.mkdir()
    data = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)
    for name in ("train", "test"):
        (base / name).write_bytes(pickle.dumps({b"data": data, b"fine_labels": [3, 4]}, protocol=5))
    got = read("c", {"kind": "cifar100", "root": str(tmp_path)})
    np.testing.assert_array_equal(got.x_test.reshape(2, -1), data)


def test_checkpoints_the_trainer_writes_name_no_unsafe_global(tiny_data, tmp_path):
    """A resumable checkpoint holds only what weights_only=True loads without an allow-list."""
    from tests.helpers import make_trainer, recipe

    make_trainer(tiny_data, tmp_path, recipe(epochs=2, checkpoint_epochs=[1], example_stats=True)).fit()
    for f in ("e1.pt", "last.pt"):
        assert torch.serialization.get_unsafe_globals_in_checkpoint(tmp_path / f) == []


def test_a_checkpoint_that_could_not_be_loaded_is_refused_at_save_time(tmp_path):
    from collections import defaultdict

    from reuse.train import save_checkpoint

    for bad, where in [({"algorithms": {"ema": {"step": np.zeros(2)}}}, r"\['algorithms'\]\['ema'\]\['step'\]"),
                       ({"metrics": [defaultdict(int)]}, r"\['metrics'\]\[0\]"),
                       ({"model": Boom(tmp_path / "x")}, r"\['model'\]")]:
        with pytest.raises(TypeError, match=where + ".*weights_only=True"):
            save_checkpoint(tmp_path / "c.pt", bad)
    assert not (tmp_path / "c.pt").exists()
    save_checkpoint(tmp_path / "c.pt", {"model": {}, "metrics": [{"acc": np.float64(0.5)}]})  # numpy scalars: numbers
    from reuse.train import load_checkpoint

    assert load_checkpoint(tmp_path / "c.pt")["metrics"] == [{"acc": 0.5}]


# ----------------------------------------------------------------------------- the fork server's socket
def test_the_zygote_socket_folder_must_be_private(tmp_path, monkeypatch):
    from reuse import zygote

    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    monkeypatch.setenv("REUSE_ZYGOTE_DIR", str(shared))
    with pytest.raises(zygote.NotStarted, match="not a private folder"):
        zygote.socket_dir()
    private = tmp_path / "private"
    monkeypatch.setenv("REUSE_ZYGOTE_DIR", str(private))
    assert zygote.socket_dir() == private and stat.S_IMODE(private.stat().st_mode) == 0o700


def test_the_zygote_socket_is_the_users_alone(tmp_path):
    from reuse import zygote

    old = os.umask(0)  # even under a permissive umask
    try:
        listener = zygote._listen(tmp_path / "s.sock")
    finally:
        os.umask(old)
    try:
        assert stat.S_IMODE((tmp_path / "s.sock").stat().st_mode) == 0o600
    finally:
        listener.close()


# ----------------------------------------------------------------------------- the source itself
def _calls(source: str, name: str) -> list[str]:
    """The text of every call ``name(...)`` in ``source`` (balanced parentheses, over lines)."""
    out, i = [], source.find(name + "(")
    while i >= 0:
        depth, j = 0, i + len(name)
        while j < len(source):
            depth += {"(": 1, ")": -1}.get(source[j], 0)
            j += 1
            if depth == 0:
                break
        out.append(source[i:j])
        i = source.find(name + "(", j)
    return out


def test_no_loader_in_the_package_may_unpickle():
    """Every np.load passes allow_pickle=False, no torch.load passes weights_only=False (or leaves it
    to the default), and pickle is loaded only where docs/security.md records the trust decision."""
    from tests.conftest import ROOT

    files = [p for d in ("reuse", "rules", "tools") for p in (ROOT / d).rglob("*") if p.suffix in (".py", ".smk")]
    files.append(ROOT / "Snakefile")
    bad = []
    for f in files:
        src = f.read_text()
        rel = f.relative_to(ROOT)
        bad += [f"{rel}: {c}" for c in _calls(src, "np.load") if "allow_pickle=False" not in c]
        bad += [f"{rel}: {c}" for c in _calls(src, "torch.load") if "weights_only=True" not in c]
        bad += [f"{rel}: {c}" for name in ("pickle.load", "pickle.loads", "pd.read_pickle", "yaml.load",
                                           "yaml.unsafe_load", "yaml.full_load", "marshal.loads", "dill.load")
                for c in _calls(src, name) if str(rel) != "reuse/zygote.py"]
        bad += [f"{rel}: {c}" for c in ("weights_only=False", "allow_pickle=True") if c in src]
    assert not bad, "unsafe loads (see docs/security.md):\n" + "\n".join(bad)
