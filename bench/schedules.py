"""Learning-rate schedules and larger batches against the book's recipe, on CPU-sized models.

Each model trains on the full Fashion-MNIST with its recipe (SGD, its lr, batch size and epochs:
10 for LeNet and BN-LeNet, 5 for NiN-small) under each schedule and seed, through cnnlab's own
loop, and the table gives the final test accuracy. On the H200 (2026-11-29) cosine raised the
BatchNorm networks but lowered the ones still learning at epoch 10 (AlexNet, VGG, NiN); LeNet
with sigmoids is such a network here, BN-LeNet a BatchNorm one. `anneal` holds the lr for four
fifths of the steps and then takes it to zero (cnnlab.training.setup.lr_at).

`--batch-scales 1 2` also trains each at k times the book's batch size and k times its lr (the
linear scaling rule, Goyal et al. 2017, "Accurate, Large Minibatch SGD"): on a GPU a larger
batch runs more examples a second, and this shows what it costs in accuracy.

    .venv/bin/python bench/schedules.py [--models lenet bn-lenet] [--seeds 2]
        [--schedules constant cosine anneal] [--batch-scales 1]

About 30 s a run on 2 cores: the default 12 runs took 6 min 15 s (2026-12-03); NiN-small
(`--models nin-small`) takes about 3 min a run.
"""

from __future__ import annotations

import os
import sys

# The checkout's root first on sys.path: cnnlab imports without being installed.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import itertools  # noqa: E402

from cnnlab.arch.presets import PRESETS  # noqa: E402
from cnnlab.training.config import SCHEDULES  # noqa: E402
from cnnlab.training.data import load_fashion_mnist  # noqa: E402
from cnnlab.training.loop import train  # noqa: E402
from cnnlab.training.recipes import scaled_batch, textbook_config  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["lenet", "bn-lenet"], choices=PRESETS,
                        metavar="PRESET")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--schedules", nargs="+", default=["constant", "cosine", "anneal"],
                        choices=SCHEDULES)
    parser.add_argument("--batch-scales", nargs="+", type=int, default=[1], metavar="K")
    args = parser.parse_args()
    data = load_fashion_mnist(source="full")
    print(f"{'model':10} {'schedule':9} {'batch':>5} {'lr':>5} "
          + " ".join(f"seed {s}" for s in range(args.seeds)))
    for name in args.models:
        for schedule, k in itertools.product(args.schedules, args.batch_scales):
            recipe = scaled_batch(textbook_config(name), k).replace(schedule=schedule,
                                                                     device="cpu")
            accs = [train(PRESETS[name], recipe.replace(seed=seed), data=data).metrics["test_acc"]
                    for seed in range(args.seeds)]
            print(f"{name:10} {schedule:9} {recipe.batch_size:5} {recipe.lr:5g} "
                  + " ".join(f"{a:6.3f}" for a in accs), flush=True)


if __name__ == "__main__":
    main()
