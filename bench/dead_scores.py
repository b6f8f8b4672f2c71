"""How many class scores a freshly initialised network gives 0 for every test image, and, with
`--train-steps`, how soon training brings them back.

NiN's last block ends in a ReLU on the class scores. A class whose score is 0 for every image
gets no gradient through that ReLU until the layers below change enough to lift it, and while
it is 0 the network never predicts it. This counts such classes at initialisation, seed by
seed, on the first `--images` test images, with one of three inits:

- `book`: the chapter's (`cnnlab.training.setup.make_model`, as training starts): Xavier-uniform
  weights and zero biases, as Gluon's `init.Xavier()` gives;
- `torch-bias`: Xavier-uniform weights with torch's default biases (uniform in
  +-1/sqrt(fan_in)), as d2l's PyTorch `init_cnn` leaves them and cnnlab did before 2026-12-03;
- `he`: Kaiming-uniform weights and zero biases.

`--train-steps N` then trains each seed's network for N steps with the book's recipe for the
preset (SGD, its lr and batch size) through cnnlab's own loop, on the CPU, and prints the
training loss every 50 steps (2.30 is chance: the scores still ignore the image), the test
accuracy and the classes still dead. At 224 px NiN takes about 4 s a step on 2 cores, so
`--input 96` is the practical size there.

    .venv/bin/python bench/dead_scores.py [--preset nin] [--seeds 8] [--images 500]
        [--init book|torch-bias|he] [--train-steps 500 --input 96]

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
from unittest import mock  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

from cnnlab.arch.presets import PRESETS  # noqa: E402
from cnnlab.arch.specs import Spec  # noqa: E402
from cnnlab.training import setup  # noqa: E402
from cnnlab.training.data import DeviceData, FashionMNIST, load_fashion_mnist  # noqa: E402
from cnnlab.training.loop import train  # noqa: E402
from cnnlab.training.recipes import default_config  # noqa: E402

LOSS_EVERY = 50  # steps between the printed training losses


def he_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_uniform_(module.weight, nonlinearity="relu")


def torch_biases(module: nn.Module) -> None:
    """torch's own default init (`reset_parameters`), then Xavier weights over it: what
    d2l's PyTorch `init_cnn` leaves, biases included."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        module.reset_parameters()
        nn.init.xavier_uniform_(module.weight)


# Applied after the book's init, in the seed's random stream.
CHANGES = {"book": None, "torch-bias": torch_biases, "he": he_weights}


def init_with(change) -> mock._patch:
    """`setup.init_cnn` followed by `change`, for as long as the patch is active: so training
    starts from the init under test through cnnlab's unchanged `train`."""
    book = setup.init_cnn

    def init(module: nn.Module) -> None:
        book(module)
        if change:
            change(module)
    return mock.patch.object(setup, "init_cnn", init)


def dead_classes(scores: torch.Tensor) -> list[int]:
    """The classes whose score is 0 (after NiN's ReLU) for every image."""
    return [int(c) for c in torch.nonzero(scores.amax(dim=0) <= 0).flatten()]


def score(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(images)


def train_briefly(spec: Spec, seed: int, steps: int, data: FashionMNIST,
                  images: torch.Tensor, change) -> None:
    config = default_config(spec).replace(seed=seed, max_steps=steps, epochs=1, device="cpu",
                                          log_every=LOSS_EVERY, bn_recalibration=0)
    losses: list[str] = []

    def on_event(event: dict) -> None:
        if event["kind"] == "step" and event["step"] % LOSS_EVERY == 0:
            losses.append(f"{event['train_loss']:.2f}")

    with init_with(change):
        result = train(spec, config, on_event=on_event, data=data)
    print(f"    after {result.steps} steps at lr {config.lr}, batch {config.batch_size}: "
          f"test accuracy {result.metrics['test_acc']:.3f}, dead classes "
          f"{dead_classes(score(result.model, images)) or 'none'}; "
          f"loss every {LOSS_EVERY} steps: {' '.join(losses)}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="nin", choices=sorted(PRESETS))
    parser.add_argument("--input", type=int, help="input size (default: the preset's)")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--images", type=int, default=500, help="test images scored")
    parser.add_argument("--init", choices=sorted(CHANGES), default="book",
                        help="book: Xavier weights, zero biases (what training uses); "
                             "torch-bias: Xavier weights, torch's default biases; "
                             "he: Kaiming-uniform weights, zero biases")
    parser.add_argument("--train-steps", type=int, default=0,
                        help="then train each seed this many steps on the CPU (default 0)")
    args = parser.parse_args()
    spec = PRESETS[args.preset]
    if args.input:
        spec = spec.replace(input_size=args.input)
    data = load_fashion_mnist()
    test = DeviceData(data.test_images[:args.images], data.test_labels[:args.images], "cpu",
                      input_size=spec.input_size)
    x, _ = next(test.batches(args.images))
    print(f"{args.preset} at {spec.input_size} px, {args.init} init, {args.images} test images")
    dead_counts = []
    for seed in range(args.seeds):
        with init_with(CHANGES[args.init]):
            model = setup.make_model(spec, seed)  # seeds torch, builds, initialises
        scores = score(model, x)
        dead = len(dead_classes(scores))
        dead_counts.append(dead)
        print(f"  seed {seed}: {dead} of {scores.shape[1]} classes score 0 for every image; "
              f"scores vary by {float(scores.std(dim=0).mean()):.1e} across images "
              f"(mean {float(scores.mean()):.1e})", flush=True)
        if args.train_steps:
            train_briefly(spec, seed, args.train_steps, data, x, CHANGES[args.init])
    print(f"dead classes at init: {min(dead_counts)} to {max(dead_counts)} "
          f"over {args.seeds} seeds")


if __name__ == "__main__":
    main()
