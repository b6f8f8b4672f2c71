"""Fashion-MNIST where torchvision's `FashionMNIST` looks for it, for the bench scripts that time
the textbook's own pipeline beside cnnlab's (bench/train.py, bench/cold_train.py)."""

from __future__ import annotations

import gzip
from pathlib import Path

from cnnlab.training import files


def extract_raw(root: Path) -> None:
    """The Debian .gz idx files, decompressed into root/FashionMNIST/raw: torchvision's reader
    opens only uncompressed files."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in files.IDX_FILES.values():
        with gzip.open(files.DEBIAN_DIR / f"{name}.gz", "rb") as src:
            (raw / name).write_bytes(src.read())
