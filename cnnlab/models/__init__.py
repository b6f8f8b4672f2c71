"""Builders: a spec in, an `nn.Module` out. One file per family, looked up in one registry.

Every builder passes in-channels explicitly (no lazy modules), so any model can be built on
the `meta` device: `with torch.device("meta"): model = build(spec)` allocates nothing.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from cnnlab.specs import Spec

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
    `cnnlab.validation.validate` first: a bad spec may raise anything torch raises."""
    return BUILDERS[spec.family](spec)


# Importing the family modules registers their builders.
from cnnlab.models import alexnet, densenet, googlenet, lenet, nin, resnet, vgg  # noqa: E402,F401
