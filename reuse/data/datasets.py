"""Datasets whose every sample is ``(x, y, idx)``, with ``idx`` the example's stable id.

Prepared data live in ``results/<dataset>/data/``: ``data.npz`` (arrays, or file paths for
ImageFolder) and ``dataset.json`` (kind, classes, input shape, normalisation, and the fingerprint of
each split). With ``holdout: n`` a stratified, seeded choice of ``n`` training examples becomes a
``val`` split (for choices a method makes on held-out data); the training ids are then the
rows of the remaining examples. The example id of a sample is its row in ``data.npz``, so caches and score tables are
one array indexed by id.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from reuse.data.augment import STREAM_IMAGE, STREAM_ORDER, Augment, keyed_seed
from reuse.data.fingerprint import check_fingerprint, hash_array, hash_strings, make_fingerprint
from reuse.data.sources import read
from reuse.errors import CorruptArtifact, DataError
from reuse.io import read_json, save_npz, write_json
from reuse.safeload import read_npz

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled order of ``n`` examples for ``epoch`` of a run with ``seed``."""
    g = torch.Generator().manual_seed(keyed_seed(seed, epoch, STREAM_ORDER))
    return torch.randperm(n, generator=g)


def shard_slice(ids: torch.Tensor, shard: tuple[int, int] | None) -> torch.Tensor:
    """Process ``rank``'s part of one global batch's ids under data parallelism (``shard = (rank,
    world)``): ``world`` contiguous slices whose sizes differ by at most one; all of ``ids`` when
    ``shard`` is None."""
    if shard is None or shard[1] == 1:
        return ids
    return ids.tensor_split(shard[1])[shard[0]]


