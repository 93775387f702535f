"""Readers for every dataset kind, each returning the raw train and test splits.

A reader returns a :class:`RawData`: uint8 images (N, C, H, W) or float signals (N, C, L) held in
memory, or, for ImageFolder data, file paths relative to the root. Nothing is downloaded unless the
dataset's config says ``download: true``; a missing dataset raises :class:`DataError` naming the path
that was looked at and the fix. :class:`RawData` and the readers by kind (:data:`READERS`) are in
:mod:`reuse.data.raw`; the ``text`` reader is in :mod:`reuse.data.text`, the ``tabular`` one in
:mod:`reuse.data.tabular`.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from reuse.data import clusters  # noqa: F401  (registers the "clusters" reader: generated Gaussian clusters)
from reuse.data import tabular  # registers the "tabular" reader: CSV / Parquet tables
from reuse.data import text  # noqa: F401  (registers the "text" reader: CSV / JSON lines, tokenised)
from reuse.data.raw import READERS, RawData, register_reader
from reuse.errors import DataError, UnsafeArtifact


def read(name: str, spec: dict) -> RawData:
    kind = spec["kind"]
    if kind not in READERS:
        raise DataError(f"dataset '{name}': unknown kind '{kind}'; choose one of {sorted(READERS)}")
    raw = READERS[kind](name, spec)
    if spec.get("holdout", 0):
        raw = hold_out(raw, spec["holdout"], name)
    if raw.mean is None and raw.x_train.dtype != object and raw.x_train.dtype.kind != "U":
        raw.mean, raw.std = channel_stats(raw.x_train)
    return raw


HOLDOUT_SEED = 0  # the held-out examples are a fixed, seeded choice: every run sees the same split


def holdout_ids(labels: np.ndarray, n: int, seed: int = HOLDOUT_SEED) -> np.ndarray:
    """The ids (sorted) of ``n`` training examples held out, stratified by class: each class gives
    its share of ``n`` (largest remainders get the rounding), chosen at random with ``seed``."""
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    share = counts * n / len(labels)
    take = np.floor(share).astype(int)
    rest = n - take.sum()
    take[np.argsort(-(share - take), kind="stable")[:rest]] += 1
    rng = np.random.default_rng(seed)
    ids = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take)]
    return np.sort(np.concatenate(ids))


def hold_out(raw: RawData, n: int, name: str) -> RawData:
    """Move ``n`` training examples (stratified, seeded: :func:`holdout_ids`) into a ``val`` split;
    the remaining training examples keep their order (their ids are their new rows)."""
    n_train = len(raw.y_train)
    if not 0 < n < n_train:
        raise DataError(f"dataset '{name}': holdout {n} must lie between 1 and {n_train - 1}, the training "
                        f"split has {n_train} examples; lower datasets.{name}.holdout")
    val = holdout_ids(raw.y_train, n)
    keep = np.setdiff1d(np.arange(n_train), val)
    raw.x_val, raw.y_val = raw.x_train[val], raw.y_train[val]
    raw.x_train, raw.y_train = raw.x_train[keep], raw.y_train[keep]
    raw.extra = {**raw.extra, "holdout": {"n": int(n), "seed": HOLDOUT_SEED, "stratified": True,
                                          "source_ids": val.tolist()}}
    return raw


def channel_stats(x: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of (N, C, ...) data, with uint8 scaled to [0, 1]."""
    scale = 255.0 if x.dtype == np.uint8 else 1.0
    mean, std = [], []
    for c in range(x.shape[1]):
        ch = x[:, c].astype(np.float64) / scale
        mean.append(float(ch.mean()))
        std.append(float(ch.std()))
    return mean, std


