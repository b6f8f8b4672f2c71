"""Build assets/fashion-mnist-sample.npz: a class-balanced real sample of Fashion-MNIST
(3,000 train / 1,000 test), used when the full set is unavailable.

Run from the repository root:  .venv/bin/python bench/make_sample.py [--data-dir DIR]
"""

from __future__ import annotations

import os
import sys

# The checkout's root first on sys.path: cnnlab imports without being installed (the GPU
# machine runs these scripts from a bare copy of the tree).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from cnnlab.training import data, files  # noqa: E402

SEED = 0  # fixed: the same originals always give the same sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help=f"where to look first (default ${files.DATA_ENV} or ./data)")
    parser.add_argument("--out", type=Path, default=files.SAMPLE_PATH)
    args = parser.parse_args()

    # Full sources only: a sample must never be built from the sample.
    full = data.load_fashion_mnist(args.data_dir, source="full")
    print(full.describe())
    n_train, n_test = files.SAMPLE_SIZES
    train_idx = data.balanced_indices(full.train_labels, n_train, SEED)
    test_idx = data.balanced_indices(full.test_labels, n_test, SEED)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out,
        train_images=full.train_images[train_idx].numpy(),
        train_labels=full.train_labels[train_idx].numpy().astype(np.uint8),
        test_images=full.test_images[test_idx].numpy(),
        test_labels=full.test_labels[test_idx].numpy().astype(np.uint8),
        # Provenance: positions in the original files, so the sample can be checked against them.
        train_indices=train_idx.numpy().astype(np.int32),
        test_indices=test_idx.numpy().astype(np.int32),
        seed=np.int64(SEED),
    )
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")
    print(data.load_fashion_mnist(source="sample").describe())


if __name__ == "__main__":
    main()