class TensorData(Dataset):
    """A split held in memory: raw inputs (uint8 images or float signals), labels and ids.

    Inputs are augmented raw (padding is black, as torchvision pads before ``ToTensor``) and then
    scaled and normalised per channel with the training split's statistics.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, *, num_classes: int, mean, std,
                 fingerprint: dict[str, Any]):
        self.x = torch.from_numpy(np.ascontiguousarray(x))
        self.y = torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))
        self.num_classes = num_classes
        self.fingerprint = fingerprint
        shape = (1, -1) + (1,) * (self.x.ndim - 2)
        self.scale = 1.0 / 255.0 if self.x.dtype == torch.uint8 else 1.0
        self.mean = torch.tensor(mean, dtype=torch.float32).view(shape)
        self.std = torch.tensor(std, dtype=torch.float32).view(shape)
        self.tokens = self.x.dtype in (torch.int32, torch.int64)  # token ids (kind text): passed as int64
        self.device: torch.device | None = None  # set by .to(): the split lives on this device

    def to(self, device: str | torch.device) -> "TensorData":
        """This split with its inputs, labels and normalisation on ``device`` (itself if they already
        are; otherwise a copy, and this one stays where it is). A split on a device serves batches
        there: ids, gathering, augmentation (:func:`keyed_bits_torch`, bit-identical to the host's
        draws) and normalisation all run on it, with no host round trip. ``.to("cpu")`` takes the
        same path on the CPU."""
        import copy

        device = torch.device(device)
        if self.device == device:
            return self
        new = copy.copy(self)
        new.x, new.y = self.x.to(device), self.y.to(device)
        new.mean, new.std = self.mean.to(device), self.std.to(device)
        new.device = device
        return new

    @property
    def nbytes(self) -> int:
        """Bytes held by the inputs and labels."""
        return self.x.element_size() * self.x.nelement() + self.y.element_size() * self.y.nelement()

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def __len__(self) -> int:
        return self.y.shape[0]

    def __getitem__(self, i: int) -> Batch:
        x, y, idx = self.get(torch.tensor([i]))
        return x[0], y[0], idx[0]

    def get(self, idx: torch.Tensor, augment: Augment | None = None, seed: int = 0, view: int = 0) -> Batch:
        """The examples with ids ``idx``, augmented as view ``view`` of ``seed`` when ``augment`` is set."""
        if self.device is not None:
            idx = idx.to(self.device)
        x = self.x[idx]
        if self.tokens:  # no augmentation and no normalisation of token ids; int64 for embedding lookups
            if augment is not None:
                raise DataError(f"augmentation ({augment.spec()}) of token ids is not defined: set the recipe's "
                                "augment to {translate: 0, flip: false} for text datasets")
            return x.long(), self.y[idx], idx
        if augment is not None:
            x = augment(x, idx, seed, view, on_device=self.device is not None)
        x = (x.float() * self.scale - self.mean) / self.std
        return x, self.y[idx], idx

    def batches(self, batch_size: int, *, shuffle: bool = False, seed: int = 0, epoch: int = 0,
                augment: Augment | None = None, aug_key: tuple[int, int] | None = None,
                drop_last: bool = False, indices: torch.Tensor | None = None,
                shard: tuple[int, int] | None = None) -> Iterator[Batch]:
        """Batches of ``(x, y, idx)`` over ``indices`` (all ids by default).

        The order is a function of ``(seed, epoch)``. Augmentation draws view ``aug_key = (seed,
        view)``, by default ``(seed, epoch)``; a student set to a teacher cache's key sees exactly the
        cached views. ``shard = (rank, world)`` (data parallelism): every process walks the same
        global batches and gets only its slice of each (:func:`shard_slice`), taken before the
        examples are loaded; empty slices are skipped.
        """
        ids = torch.arange(len(self)) if indices is None else torch.as_tensor(indices, dtype=torch.int64)
        if shuffle:
            ids = ids[epoch_order(len(ids), seed, epoch)]
        if self.device is not None:
            ids = ids.to(self.device)  # the order is drawn on the host; batches index on the device
        aug_seed, view = aug_key if aug_key is not None else (seed, epoch)
        stop = len(ids) - (len(ids) % batch_size if drop_last else 0)
        for start in range(0, stop, batch_size):
            part = shard_slice(ids[start:start + batch_size], shard)
            if len(part):
                yield self.get(part, augment, aug_seed, view)

    def num_batches(self, batch_size: int, drop_last: bool = False, n: int | None = None) -> int:
        n = len(self) if n is None else n
        return n // batch_size if drop_last else -(-n // batch_size)


class ImageFolderData(Dataset):
    """An ImageFolder split decoded on the fly; augmentation (random-resized crop + flip, the
    ImageNet recipe) is seeded per sample from ``(seed, view, idx)`` so it stays reproducible with any
    number of loader workers."""

    def __init__(self, root: str, paths: np.ndarray, y: np.ndarray, *, num_classes: int, mean, std,
                 fingerprint: dict[str, Any], image_size: int = 224, workers: int = 0):
        from torchvision.transforms import v2

        self.root = Path(root)
        self.paths = paths
        self.y = torch.from_numpy(np.asarray(y, dtype=np.int64))
        self.num_classes = num_classes
        self.fingerprint = fingerprint
        self.workers = workers
        self.image_size = image_size
        norm = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
        self.train_tf = v2.Compose([v2.RandomResizedCrop(image_size, antialias=True),
                                    v2.RandomHorizontalFlip()] + norm)
        self.eval_tf = v2.Compose([v2.Resize(int(image_size * 256 / 224), antialias=True),
                                   v2.CenterCrop(image_size)] + norm)
        self._key: tuple[int, int] | None = None  # (seed, view) while iterating augmented

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (3, self.image_size, self.image_size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Batch:
        from PIL import Image

        i = int(i)
        with Image.open(self.root / str(self.paths[i])) as im:
            img = im.convert("RGB")
        if self._key is None:
            x = self.eval_tf(img)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(keyed_seed(*self._key, STREAM_IMAGE, i))
                x = self.train_tf(img)
        return x, self.y[i], torch.tensor(i)

    def get(self, idx: torch.Tensor, augment: Augment | None = None, seed: int = 0, view: int = 0) -> Batch:
        self._key = (seed, view) if augment is not None else None
        try:
            xs, ys, ids = zip(*(self[int(i)] for i in idx))
        finally:
            self._key = None
        return torch.stack(xs), torch.stack(ys), torch.stack(ids)

    def batches(self, batch_size: int, *, shuffle: bool = False, seed: int = 0, epoch: int = 0,
                augment: Augment | None = None, aug_key: tuple[int, int] | None = None,
                drop_last: bool = False, indices: torch.Tensor | None = None,
                shard: tuple[int, int] | None = None) -> Iterator[Batch]:
        """As :meth:`TensorData.batches`; under ``shard`` only this process's slice of each global
        batch is decoded."""
        ids = torch.arange(len(self)) if indices is None else torch.as_tensor(indices, dtype=torch.int64)
        if shuffle:
            ids = ids[epoch_order(len(ids), seed, epoch)]
        self._key = (aug_key or (seed, epoch)) if augment is not None else None
        stop = len(ids) - (len(ids) % batch_size if drop_last else 0)
        parts = [shard_slice(ids[s:s + batch_size], shard).tolist() for s in range(0, stop, batch_size)]
        try:
            loader = DataLoader(self, batch_sampler=[p for p in parts if p], num_workers=self.workers,
                                persistent_workers=False)
            yield from loader
        finally:
            self._key = None

    num_batches = TensorData.num_batches


@dataclass
class DatasetPair:
    name: str
    meta: dict[str, Any]
    train: TensorData | ImageFolderData
    test: TensorData | ImageFolderData
    val: TensorData | ImageFolderData | None = None  # held-out training examples (dataset key `holdout`)

    @property
    def num_classes(self) -> int:
        return self.meta["num_classes"]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.input_shape)


def prepare(name: str, spec: dict, out_npz: str | Path, out_json: str | Path) -> dict[str, Any]:
    """Read dataset ``name`` as ``spec`` describes, write ``data.npz`` and ``dataset.json``."""
    raw = read(name, spec)
    is_files = raw.x_train.dtype.kind == "U"
    input_shape = [3, spec.get("image_size", 224), spec.get("image_size", 224)] if is_files \
        else list(raw.x_train.shape[1:])
    fps = {}
    splits = [("train", raw.x_train, raw.y_train), ("test", raw.x_test, raw.y_test)]
    if raw.y_val is not None:
        splits.append(("val", raw.x_val, raw.y_val))
    for split, x, y in splits:
        if len(y) == 0:
            raise DataError(f"dataset '{name}': the {split} split is empty")
        bad = (y < 0) | (y >= raw.num_classes)
        if bad.any():
            raise DataError(f"dataset '{name}': {int(bad.sum())} {split} labels lie outside 0..{raw.num_classes - 1}")
        fps[split] = make_fingerprint(name=name, kind=spec["kind"], split=split, labels=y,
                                      inputs_sha256=hash_strings(x) if is_files else hash_array(x),
                                      num_classes=raw.num_classes, input_shape=input_shape)
    meta = {"name": name, "kind": spec["kind"], "num_classes": raw.num_classes, "input_shape": input_shape,
            "mean": raw.mean, "std": raw.std, "n_train": int(len(raw.y_train)), "n_test": int(len(raw.y_test)),
            "n_val": 0 if raw.y_val is None else int(len(raw.y_val)), "fingerprint": fps, "spec": spec, **raw.extra}
    val = {} if raw.y_val is None else {"x_val": raw.x_val, "y_val": raw.y_val}
    save_npz(out_npz, x_train=raw.x_train, y_train=raw.y_train, x_test=raw.x_test, y_test=raw.y_test, **val)
    write_json(out_json, meta)
    return meta


def load(data_dir: str | Path, workers: int = 0) -> DatasetPair:
    """Load a prepared dataset from ``data_dir`` (holding ``data.npz`` and ``dataset.json``)."""
    data_dir = Path(data_dir)
    try:
        meta = read_json(data_dir / "dataset.json")
        arrays = read_npz(data_dir / "data.npz", what="prepared dataset",
                          rebuild="delete the folder and re-run snakemake to prepare it again")
    except FileNotFoundError as e:
        raise DataError(f"prepared dataset missing in {data_dir} ({e.filename}); run the workflow's "
                        "prepare_data rule (snakemake) first") from e
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise CorruptArtifact(f"prepared dataset in {data_dir} is unreadable ({e}); delete the folder and "
                              "re-run snakemake to prepare it again") from e
    splits = {}
    for split in ("train", "test", "val"):
        if split not in meta["fingerprint"]:
            continue  # no val split unless the dataset holds examples out (`holdout`)
        if f"x_{split}" not in arrays:
            raise CorruptArtifact(f"{data_dir / 'data.npz'} lacks the {split} split that dataset.json records; "
                                  "delete the folder and re-run snakemake to prepare it again")
        x, y, fp = arrays[f"x_{split}"], arrays[f"y_{split}"], meta["fingerprint"][split]
        check_fingerprint(make_fingerprint(name=meta["name"], kind=meta["kind"], split=split, labels=y,
                                           inputs_sha256=fp["inputs_sha256"] if x.dtype.kind == "U" else hash_array(x),
                                           num_classes=meta["num_classes"], input_shape=meta["input_shape"]),
                          fp, f"{data_dir / 'data.npz'} ({split} split)")
        common = dict(num_classes=meta["num_classes"], mean=meta["mean"], std=meta["std"], fingerprint=fp)
        if x.dtype.kind == "U":
            splits[split] = ImageFolderData(meta["spec"]["root"], x, y, image_size=meta["input_shape"][-1],
                                            workers=workers, **common)
        else:
            splits[split] = TensorData(x, y, **common)
    return DatasetPair(name=meta["name"], meta=meta, train=splits["train"], test=splits["test"],
                       val=splits.get("val"))
