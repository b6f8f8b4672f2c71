"""Fashion-MNIST on disk, without torch: what the data set is, where its idx files are, and
their bytes, checked against their headers.

Why a module without torch: importing torch takes 1-3 s, and gunzipping the four files
another 0.3-0.5 s. `prefetch` starts the reading in a thread before torch is imported (the CLI
and the run worker do), and zlib releases the GIL while it inflates, so the two overlap on two
cores. `cnnlab.training.data` turns the bytes into tensors.
"""

from __future__ import annotations

import enum
import functools
import gzip
import math
import os
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

from cnnlab.errors import CnnlabError

CLASSES: tuple[str, ...] = (
    "t-shirt", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
)
NUM_CLASSES = len(CLASSES)
IMAGE_SIZE = 28
FULL_SIZES = (60_000, 10_000)
SAMPLE_SIZES = (3_000, 1_000)

DATA_ENV = "CNNLAB_DATA"
DEBIAN_PACKAGE = "dataset-fashion-mnist"
# Module-level so tests can point them elsewhere; read at call time, never captured.
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
SAMPLE_PATH = Path(__file__).resolve().parents[2] / "assets" / "fashion-mnist-sample.npz"

# The four original files, in the order the loader reads them (plain or .gz).
IDX_FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

Stamp = tuple[str, int, int]  # path, size, mtime: a rewritten file reads afresh


class Source(enum.StrEnum):
    DATA_DIR = "data-dir"
    DEBIAN = "debian"
    DOWNLOAD = "download"
    SAMPLE = "sample"


class DataError(CnnlabError):
    """Base class for data problems the user has to fix."""


class DataNotFound(DataError, FileNotFoundError):
    """No usable Fashion-MNIST anywhere the loader is allowed to look."""


class DataCorrupt(DataError, ValueError):
    """Files were found but are truncated, malformed, incomplete or not Fashion-MNIST."""


# ---------------------------------------------------------------- finding the files

def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The data dir: the argument, else $CNNLAB_DATA, else ./data (absolute, for messages and caching)."""
    chosen = data_dir if data_dir is not None else os.environ.get(DATA_ENV) or "data"
    return Path(chosen).expanduser().resolve()


def files_in(directory: Path) -> dict[str, Path] | None:
    """The four idx files in directory (plain preferred: faster), None if it has none of them."""
    found: dict[str, Path] = {}
    for key, name in IDX_FILES.items():
        for candidate in (directory / name, directory / f"{name}.gz"):
            if candidate.is_file():
                found[key] = candidate
                break
    if not found:
        return None
    missing = [name for key, name in IDX_FILES.items() if key not in found]
    if missing:
        # Refuse rather than silently fall through to another source the user did not pick.
        raise DataCorrupt(f"incomplete Fashion-MNIST in {directory}: missing {', '.join(missing)} (plain or .gz); "
                           "add them or delete the partial set")
    return found


def find_fashion_mnist(data_dir: str | os.PathLike[str] | None = None) -> tuple[Source, dict[str, Path]] | None:
    """Locate the full set on disk: the data dir (itself, then FashionMNIST/raw/), then Debian's. No download."""
    root = resolve_data_dir(data_dir)
    for directory in (root, root / "FashionMNIST" / "raw"):
        if files := files_in(directory):
            return Source.DATA_DIR, files
    if files := files_in(DEBIAN_DIR):
        return Source.DEBIAN, files
    return None


def stamp(path: Path) -> Stamp:
    """Cache key for a file: a replaced or rewritten file decodes afresh."""
    st = path.stat()
    return str(path), st.st_size, st.st_mtime_ns


# ---------------------------------------------------------------- reading idx files
#
# Our own small parser rather than torchvision.datasets.mnist.read_image_file: that reader
# only opens plain files (Debian ships .gz), so it would need a 55 MB decompressed copy in
# the data dir, which the next run would then report as "data-dir" instead of "debian"; and
# it validates with `assert` and strict=False, so a truncated file fails with an opaque
# reshape error instead of one naming the file.

@dataclass(frozen=True, eq=False)
class IdxFile:
    """An idx file of unsigned bytes: its declared shape and the values after the header."""

    shape: tuple[int, ...]
    values: bytearray  # writable, so torch.frombuffer shares it without a copy or a warning


# One reader at a time: a load that finds the prefetch thread still reading a file waits for
# it and takes its result from the cache, instead of inflating the same 26 MB a second time.
_READING = threading.Lock()


def read_idx(path: Path) -> IdxFile:
    """Read an idx file of unsigned bytes (plain or .gz), cached by its stamp. Raises DataCorrupt."""
    with _READING:
        try:
            key = stamp(path)
        except OSError as e:
            raise DataCorrupt(f"{path}: cannot read it ({e}); delete it and fetch it again") from e
        return _read_idx(key)


@functools.lru_cache(maxsize=8)  # two sets of four files
def _read_idx(key: Stamp) -> IdxFile:
    path = Path(key[0])
    try:
        data = path.read_bytes()
        if path.suffix == ".gz":
            # Every member, zero padding allowed, CRCs checked; zlib frees the GIL as it inflates.
            data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:  # truncated/garbled gzip lands here
        raise DataCorrupt(f"{path}: cannot read it ({e}); delete it and fetch it again") from e
    # Header: two zero bytes, type 0x08 (unsigned byte), number of dims, then big-endian uint32 dims.
    if len(data) < 4 or data[:3] != b"\x00\x00\x08" or data[3] not in (1, 3):
        raise DataCorrupt(f"{path}: not an idx file of unsigned bytes (header {data[:4].hex()!r})")
    header = 4 + 4 * data[3]
    if len(data) < header:
        raise DataCorrupt(f"{path}: truncated inside the header ({len(data)} bytes)")
    shape = struct.unpack(f">{data[3]}I", data[4:header])
    expected = header + math.prod(shape)
    if len(data) != expected:
        raise DataCorrupt(f"{path}: {len(data):,} bytes but its header {shape} needs {expected:,}; "
                          "truncated or corrupt, delete it and fetch it again")
    return IdxFile(shape, bytearray(memoryview(data)[header:]))


def prefetch(choice: str) -> threading.Thread:
    """Start reading the idx files that `choice` (a config's `data`: auto, full or sample) loads,
    in a thread; the load that follows finds them in read_idx's cache, or waits for the file
    being read. The small bundled sample is not prefetched. Errors are left for the load to
    raise, in their place.
    """
    def read() -> None:
        try:
            found = find_fashion_mnist() if choice in ("auto", "full") else None
            for path in (found[1].values() if found else ()):
                read_idx(path)
        except Exception:  # noqa: BLE001, S110 - the load raises it again where it belongs
            pass

    thread = threading.Thread(target=read, name="cnnlab-prefetch-data", daemon=True)
    thread.start()
    return thread