def check_root(name: str, spec: dict) -> None:
    """Fail fast (before any job runs) when a dataset that must be on disk is not there."""
    kind = spec["kind"]
    if kind in ("mnist1d", "clusters") or spec.get("download"):  # generated, nothing on disk
        return
    root = Path(spec["root"]).expanduser()
    if kind == "text":
        for key in ("train_file", "test_file"):
            if not (root / spec[key]).exists():
                raise DataError(f"dataset '{name}' (text): {key} {root / spec[key]} does not exist (root is "
                                f"'{spec['root']}'). Point `datasets.{name}.root` at the folder that holds it, "
                                f"or fix `datasets.{name}.{key}`.")
        return
    if kind == "tabular":
        for key, path in tabular.tabular_files(spec).items():
            if not path.exists():
                raise DataError(f"dataset '{name}' (tabular): {key} {path} does not exist (root is "
                                f"'{spec['root']}'). Point `datasets.{name}.root` at the folder that holds it, "
                                f"or fix `datasets.{name}.{key}`.")
        return
    expect = {
        "mnist": root / "MNIST" / "raw",
        "fashion_mnist": root / "FashionMNIST" / "raw",
        "cifar10": root / "cifar-10-batches-py" / "data_batch_1",
        "cifar100": root / "cifar-100-python" / "train",
        "imagefolder": root / spec.get("train_dir", "train"),
    }[kind]
    if not expect.exists():
        hint = ("set `download: true` for it to be fetched, or " if kind != "imagefolder" else "")
        raise DataError(
            f"dataset '{name}' ({kind}): {expect} does not exist (root is '{spec['root']}'). "
            f"Point `datasets.{name}.root` at the folder that holds it, or {hint}"
            "choose another dataset.")


@register_reader("mnist1d")
def read_mnist1d(name: str, spec: dict) -> RawData:
    """MNIST-1D (Greydanus 2020), generated offline with the package's ``make_dataset``; with
    ``mnist1d.classes``, of those classes instead of the ten digits (:func:`mnist1d_classes`)."""
    from mnist1d.data import get_dataset_args, make_dataset
    from mnist1d.utils import ObjectView

    args = get_dataset_args(as_dict=True)
    args.update(spec.get("mnist1d", {}))
    args.pop("url", None)  # never download: the generator is deterministic given its seed
    classes = args.pop("classes", None)
    as_signal = lambda a: np.asarray(a, dtype=np.float32)[:, None, :]  # (N, 1, L)
    if classes is not None:
        x, y, x_test, y_test = mnist1d_classes(classes, args)
        return RawData(num_classes=len(classes), x_train=as_signal(x), y_train=y, x_test=as_signal(x_test),
                       y_test=y_test, extra={"mnist1d_args": args, "mnist1d_classes": classes,
                                             "classes": [class_name(c) for c in classes]})
    state = np.random.get_state()
    try:
        d = make_dataset(ObjectView(args))
    finally:
        np.random.set_state(state)
    return RawData(num_classes=10, x_train=as_signal(d["x"]), y_train=np.asarray(d["y"], np.int64),
                   x_test=as_signal(d["x_test"]), y_test=np.asarray(d["y_test"], np.int64),
                   extra={"mnist1d_args": args})


#: how an MNIST-1D class definition may change its digits' templates before they are generated
MNIST1D_TRANSFORMS = ("identity", "reverse", "negate")


def class_name(c: dict) -> str:
    """A class definition's name: its digits joined by ``+`` and its transform (``3``, ``3+8``,
    ``7 reverse``)."""
    t = c.get("transform", "identity")
    return "+".join(map(str, c["digits"])) + ("" if t == "identity" else f" {t}")


