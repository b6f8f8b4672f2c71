"""The families: everything about one architecture family, registered once.

Each family's module (`cnnlab/arch/models/<family>.py`) holds its builder and its checks and
makes exactly one `register(Family(...))` call with every piece. Adding a family means writing
that module, its spec class (`cnnlab.arch.specs`), its presets (`cnnlab.arch.presets`), one
import line below, and its form on the Architecture page (`pages/architecture.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from cnnlab.arch.specs import Spec


@dataclass(frozen=True)
class Family:
    """One family's pieces and facts. Callables take the family's own spec class."""

    name: str  # the specs' `family`, e.g. "vgg"
    title: str  # as the chapter writes it, e.g. "VGG"
    spec: type[Spec]
    build: Callable[[Any], nn.Module]  # see `cnnlab.arch.models.build`
    check: Callable[[Any, Any], None]  # (checks.Checker, spec): report this family's fields
    # The textbook preset whose training recipe (lr, batch size, epochs) a spec borrows.
    recipe: Callable[[Any], str]
    # Training memory per image over the layer table's count (measured; see
    # cnnlab.training.resources); None: the general figure there.
    activation_slack: float | None = None
    eval_slack: float | None = None  # the same for evaluation


# Family name -> Family, in registration order: the chapter's order (see the imports below).
FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Add `family` to FAMILIES. Raises ValueError for a name already taken, or for a spec
    class that names another family: either would make specs build as the wrong network."""
    if family.name in FAMILIES:
        raise ValueError(f"family {family.name!r} is already registered")
    if family.spec.family != family.name:
        raise ValueError(f"family {family.name!r} has the spec class of "
                         f"{family.spec.family!r}")
    FAMILIES[family.name] = family
    return family


# Importing the family modules registers them, in the chapter's order.
from cnnlab.arch.models import alexnet, vgg, nin, googlenet, lenet, resnet, densenet  # noqa: E402,F401,I001
