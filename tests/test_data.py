"""Tests for cnnlab.training.files and .data: finding, reading, verifying and batching real
Fashion-MNIST."""

from __future__ import annotations

import gzip
import shutil
import struct
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnlab.training import data, files
from cnnlab.training.data import DeviceData, batches, load_fashion_mnist
from cnnlab.training.files import DataCorrupt, DataNotFound, Source

needs_debian = pytest.mark.skipif(
    not files.DEBIAN_DIR.is_dir(),
    reason=f"{files.DEBIAN_DIR} absent (apt package {files.DEBIAN_PACKAGE} not installed)")


def _idx(array: np.ndarray) -> bytes:
    """Encode a uint8 array as an idx file."""
    return struct.pack(f">BBBB{array.ndim}I", 0, 0, 8, array.ndim, *array.shape) + array.tobytes()


@pytest.fixture(scope="module")
def empty_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("empty")


@pytest.fixture(scope="module")
def full(empty_dir: Path) -> data.FashionMNIST:
    """The full set from the Debian package (an empty data dir makes the finder go there)."""
    if not files.DEBIAN_DIR.is_dir():
        pytest.skip(f"{files.DEBIAN_DIR} absent (apt package {files.DEBIAN_PACKAGE} not installed)")
    return load_fashion_mnist(empty_dir)


