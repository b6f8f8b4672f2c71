"""Builders: a spec in, an `nn.Module` out. One file per family, looked up in one registry.

Every builder passes in-channels explicitly (no lazy modules), so any model can be built on
the `meta` device: `with torch.device("meta"): model = build(spec)` allocates nothing.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from cnnlab.arch.specs import Spec

Builder = Callable[[Spec], nn.Module]
BUILDERS: dict[str, Builder] = {}


def register(family: str) -> Callable[[Builder], Builder]:
    """Decorator: make `builder` the one that `build` uses for specs of `family`."""

    def decorate(builder: Builder) -> Builder:
        BUILDERS[family] = builder
        return builder

    return decorate


def build(spec: Spec) -> nn.Module:
    """The model a spec describes, on the current default device (use `torch.device("meta")`
    as a context manager to build without allocating). Check the spec with
    `cnnlab.arch.checks.validate` first: a bad spec may raise anything torch raises."""
    return BUILDERS[spec.family](spec)


def batch_norm_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every BatchNorm layer with its path, in module order: torch's BatchNorm1d/2d and the
    book's from-scratch `BatchNorm` (models/lenet.py). Both update their running statistics as
    `(1 - momentum) * running + momentum * batch`."""
    kinds = (nn.modules.batchnorm._BatchNorm, lenet.BatchNorm)
    return [(path, m) for path, m in model.named_modules() if isinstance(m, kinds)]


# Importing the family modules registers their builders.
from cnnlab.arch.models import alexnet, densenet, googlenet, lenet, nin, resnet, vgg  # noqa: E402,F401
