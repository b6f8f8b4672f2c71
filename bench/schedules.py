"""Learning-rate schedules against the book's constant lr, on models a CPU trains in seconds.

Each model trains 10 epochs of the full Fashion-MNIST with the book's recipe (SGD, its lr and
batch size) under each schedule and seed, through cnnlab's own loop, and the table gives the
final test accuracy. On the H200 (2026-11-29) cosine raised the BatchNorm networks but lowered
the ones still learning at epoch 10 (AlexNet, VGG, NiN); LeNet with sigmoids is such a network
here, BN-LeNet a BatchNorm one. `anneal` holds the lr for four fifths of the steps and then
takes it to zero (cnnlab.training.setup.lr_at).

    .venv/bin/python bench/schedules.py [--models lenet bn-lenet] [--seeds 2]
        [--schedules constant cosine anneal]

About 30 s a run on 2 cores: the default 12 runs took 6 min 15 s (2026-12-03).
"""

from __future__ import annotations

import os
import sys

# The checkout's root first on sys.path: cnnlab imports without being installed.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402

from cnnlab.arch.presets import PRESETS  # noqa: E402
from cnnlab.training.config import SCHEDULES  # noqa: E402
from cnnlab.training.data import load_fashion_mnist  # noqa: E402
from cnnlab.training.loop import train  # noqa: E402
from cnnlab.training.recipes import textbook_config  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["lenet", "bn-lenet"], choices=PRESETS,
                        metavar="PRESET")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--schedules", nargs="+", default=["constant", "cosine", "anneal"],
                        choices=SCHEDULES)
    args = parser.parse_args()
    data = load_fashion_mnist(source="full")
    print(f"{'model':10} {'schedule':9} " + " ".join(f"seed {s}" for s in range(args.seeds)))
    for name in args.models:
        for schedule in args.schedules:
            accs = []
            for seed in range(args.seeds):
                config = textbook_config(name).replace(schedule=schedule, seed=seed,
                                                       device="cpu")
                accs.append(train(PRESETS[name], config, data=data).metrics["test_acc"])
            print(f"{name:10} {schedule:9} " + " ".join(f"{a:6.3f}" for a in accs), flush=True)


if __name__ == "__main__":
    main()