@pytest.fixture(scope="module")
def raw_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir laid out as torchvision does: <root>/FashionMNIST/raw/ with plain idx files."""
    if not files.DEBIAN_DIR.is_dir():
        pytest.skip(f"{files.DEBIAN_DIR} absent (apt package {files.DEBIAN_PACKAGE} not installed)")
    root = tmp_path_factory.mktemp("datadir")
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in files.IDX_FILES.values():
        with gzip.open(files.DEBIAN_DIR / f"{name}.gz", "rb") as src, open(raw / name, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return root


@pytest.fixture()
def sample() -> data.FashionMNIST:
    return load_fashion_mnist(source="sample")


@pytest.fixture()
def no_debian(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(files, "DEBIAN_DIR", tmp_path / "no-debian-here")


def _data_dir_with(tmp_path: Path, raw_root: Path, **replacements: bytes) -> Path:
    """A data dir linking the good plain files, with some replaced by the given bytes."""
    for key, name in files.IDX_FILES.items():
        target = tmp_path / name
        if key in replacements:
            target.write_bytes(replacements[key])
        else:
            target.symlink_to(raw_root / "FashionMNIST" / "raw" / name)
    return tmp_path


# ---------------------------------------------------------------- finding each source

def test_the_shipped_sample_loads_as_a_verified_balanced_sample(sample: data.FashionMNIST) -> None:
    assert sample.source == Source.SAMPLE and sample.is_sample
    assert sample.train_images.shape == (3000, 28, 28) and sample.test_images.shape == (1000, 28, 28)
    assert torch.bincount(sample.train_labels).tolist() == [300] * 10
    assert torch.bincount(sample.test_labels).tolist() == [100] * 10
    assert "SAMPLE" in sample.describe() and "not comparable" in sample.describe()


def test_the_shipped_sample_is_small() -> None:
    assert files.SAMPLE_PATH.stat().st_size < 3_000_000


def test_the_sample_holds_the_real_images_at_its_recorded_indices(
        sample: data.FashionMNIST, full: data.FashionMNIST) -> None:
    with np.load(files.SAMPLE_PATH) as npz:
        train_idx = torch.from_numpy(npz["train_indices"]).long()
        test_idx = torch.from_numpy(npz["test_indices"]).long()
    assert torch.equal(sample.train_images, full.train_images[train_idx])
    assert torch.equal(sample.train_labels, full.train_labels[train_idx])
    assert torch.equal(sample.test_images, full.test_images[test_idx])


@needs_debian
def test_the_debian_package_is_found_when_the_data_dir_is_empty(full: data.FashionMNIST) -> None:
    assert full.source == Source.DEBIAN and not full.is_sample
    assert full.path == files.DEBIAN_DIR
    assert full.describe() == ("Fashion-MNIST from /usr/share/datasets/fashion-mnist "
                               "(Debian package dataset-fashion-mnist): 60,000 train / 10,000 test")


def test_the_full_set_has_60000_train_and_10000_test_balanced(full: data.FashionMNIST) -> None:
    assert full.train_images.shape == (60_000, 28, 28) and full.train_images.dtype == torch.uint8
    assert full.test_images.shape == (10_000, 28, 28)
    assert full.train_labels.dtype == torch.int64
    assert torch.bincount(full.train_labels).tolist() == [6000] * 10
    assert torch.bincount(full.test_labels).tolist() == [1000] * 10


def test_a_data_dir_from_the_env_var_wins_over_debian(
        raw_root: Path, full: data.FashionMNIST, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNNLAB_DATA", str(raw_root))
    found = load_fashion_mnist()
    assert found.source == Source.DATA_DIR
    assert found.path == raw_root / "FashionMNIST" / "raw"
    assert torch.equal(found.train_images, full.train_images)
    assert torch.equal(found.test_labels, full.test_labels)


def test_loading_twice_returns_the_cached_tensors(raw_root: Path) -> None:
    assert load_fashion_mnist(raw_root).train_images is load_fashion_mnist(raw_root).train_images


def test_download_is_used_only_when_allowed_and_puts_files_in_the_data_dir(
        tmp_path: Path, raw_root: Path, no_debian: None, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    class FakeTorchvisionFashionMNIST:  # stands in for the network: links the decompressed files
        def __init__(self, root: str, train: bool, download: bool) -> None:
            calls.append(root)
            raw = Path(root) / "FashionMNIST" / "raw"
            raw.mkdir(parents=True)
            for name in files.IDX_FILES.values():
                (raw / name).symlink_to(raw_root / "FashionMNIST" / "raw" / name)

    monkeypatch.setattr("torchvision.datasets.FashionMNIST", FakeTorchvisionFashionMNIST)
    with pytest.raises(DataNotFound):
        load_fashion_mnist(tmp_path)
    assert calls == []
    got = load_fashion_mnist(tmp_path, allow_download=True)
    assert calls == [str(tmp_path)]
    assert got.source == Source.DOWNLOAD and got.path == tmp_path / "FashionMNIST" / "raw"


def test_nothing_found_raises_an_error_naming_the_three_places_and_the_apt_package(
        tmp_path: Path, no_debian: None) -> None:
    with pytest.raises(DataNotFound) as error:
        load_fashion_mnist(tmp_path / "missing")
    message = str(error.value)
    assert str(tmp_path / "missing") in message
    assert str(tmp_path / "missing" / "FashionMNIST" / "raw") in message
    assert str(files.DEBIAN_DIR) in message
    assert "download" in message and "allow_download=True" in message
    assert "dataset-fashion-mnist" in message and "CNNLAB_DATA" in message


def test_a_failed_download_is_reported_in_the_error(
        tmp_path: Path, no_debian: None, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr("torchvision.datasets.FashionMNIST", offline)
    with pytest.raises(DataNotFound, match="failed: Error downloading"):
        load_fashion_mnist(tmp_path, allow_download=True)


def test_the_sample_is_the_fallback_only_when_allowed(tmp_path: Path, no_debian: None) -> None:
    assert load_fashion_mnist(tmp_path, allow_sample=True).is_sample
    with pytest.raises(DataNotFound):
        load_fashion_mnist(tmp_path, allow_sample=True, source="full")


def test_an_unknown_source_is_rejected() -> None:
    with pytest.raises(ValueError, match="source"):
        load_fashion_mnist(source="mnist")


# ---------------------------------------------------------------- reading ahead

@needs_debian
def test_prefetching_reads_the_four_files_for_the_next_load(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv(files.DATA_ENV, str(tmp_path))  # empty: the Debian package is found
    files._read_idx.cache_clear()
    data._decode_full.cache_clear()
    files.prefetch("full").join()
    assert files._read_idx.cache_info().misses == 4
    full = load_fashion_mnist(source="full")
    assert files._read_idx.cache_info().hits == 4 and len(full.train_labels) == 60_000


@needs_debian
def test_a_load_while_the_prefetch_reads_waits_for_it_instead_of_reading_twice(
        monkeypatch, tmp_path) -> None:
    monkeypatch.setenv(files.DATA_ENV, str(tmp_path))
    files._read_idx.cache_clear()
    data._decode_full.cache_clear()
    reader = files.prefetch("auto")
    load_fashion_mnist(source="full")  # at once, while the thread reads
    reader.join()
    assert files._read_idx.cache_info().misses == 4


def test_prefetching_leaves_errors_to_the_load(monkeypatch, tmp_path, no_debian) -> None:
    gz = gzip.compress(_idx(np.zeros((100, 28, 28), np.uint8)))
    for name in files.IDX_FILES.values():
        (tmp_path / f"{name}.gz").write_bytes(gz[: len(gz) // 2])
    monkeypatch.setenv(files.DATA_ENV, str(tmp_path))
    uncaught: list[BaseException] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: uncaught.append(args.exc_value))
    files.prefetch("full").join()
    assert uncaught == []
    with pytest.raises(DataCorrupt, match="train-images-idx3-ubyte.gz: cannot read"):
        load_fashion_mnist(source="full")


def test_the_bundled_sample_is_not_prefetched(monkeypatch) -> None:
    files._read_idx.cache_clear()
    found: list[str] = []
    monkeypatch.setattr(files, "find_fashion_mnist", lambda: found.append("looked"))
    files.prefetch("sample").join()
    assert found == [] and files._read_idx.cache_info().misses == 0


def test_gzip_members_are_read_one_after_another_and_zero_padding_is_allowed(
        tmp_path: Path) -> None:
    images = _idx(np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28))
    path = tmp_path / "two-members.gz"
    path.write_bytes(gzip.compress(images[:100]) + gzip.compress(images[100:]) + bytes(8))
    assert data.read_idx(path).flatten().tolist() == list(images[16:])


def test_junk_after_a_gzip_member_raises_an_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "junk.gz"
    path.write_bytes(gzip.compress(_idx(np.zeros((2, 28, 28), np.uint8))) + b"<html>")
    with pytest.raises(DataCorrupt, match="junk.gz: cannot read"):
        data.read_idx(path)


# ---------------------------------------------------------------- corrupt data

def test_a_truncated_file_raises_an_error_naming_it(tmp_path: Path, no_debian: None) -> None:
    header = struct.pack(">BBBBIII", 0, 0, 8, 3, 60_000, 28, 28)
    for name in files.IDX_FILES.values():
        (tmp_path / name).write_bytes(header + bytes(1000))
    with pytest.raises(DataCorrupt, match=r"train-images-idx3-ubyte: 1,016 bytes .* truncated"):
        load_fashion_mnist(tmp_path)


def test_a_truncated_gzip_raises_an_error_naming_it(tmp_path: Path, no_debian: None) -> None:
    gz = gzip.compress(_idx(np.zeros((100, 28, 28), np.uint8)))
    for name in files.IDX_FILES.values():
        (tmp_path / f"{name}.gz").write_bytes(gz[: len(gz) // 2])
    with pytest.raises(DataCorrupt, match="train-images-idx3-ubyte.gz: cannot read"):
        load_fashion_mnist(tmp_path)


def test_a_file_that_is_not_idx_raises_an_error_naming_it(tmp_path: Path, raw_root: Path) -> None:
    _data_dir_with(tmp_path, raw_root, test_labels=b"<html>404 Not Found</html>")
    with pytest.raises(DataCorrupt, match="t10k-labels-idx1-ubyte: not an idx file"):
        load_fashion_mnist(tmp_path)


def test_a_short_label_file_raises_an_error_naming_it(tmp_path: Path, raw_root: Path) -> None:
    _data_dir_with(tmp_path, raw_root, test_labels=_idx(np.arange(9990, dtype=np.uint8) % 10))
    with pytest.raises(DataCorrupt, match=r"t10k-labels-idx1-ubyte: shape \(9990,\), expected \(10000,\)"):
        load_fashion_mnist(tmp_path)


def test_unbalanced_labels_raise_an_error_naming_the_file(tmp_path: Path, raw_root: Path) -> None:
    _data_dir_with(tmp_path, raw_root, train_labels=_idx(np.zeros(60_000, np.uint8)))
    with pytest.raises(DataCorrupt, match="train-labels-idx1-ubyte: classes not balanced"):
        load_fashion_mnist(tmp_path)


def test_a_partial_set_of_files_raises_an_error_naming_the_missing_ones(tmp_path: Path) -> None:
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"")
    with pytest.raises(DataCorrupt, match="missing train-labels-idx1-ubyte, t10k-images"):
        load_fashion_mnist(tmp_path)


# ---------------------------------------------------------------- batching

def _indexed(sample: data.FashionMNIST) -> tuple[torch.Tensor, torch.Tensor]:
    """The sample's train images with each label replaced by its index, to trace every batch row."""
    return sample.train_images, torch.arange(len(sample.train_images))