def mnist1d_classes(classes: list[dict], args: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MNIST-1D of the classes ``classes`` (each ``{digits: [...], transform: ...}``): every digit of a
    class is one template (the package's, reversed in time or negated by ``transform``), generated
    by ``make_dataset`` with one template per label, then relabelled by class. Each class keeps
    ``num_samples // len(classes)`` examples: a class of k digits keeps every k-th of each digit's
    (in the generator's shuffled order, so in both splits alike), so classes differ in what they hold,
    not in size. Returns ``x, y, x_test, y_test``; the train/test split is the generator's."""
    from mnist1d.data import get_templates, make_dataset
    from mnist1d.utils import ObjectView

    base = get_templates()
    xs, owner = [], []
    for c, spec in enumerate(classes):
        t = spec.get("transform", "identity")
        if t not in MNIST1D_TRANSFORMS:
            raise DataError(f"mnist1d class {c}: unknown transform '{t}' (one of {', '.join(MNIST1D_TRANSFORMS)})")
        for d in spec["digits"]:
            x = base["x"][d]
            xs.append(x[::-1] if t == "reverse" else -x if t == "negate" else x)
            owner.append(c)
    owner_a = np.asarray(owner, dtype=np.int64)  # the class of each template, in class order
    per_class = args["num_samples"] // len(classes)
    if per_class < 1:
        raise DataError(f"mnist1d: num_samples {args['num_samples']} gives none of the {len(classes)} classes an "
                        "example; raise num_samples")
    templates = {"x": np.stack(xs), "t": base["t"], "y": np.arange(len(xs))}
    state = np.random.get_state()
    try:  # each template gets per_class examples; a class of k digits keeps per_class / k of each
        d = make_dataset(ObjectView({**args, "num_samples": per_class * len(xs)}), template=templates)
    finally:
        np.random.set_state(state)
    tid = np.concatenate([np.asarray(d["y"]), np.asarray(d["y_test"])]).astype(np.int64)
    x_all = np.concatenate([d["x"], d["x_test"]])
    n_digits = np.bincount(owner_a, minlength=len(classes))
    first = np.searchsorted(owner_a, np.arange(len(classes)))  # each class's first template
    keep = np.zeros(len(tid), dtype=bool)
    for t, c in enumerate(owner_a):  # digit j of a class of k keeps its examples j, j + k, j + 2k, ...
        where = np.flatnonzero(tid == t)
        keep[where[np.arange(len(where)) % n_digits[c] == t - first[c]]] = True
    n_train = len(d["y"])
    train, test = keep[:n_train], keep[n_train:]
    y_all = owner_a[tid]
    return x_all[:n_train][train], y_all[:n_train][train], x_all[n_train:][test], y_all[n_train:][test]


def _torchvision_mnist(cls_name: str, name: str, spec: dict) -> RawData:
    import torchvision.datasets as tvd

    cls = getattr(tvd, cls_name)
    check_root(name, spec)
    try:
        train = cls(spec["root"], train=True, download=bool(spec.get("download")))
        test = cls(spec["root"], train=False, download=bool(spec.get("download")))
    except RuntimeError as e:
        raise DataError(f"dataset '{name}' ({spec['kind']}): could not read {spec['root']}: {e}") from e
    num_classes = len(train.classes)
    x = lambda d: d.data.numpy()[:, None, :, :].copy()
    return RawData(num_classes=num_classes, x_train=x(train), y_train=train.targets.numpy().astype(np.int64),
                   x_test=x(test), y_test=test.targets.numpy().astype(np.int64))


register_reader("mnist")(lambda name, spec: _torchvision_mnist("MNIST", name, spec))
register_reader("fashion_mnist")(lambda name, spec: _torchvision_mnist("FashionMNIST", name, spec))


def _numpy_global(module: str, name: str):
    """``module.name`` from numpy 2's ``numpy._core`` or numpy 1's ``numpy.core``, whichever spelling
    the file used (files written under numpy 1 name ``numpy.core``, numpy 2 ``numpy._core``)."""
    import importlib

    for m in (module.replace("numpy.core.", "numpy._core."), module.replace("numpy._core.", "numpy.core.")):
        try:
            return getattr(importlib.import_module(m), name)
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError(f"numpy has no {module}.{name}")


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as pickle protocol 2 uses it under Python 3 (bytes written as latin-1 text),
    restricted to latin-1: the name of any other codec is refused rather than looked up."""
    if encoding not in ("latin1", "latin-1"):
        raise RefusedGlobal("_codecs", f"encode with codec {encoding!r}")
    if type(text) is not str:
        raise pickle.UnpicklingError(f"_codecs.encode of a {type(text).__name__}, not of text")
    return text.encode("latin1")


class CifarUnpickler(pickle.Unpickler):
    """The only unpickler that reads a CIFAR batch file: a CIFAR batch (the torchvision / Krizhevsky
    ``cifar-10-batches-py`` and ``cifar-100-python`` format) is a pickle of a dict of bytes, lists,
    ints and one uint8 numpy array, so the globals it may name are numpy's array rebuilders
    (``_reconstruct``, ``ndarray``, ``dtype``, ``_frombuffer``, under ``numpy.core`` or numpy 2's
    ``numpy._core``) and ``_codecs.encode`` (latin-1 only). Any other global (``os.system``,
    ``builtins.eval``, a class) is refused before it is looked up, so reading a hostile file runs
    nothing: :class:`UnsafeArtifact`. See docs/security.md."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise RefusedGlobal(module, name)
        if module == "_codecs":
            return _latin1_encode
        if module == "numpy":
            return getattr(np, name)
        return _numpy_global(module, name)


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle named a global that :class:`CifarUnpickler` does not allow."""

    def __init__(self, module: str, name: str):
        super().__init__(f"{module}.{name}")
        self.qualname = f"{module}.{name}"


def _read_cifar_batches(files: list[Path], label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Read python-pickle CIFAR batch files (the format of cifar-10-batches-py / cifar-100-python)
    with :class:`CifarUnpickler`, which builds numpy arrays and plain data and calls nothing else.

    torchvision's CIFAR classes also verify each file's MD5; this reader checks the format instead, so
    it works on any file written in that format.
    """
    xs, ys = [], []
    for f in files:
        try:
            with open(f, "rb") as fh:
                d = CifarUnpickler(fh, encoding="bytes").load()
            data = np.asarray(d[b"data"], dtype=np.uint8)
            labels = np.asarray(d[label_key], dtype=np.int64)
        except RefusedGlobal as e:
            raise UnsafeArtifact(
                f"{f} is not a CIFAR batch file: its pickle names {e.qualname}, which a CIFAR batch never "
                "holds, so it was not loaded (loading it could run code). Delete the dataset folder and "
                "re-download it (download: true), or fix the dataset root") from None
        except (OSError, pickle.UnpicklingError, KeyError, EOFError, ValueError, TypeError, IndexError) as e:
            raise DataError(f"{f} is not a readable CIFAR batch file ({type(e).__name__}: {e}); "
                            "re-download it or fix the dataset root") from e
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
            raise DataError(f"{f}: expected data of shape (N, 3072) with N labels, got {data.shape} "
                            f"and {len(labels)} labels")
        xs.append(data.reshape(-1, 3, 32, 32))
        ys.append(labels)
    return np.concatenate(xs), np.concatenate(ys)


def _read_cifar(kind: str, name: str, spec: dict) -> RawData:
    root = Path(spec["root"]).expanduser()
    if spec.get("download"):
        import torchvision.datasets as tvd

        cls = tvd.CIFAR10 if kind == "cifar10" else tvd.CIFAR100
        cls(str(root), train=True, download=True)
        cls(str(root), train=False, download=True)
    check_root(name, spec)
    if kind == "cifar10":
        base, train_files, test_files, key, c = "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], \
            ["test_batch"], b"labels", 10
    else:
        base, train_files, test_files, key, c = "cifar-100-python", ["train"], ["test"], b"fine_labels", 100
    missing = [f for f in train_files + test_files if not (root / base / f).exists()]
    if missing:
        raise DataError(f"dataset '{name}' ({kind}): {root / base} lacks {', '.join(missing)}; "
                        "re-download it (download: true) or fix the root")
    x_train, y_train = _read_cifar_batches([root / base / f for f in train_files], key)
    x_test, y_test = _read_cifar_batches([root / base / f for f in test_files], key)
    return RawData(num_classes=c, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


register_reader("cifar10")(lambda name, spec: _read_cifar("cifar10", name, spec))
register_reader("cifar100")(lambda name, spec: _read_cifar("cifar100", name, spec))

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


@register_reader("imagefolder")
def read_imagefolder(name: str, spec: dict) -> RawData:
    """An ImageNet-layout tree: ``root/<train_dir>/<class>/<image>`` and ``root/<test_dir>/<class>/...``.

    Only the file index is read here; images are decoded while training.
    """
    from torchvision.datasets import ImageFolder

    check_root(name, spec)
    root = Path(spec["root"]).expanduser()
    train = ImageFolder(str(root / spec.get("train_dir", "train")))
    test_root = root / spec.get("test_dir", "val")
    if not test_root.exists():
        raise DataError(f"dataset '{name}' (imagefolder): test folder {test_root} does not exist; "
                        "set `test_dir` to the held-out split's folder")
    test = ImageFolder(str(test_root))
    if test.classes != train.classes:
        extra = sorted(set(test.classes) ^ set(train.classes))[:5]
        raise DataError(f"dataset '{name}': the class folders of {test_root} and the training folder "
                        f"differ (e.g. {extra}); both splits need the same class folders")
    rel = lambda samples: np.asarray([str(Path(p).relative_to(root)) for p, _ in samples])
    labels = lambda samples: np.asarray([c for _, c in samples], dtype=np.int64)
    return RawData(num_classes=len(train.classes), x_train=rel(train.samples), y_train=labels(train.samples),
                   x_test=rel(test.samples), y_test=labels(test.samples), mean=IMAGENET_MEAN,
                   std=IMAGENET_STD, extra={"classes": train.classes})
