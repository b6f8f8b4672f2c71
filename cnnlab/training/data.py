"""Fashion-MNIST as tensors: the real idx files (found and read by `cnnlab.training.files`) or
the bundled sample, verified, and training batches built directly on the training device."""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cnnlab.training import files
from cnnlab.training.files import (
    DATA_ENV,
    DEBIAN_PACKAGE,
    FULL_SIZES,
    IDX_FILES,
    IMAGE_SIZE,
    NUM_CLASSES,
    SAMPLE_SIZES,
    DataCorrupt,
    DataNotFound,
    Source,
    find_fashion_mnist,
    resolve_data_dir,
    stamp,
)

# The label of a padding image: cross-entropy's default ignore_index, and never a prediction.
PADDING = -100


@dataclasses.dataclass(frozen=True, eq=False)
class FashionMNIST:
    """Decoded Fashion-MNIST: uint8 images (N, 28, 28) and int64 labels, plus where they came from.

    The tensors are shared through the per-process cache: do not modify them in place.
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    source: Source
    path: Path
    subset_of: int | None = None  # original train size when .subset() was applied

    @property
    def is_sample(self) -> bool:
        return self.source is Source.SAMPLE

    def describe(self) -> str:
        train = f"{len(self.train_labels):,} train"
        if self.subset_of is not None:
            train += f" (class-balanced subset of {self.subset_of:,})"
        sizes = f"{train} / {len(self.test_labels):,} test"
        if self.is_sample:
            return (f"Fashion-MNIST: the bundled SAMPLE {self.path} (real images, class-balanced): "
                    f"{sizes} — accuracies are not comparable to the textbook's")
        where = {
            Source.DATA_DIR: f"data dir, ${DATA_ENV} or data_dir=",
            Source.DEBIAN: f"Debian package {DEBIAN_PACKAGE}",
            Source.DOWNLOAD: "downloaded by torchvision",
        }[self.source]
        return f"Fashion-MNIST from {self.path} ({where}): {sizes}"

    def subset(self, n: int, seed: int = 0) -> FashionMNIST:
        """A copy whose training set is a class-balanced subset of n // 10 images per class."""
        idx = balanced_indices(self.train_labels, n, seed)
        return dataclasses.replace(
            self, train_images=self.train_images[idx], train_labels=self.train_labels[idx],
            subset_of=self.subset_of or len(self.train_labels))


# ---------------------------------------------------------------- decoding

def read_idx(path: Path) -> torch.Tensor:
    """An idx file of unsigned bytes (plain or .gz) as a uint8 tensor of its declared shape.
    Raises DataCorrupt."""
    idx = files.read_idx(path)
    return torch.frombuffer(idx.values, dtype=torch.uint8).view(*idx.shape)