@pytest.mark.parametrize("size", [28, 96])
def test_batches_have_the_right_shape_dtype_and_range(sample: data.FashionMNIST, size: int) -> None:
    x, y = next(batches(sample.train_images, sample.train_labels, 64, input_size=size))
    assert x.shape == (64, 1, size, size) and x.dtype == torch.float32
    assert y.shape == (64,) and y.dtype == torch.int64
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.5


def test_a_shuffled_batch_holds_the_source_images_of_its_labels(sample: data.FashionMNIST) -> None:
    images, index = _indexed(sample)
    g = torch.Generator().manual_seed(1)
    x, y = next(batches(images, index, 128, shuffle=True, generator=g))
    assert not torch.equal(y, torch.arange(128))
    assert torch.equal(x[:, 0], images[y].float() / 255)


def test_resized_batches_are_the_bilinear_resize_of_the_source(sample: data.FashionMNIST) -> None:
    images, index = _indexed(sample)
    x, y = next(batches(images, index, 16, input_size=96, shuffle=True, generator=torch.Generator()))
    expected = F.interpolate(images[y].float().div(255).unsqueeze(1), size=(96, 96),
                             mode="bilinear", antialias=False, align_corners=False)
    assert torch.allclose(x, expected)


def test_flips_only_mirror_left_right_and_vary_per_sample(sample: data.FashionMNIST) -> None:
    images, index = _indexed(sample)
    x, y = next(batches(images, index, 256, flip=True, generator=torch.Generator().manual_seed(0)))
    original = images[y].float() / 255
    kept = (x[:, 0] == original).flatten(1).all(1)
    mirrored = (x[:, 0] == original.flip(-1)).flatten(1).all(1)
    assert (kept | mirrored).all()
    assert (kept & ~mirrored).any() and (mirrored & ~kept).any()


