"""Gradient precision of the CPU training paths, against a float64 reference.

Why cnnlab trains BatchNorm networks in NCHW on CPUs (train._cpu_channels_last) and why
`--compile` is safe: the relative error ||g - g64|| / ||g64|| of all weight gradients of one
training step, for eager NCHW, eager channels-last and torch.compile, per model.

Run from the repository root:  .venv/bin/python bench/precision.py [--models ...]
"""

from __future__ import annotations

import os
import sys

# The checkout's root first on sys.path: cnnlab imports without being installed (the GPU
# machine runs these scripts from a bare copy of the tree).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from cnnlab.arch.presets import PRESETS  # noqa: E402
from cnnlab.training.setup import make_model  # noqa: E402

BATCH = 32


def gradients(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    return [p.grad.double() for p in model.parameters()]


def relative(grads: list[torch.Tensor], reference: list[torch.Tensor]) -> tuple[float, float]:
    """(error of all gradients together, error of the worst single weight tensor)."""
    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()
    flat = rel(torch.cat([g.flatten() for g in grads]), torch.cat([r.flatten() for r in reference]))
    return flat, max(rel(g, r) for g, r in zip(grads, reference) if g.dim() > 1)


def errors(name: str, width: float) -> dict[str, tuple[float, float]]:
    spec = PRESETS[name].replace(width=width)  # at its textbook input size
    size = spec.input_size
    torch.manual_seed(0)
    x, y = torch.rand(BATCH, 1, size, size), torch.randint(0, 10, (BATCH,))
    reference = gradients(make_model(spec, 0).double(), x.double(), y)
    paths = {
        "NCHW": lambda m: (m, x),
        "channels-last": lambda m: (m.to(memory_format=torch.channels_last),
                                    x.to(memory_format=torch.channels_last)),
        "compiled": lambda m: (torch.compile(m, dynamic=False), x),
    }
    out = {}
    for label, prepare in paths.items():
        model = make_model(spec, 0)
        runner, inputs = prepare(model)
        model.zero_grad()
        F.cross_entropy(runner(inputs), y).backward()
        out[label] = relative([p.grad.double() for p in model.parameters()], reference)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet18", "densenet", "googlenet"],
                        choices=list(PRESETS), metavar="PRESET")
    parser.add_argument("--width", type=float, default=1.0, help="width multiplier (default 1)")
    args = parser.parse_args()
    print(f"relative error of weight gradients vs float64 (textbook input sizes, width "
          f"{args.width}, batch {BATCH}, torch {torch.__version__})")
    print("each cell: all gradients together / the worst single weight tensor")
    print(f"{'model':12s} {'NCHW':>18s} {'channels-last':>18s} {'compiled':>18s}")
    for name in args.models:
        cells = [f"{a:.1e} / {b:.1e}" for a, b in errors(name, args.width).values()]
        print(f"{name:12s} " + " ".join(f"{c:>18s}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
