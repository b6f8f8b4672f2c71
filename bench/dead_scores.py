"""How many class scores a freshly initialised network gives 0 for every test image.

NiN's last block ends in a ReLU on the class scores. A class whose score is 0 for every image
gets no gradient through that ReLU until the layers below change enough to lift it, and while
it is 0 the network never predicts it. This counts such classes at initialisation, seed by
seed, on the first `--images` test images at the preset's input size: with the book's Xavier
init (`cnnlab.training.setup.make_model`, as training starts) or with He (Kaiming) init.

    .venv/bin/python bench/dead_scores.py [--preset nin] [--seeds 8] [--images 500] [--init he]

It also prints how much the scores vary across images (their standard deviation, averaged over
classes): when that is tiny against their mean, every image gets nearly the same scores, and a
score's sign is the same for all of them.
"""

from __future__ import annotations

import os
import sys

# The checkout's root first on sys.path: cnnlab imports without being installed.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

from cnnlab.arch.presets import PRESETS  # noqa: E402
from cnnlab.training.data import DeviceData, load_fashion_mnist  # noqa: E402
from cnnlab.training.setup import make_model  # noqa: E402


def he_init(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_uniform_(module.weight, nonlinearity="relu")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="nin", choices=sorted(PRESETS))
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--images", type=int, default=500, help="test images scored")
    parser.add_argument("--init", choices=("xavier", "he"), default="xavier",
                        help="xavier: the book's (what training uses); he: Kaiming uniform")
    args = parser.parse_args()
    spec = PRESETS[args.preset]
    data = load_fashion_mnist()
    test = DeviceData(data.test_images[:args.images], data.test_labels[:args.images], "cpu",
                      input_size=spec.input_size)
    x, _ = next(test.batches(args.images))
    print(f"{args.preset} at {spec.input_size} px, {args.init} init, {args.images} test images")
    dead_counts = []
    for seed in range(args.seeds):
        model = make_model(spec, seed)  # seeds torch, builds, applies the book's Xavier init
        if args.init == "he":
            model.apply(he_init)
        with torch.no_grad():
            scores = model.eval()(x)
        dead = int((scores.amax(dim=0) <= 0).sum())
        dead_counts.append(dead)
        print(f"  seed {seed}: {dead} of {scores.shape[1]} classes score 0 for every image; "
              f"scores vary by {float(scores.std(dim=0).mean()):.1e} across images "
              f"(mean {float(scores.mean()):.1e})", flush=True)
    print(f"dead classes at init: {min(dead_counts)} to {max(dead_counts)} "
          f"over {args.seeds} seeds")


if __name__ == "__main__":
    main()
