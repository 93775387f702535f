"""Augmentation that is a pure function of (seed, view, example id).

Random draws come from a counter-based hash (SplitMix64) of ``(seed, view, idx, stream)``, not from a
stateful generator, so an example's augmented view does not depend on which batch it lands in, on
the batch order, or on the device. Training uses ``view = epoch``; a teacher's logit cache can hold
the outputs for views ``0..K-1`` of a given seed, and a student that trains on the same ``(seed,
view)`` sees exactly the inputs the teacher was evaluated on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

_M64 = (1 << 64) - 1


def splitmix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    z = np.asarray(z, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def keyed_bits(*keys, idx) -> np.ndarray:
    """64 random bits per example id, determined by the integer ``keys`` and the id alone."""
    h = np.uint64(0)
    for k in keys:
        h = splitmix64(np.uint64(h) ^ np.uint64(int(k) & _M64))
    ids = np.asarray(idx.cpu() if torch.is_tensor(idx) else idx, dtype=np.int64).astype(np.uint64)
    return splitmix64(splitmix64(ids) ^ h)


def _i64(c: int) -> int:
    """The int64 with the bit pattern of the uint64 ``c``."""
    return c - (1 << 64) if c >= 1 << 63 else c


_GOLDEN, _MIX1, _MIX2 = _i64(0x9E3779B97F4A7C15), _i64(0xBF58476D1CE4E5B9), _i64(0x94D049BB133111EB)


def _shr(z: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 ``z`` read as uint64 (torch's ``>>`` on int64 is arithmetic)."""
    return (z >> s) & ((1 << (64 - s)) - 1)


def splitmix64_torch(z: torch.Tensor) -> torch.Tensor:
    """:func:`splitmix64` on int64 tensors holding uint64 bit patterns, on their own device: int64
    ``+`` and ``*`` wrap in two's complement exactly as uint64 arithmetic does, and shifts are
    masked to be logical, so the bits equal the numpy version's."""
    z = z + _GOLDEN
    z = (z ^ _shr(z, 30)) * _MIX1
    z = (z ^ _shr(z, 27)) * _MIX2
    return z ^ _shr(z, 31)


def keyed_bits_torch(*keys, idx: torch.Tensor) -> torch.Tensor:
    """:func:`keyed_bits` computed on ``idx``'s device: int64 tensor with the same 64 bits per id.
    The key's hash is a scalar worked out on the host (no device round trip)."""
    h = np.uint64(0)
    for k in keys:
        h = splitmix64(np.uint64(h) ^ np.uint64(int(k) & _M64))
    return splitmix64_torch(splitmix64_torch(idx.to(torch.int64)) ^ _i64(int(h)))


def umod(z: torch.Tensor, m: int) -> torch.Tensor:
    """``z`` (int64 holding uint64 bits) modulo a small ``m`` as unsigned integers, non-negative."""
    hi, lo = _shr(z, 32), z & 0xFFFFFFFF
    return ((hi % m) * ((1 << 32) % m) + lo % m) % m


def keyed_seed(*keys) -> int:
    """One 63-bit seed from integer keys (for per-sample torch generators and batch orders)."""
    return int(keyed_bits(*keys, idx=np.zeros(1, np.int64))[0] >> np.uint64(1))


# Streams keep independent draws apart: the shift on each axis, the flip, the batch order, the
# image transforms, random data selection and batches drawn from a growing subset (methods' own draws).
STREAM_SHIFT, STREAM_FLIP, STREAM_ORDER, STREAM_IMAGE, STREAM_SELECT, STREAM_CURRICULUM = 1, 2, 3, 4, 5, 6


@dataclass(frozen=True)
class Augment:
    """Random translation (zero padded, as pad-and-crop) and horizontal flip, batched.

    ``translate``: maximum shift along each spatial axis, in pixels (images) or samples (signals); a
    shift is uniform in ``[-translate, translate]``, which equals torchvision's ``RandomCrop(size,
    padding=translate)``. ``flip``: mirror the last axis with probability 1/2.
    """

    translate: int = 0
    flip: bool = False

    @classmethod
    def from_spec(cls, spec: dict | None) -> "Augment | None":
        if not spec:
            return None
        aug = cls(translate=int(spec.get("translate", 0)), flip=bool(spec.get("flip", False)))
        return aug if (aug.translate or aug.flip) else None

    def spec(self) -> dict:
        return asdict(self)

    def __call__(self, x: torch.Tensor, idx: torch.Tensor, seed: int, view: int,
                 on_device: bool = False) -> torch.Tensor:
        """x: (B, C, L) or (B, C, H, W); idx: (B,) example ids. Returns the augmented batch.

        ``on_device``: draw the random bits with :func:`keyed_bits_torch` on ``x``'s device (data
        that lives on the training device) instead of with numpy on the host; the bits, and so the
        batch, are identical."""
        spatial = x.shape[2:]
        if len(spatial) not in (1, 2):
            raise ValueError(f"Augment expects (B, C, L) or (B, C, H, W) inputs, got {tuple(x.shape)}")
        b = torch.arange(x.shape[0], device=x.device)
        if self.translate:
            t = self.translate
            pad = [t] * (2 * len(spatial))
            xp = torch.nn.functional.pad(x, pad)
            grids = []
            for axis, size in enumerate(spatial):
                if on_device:
                    off = umod(keyed_bits_torch(seed, view, STREAM_SHIFT, axis, idx=idx.to(x.device)), 2 * t + 1)
                else:
                    r = keyed_bits(seed, view, STREAM_SHIFT, axis, idx=idx) % np.uint64(2 * t + 1)
                    off = torch.from_numpy(r.astype(np.int64)).to(x.device)
                grids.append(off[:, None] + torch.arange(size, device=x.device)[None, :])
            if len(spatial) == 1:
                x = xp[b[:, None], :, grids[0]].permute(0, 2, 1)
            else:
                x = xp[b[:, None, None], :, grids[0][:, :, None], grids[1][:, None, :]].permute(0, 3, 1, 2)
            x = x.contiguous()
        if self.flip:
            if on_device:
                mask = _shr(keyed_bits_torch(seed, view, STREAM_FLIP, idx=idx.to(x.device)), 63).bool()
            else:
                bit = keyed_bits(seed, view, STREAM_FLIP, idx=idx) >> np.uint64(63)
                mask = torch.from_numpy(bit.astype(bool)).to(x.device)
            x = torch.where(mask.view(-1, *([1] * (x.ndim - 1))), x.flip(-1), x)
        return x