def verify(train_images: torch.Tensor, train_labels: torch.Tensor,
           test_images: torch.Tensor, test_labels: torch.Tensor,
           *, sizes: tuple[int, int], names: dict[str, str]) -> None:
    """Check counts, 28x28 uint8 images, labels 0..9 and exactly balanced classes; names the bad file."""
    splits = (("train", train_images, train_labels, sizes[0]), ("test", test_images, test_labels, sizes[1]))
    for split, images, labels, n in splits:
        image_name, label_name = names[f"{split}_images"], names[f"{split}_labels"]
        if images.dtype != torch.uint8 or tuple(images.shape) != (n, IMAGE_SIZE, IMAGE_SIZE):
            raise DataCorrupt(f"{image_name}: {images.dtype} {tuple(images.shape)}, "
                              f"expected torch.uint8 ({n}, {IMAGE_SIZE}, {IMAGE_SIZE})")
        if tuple(labels.shape) != (n,):
            raise DataCorrupt(f"{label_name}: shape {tuple(labels.shape)}, expected ({n},)")
        if int(labels.min()) < 0 or int(labels.max()) >= NUM_CLASSES:
            raise DataCorrupt(f"{label_name}: labels outside 0..{NUM_CLASSES - 1}")
        counts = torch.bincount(labels, minlength=NUM_CLASSES).tolist()
        if counts != [n // NUM_CLASSES] * NUM_CLASSES:
            # Also catches plain MNIST saved under the Fashion-MNIST names: its classes are unequal.
            raise DataCorrupt(f"{label_name}: classes not balanced ({n // NUM_CLASSES} each expected), "
                              f"got {counts}")


@functools.lru_cache(maxsize=4)
def _decode_full(stamps: tuple[tuple[str, int, int], ...]) -> tuple[torch.Tensor, ...]:
    paths = [Path(s[0]) for s in stamps]
    tr_x, tr_y, te_x, te_y = (read_idx(p) for p in paths)
    tr_y, te_y = tr_y.long(), te_y.long()
    verify(tr_x, tr_y, te_x, te_y, sizes=FULL_SIZES, names=dict(zip(IDX_FILES, map(str, paths))))
    return tr_x, tr_y, te_x, te_y


@functools.lru_cache(maxsize=2)
def _decode_sample(stamp: tuple[str, int, int]) -> tuple[torch.Tensor, ...]:
    path = stamp[0]
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = [torch.from_numpy(npz[key].copy()) for key in IDX_FILES]
    except (OSError, ValueError, KeyError, EOFError, zlib.error, zipfile.BadZipFile) as e:
        raise DataCorrupt(f"{path}: cannot read the sample ({e}); run bench/make_sample.py") from e
    tr_x, tr_y, te_x, te_y = arrays
    tr_y, te_y = tr_y.long(), te_y.long()
    verify(tr_x, tr_y, te_x, te_y, sizes=SAMPLE_SIZES, names={k: f"{path}[{k}]" for k in IDX_FILES})
    return tr_x, tr_y, te_x, te_y


# ---------------------------------------------------------------- loading

def _download(root: Path) -> dict[str, Path]:
    # Imported here: torchvision.datasets is only needed for this rare path.
    from torchvision.datasets import FashionMNIST as TorchvisionFashionMNIST

    # Fetches all four files (md5-checked, with a progress bar) into root/FashionMNIST/raw/.
    TorchvisionFashionMNIST(str(root), train=True, download=True)
    found = files.files_in(root / "FashionMNIST" / "raw")
    if found is None:
        raise RuntimeError(f"torchvision reported success but left no files in {root / 'FashionMNIST' / 'raw'}")
    return found


def _not_found_message(root: Path, allow_download: bool, download_error: Exception | None) -> str:
    if download_error is not None:
        download = f"failed: {download_error}"
    elif allow_download:
        download = "not reached"
    else:
        download = "not attempted (pass allow_download=True)"
    names = ", ".join(f"{name}[.gz]" for name in IDX_FILES.values())
    return (
        "Fashion-MNIST not found. Looked in:\n"
        f"  1. the data dir {root} and {root / 'FashionMNIST' / 'raw'} "
        f"(set ${DATA_ENV} or data_dir= to change it)\n"
        f"  2. {files.DEBIAN_DIR} (Debian/Ubuntu package {DEBIAN_PACKAGE})\n"
        f"  3. download with torchvision into {root}: {download}\n"
        f"Fix: `sudo apt install {DEBIAN_PACKAGE}`, or put {names} in ${DATA_ENV}, "
        "or allow_download=True; allow_sample=True falls back to the bundled 3,000/1,000 sample "
        "(accuracies not comparable to the textbook's)."
    )


def load_fashion_mnist(data_dir: str | os.PathLike[str] | None = None, *, allow_download: bool = False,
                       allow_sample: bool = False, source: str | None = None) -> FashionMNIST:
    """Load verified Fashion-MNIST: data dir, Debian package, download, then the sample, as allowed.

    source="full" never falls back to the sample; source="sample" loads only the sample.
    """
    if source not in (None, "full", "sample"):
        raise ValueError(f"source must be None, 'full' or 'sample', not {source!r}")
    if source == "sample":
        return _load_sample()
    root = resolve_data_dir(data_dir)
    found = find_fashion_mnist(root)
    download_error: Exception | None = None
    if found is None and allow_download:
        try:
            found = Source.DOWNLOAD, _download(root)
        except (OSError, RuntimeError) as e:  # torchvision raises RuntimeError once every mirror failed
            download_error = e
    if found is not None:
        kind, paths = found
        arrays = _decode_full(tuple(stamp(paths[key]) for key in IDX_FILES))
        return FashionMNIST(*arrays, source=kind, path=paths["train_images"].parent)
    if allow_sample and source is None:
        return _load_sample()
    raise DataNotFound(_not_found_message(root, allow_download, download_error))


def _load_sample() -> FashionMNIST:
    sample = files.SAMPLE_PATH
    if not sample.is_file():
        raise DataNotFound(f"the bundled sample {sample} is missing; run bench/make_sample.py")
    arrays = _decode_sample(stamp(sample))
    return FashionMNIST(*arrays, source=Source.SAMPLE, path=sample)


def balanced_indices(labels: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """Sorted indices of n // 10 examples per class, chosen at random but deterministically from seed."""
    per_class = n // NUM_CLASSES
    if per_class < 1:
        raise ValueError(f"n={n} is too small: need at least {NUM_CLASSES} for one image per class")
    generator = torch.Generator().manual_seed(seed)
    labels = labels.cpu()
    picks = []
    for c in range(NUM_CLASSES):
        members = (labels == c).nonzero().squeeze(1)
        if len(members) < per_class:
            raise ValueError(f"class {c} has {len(members)} examples, fewer than the {per_class} asked for")
        picks.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
    return torch.cat(picks).sort().values


# ---------------------------------------------------------------- batches on the device

def to_input(images: torch.Tensor, *, input_size: int = IMAGE_SIZE, flip: torch.Tensor | None = None,
             dtype: torch.dtype = torch.float32, channels_last: bool = False) -> torch.Tensor:
    """uint8 (B, H, W) -> model input (B, 1, S, S) in [0, 1]; flip is an optional per-sample bool mask."""
    if flip is not None:
        # Mirror left-right where the mask is set; all in one op, no per-image loop.
        images = torch.where(flip[:, None, None], images.flip(-1), images)
    x = images.float().div_(255).unsqueeze(1)
    if x.shape[-2:] != (input_size, input_size):
        x = F.interpolate(x, size=(input_size, input_size), mode="bilinear", antialias=False, align_corners=False)
    x = x.to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _random_on(device: torch.device, generator: torch.Generator | None) -> torch.device:
    # Draw on the generator's device (a CPU generator cannot feed CUDA ops), then move the result.
    return generator.device if generator is not None else device


def batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int, *, input_size: int = IMAGE_SIZE,
            shuffle: bool = False, generator: torch.Generator | None = None, flip: bool = False,
            drop_last: bool = False, pad_last: bool = False, dtype: torch.dtype = torch.float32,
            channels_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of (inputs, labels) built on images.device from a uint8 (N, H, W) tensor.

    `pad_last` fills a short last batch up to `batch_size` with repeated images labelled
    PADDING, which cross-entropy ignores and no prediction matches: every batch then has one
    shape (for evaluation on a GPU, see cnnlab.training.setup.eval_batch_size)."""
    if images.dtype != torch.uint8 or images.dim() != 3:
        raise ValueError(f"images must be uint8 (N, H, W), got {images.dtype} {tuple(images.shape)}")
    if len(labels) != len(images) or batch_size < 1:
        raise ValueError(f"{len(images)} images, {len(labels)} labels, batch_size {batch_size}")
    n, device = len(images), images.device
    rand_device = _random_on(device, generator)
    # The whole epoch's order and flip coins are drawn up front: one small transfer per epoch.
    if shuffle:
        order = torch.randperm(n, generator=generator, device=rand_device).to(device)
    else:
        order = torch.arange(n, device=device)
    coins = (torch.rand(n, generator=generator, device=rand_device) < 0.5).to(device) if flip else None
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        mask = coins[start:start + batch_size] if coins is not None else None
        y = labels[idx]
        short = batch_size - len(idx)
        if pad_last and short:
            idx = torch.cat([idx, order[torch.arange(short, device=device) % n]])
            mask = torch.cat([mask, mask.new_zeros(short)]) if mask is not None else None
            y = torch.cat([y, y.new_full((short,), PADDING)])
        x = to_input(images[idx], input_size=input_size, flip=mask, dtype=dtype, channels_last=channels_last)
        yield x, y


class DeviceData:
    """One split held on the training device as a single uint8 tensor; batches are built there."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, device: torch.device | str = "cpu", *,
                 input_size: int = IMAGE_SIZE, dtype: torch.dtype = torch.float32,
                 channels_last: bool = False) -> None:
        self.images = images.to(device)  # one host->device copy for the whole run
        self.labels = labels.to(device)
        self.input_size, self.dtype, self.channels_last = input_size, dtype, channels_last

    def __len__(self) -> int:
        return len(self.labels)

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        return len(self) // batch_size if drop_last else math.ceil(len(self) / batch_size)

    def batches(self, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None,
                flip: bool = False, drop_last: bool = False,
                pad_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return batches(self.images, self.labels, batch_size, input_size=self.input_size, shuffle=shuffle,
                       generator=generator, flip=flip, drop_last=drop_last, pad_last=pad_last,
                       dtype=self.dtype, channels_last=self.channels_last)