def test_the_same_seed_gives_the_same_batches(sample: data.FashionMNIST) -> None:
    def epoch(seed: int) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        return [y for _, y in batches(*_indexed(sample), 500, shuffle=True, generator=g, flip=True)]

    assert all(torch.equal(a, b) for a, b in zip(epoch(3), epoch(3)))
    assert not torch.equal(epoch(3)[0], epoch(4)[0])


def test_an_epoch_covers_every_example_once_and_drop_last_drops_the_remainder(sample: data.FashionMNIST) -> None:
    images, index = _indexed(sample)
    ys = [y for _, y in batches(images, index, 256, shuffle=True)]
    assert len(ys) == 12 and len(ys[-1]) == 3000 - 11 * 256
    assert torch.equal(torch.cat(ys).sort().values, index)
    assert len(list(batches(images, index, 256, drop_last=True))) == 11


def test_pad_last_fills_the_short_batch_with_padding_labels_and_keeps_every_example(
        sample: data.FashionMNIST) -> None:
    images, index = _indexed(sample)
    pairs = list(batches(images, index, 256, pad_last=True, channels_last=True))
    assert len(pairs) == 12 and {tuple(x.shape) for x, _ in pairs} == {(256, 1, 28, 28)}
    last_x, last_y = pairs[-1]
    real = 3000 - 11 * 256
    assert (last_y[real:] == data.PADDING).all() and (last_y[:real] >= 0).all()
    assert last_x.is_contiguous(memory_format=torch.channels_last)  # the others' layout
    ys = torch.cat([y for _, y in pairs])
    assert torch.equal(ys[ys != data.PADDING].sort().values, index)
    # a split smaller than one batch still fills it
    x, y = next(batches(images[:10], index[:10], 64, pad_last=True))
    assert x.shape[0] == 64 and int((y != data.PADDING).sum()) == 10


def test_device_data_builds_channels_last_batches_in_the_requested_dtype(sample: data.FashionMNIST) -> None:
    train = DeviceData(sample.train_images, sample.train_labels, "cpu", input_size=32,
                       dtype=torch.bfloat16, channels_last=True)
    x, y = next(train.batches(100, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert x.shape == (100, 1, 32, 32) and x.dtype == torch.bfloat16
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert len(train) == 3000 and train.num_batches(256) == 12 and train.num_batches(256, drop_last=True) == 11


def test_subset_is_class_balanced_and_deterministic(full: data.FashionMNIST) -> None:
    small = full.subset(5000, seed=7)
    assert torch.bincount(small.train_labels).tolist() == [500] * 10
    assert torch.equal(small.train_images, full.subset(5000, seed=7).train_images)
    assert not torch.equal(small.train_images, full.subset(5000, seed=8).train_images)
    assert len(small.test_labels) == 10_000
    assert "5,000 train (class-balanced subset of 60,000)" in small.describe()


def test_subset_indices_are_distinct() -> None:
    labels = torch.arange(1000) % 10
    idx = data.balanced_indices(labels, 505, seed=0)
    assert len(idx) == 500 and len(idx.unique()) == 500
