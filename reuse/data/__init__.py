"""Data: readers for every dataset kind, prepared splits of ``(x, y, idx)``, deterministic
augmentation and dataset fingerprints."""

from reuse.data.augment import Augment, keyed_bits, keyed_seed
from reuse.data.datasets import DatasetPair, ImageFolderData, TensorData, epoch_order, load, prepare
from reuse.data.fingerprint import check_fingerprint, make_fingerprint
from reuse.data.sources import READERS, check_root

__all__ = ["Augment", "DatasetPair", "ImageFolderData", "TensorData", "READERS", "check_fingerprint",
           "check_root", "epoch_order", "keyed_bits", "keyed_seed", "load", "make_fingerprint", "prepare"]
