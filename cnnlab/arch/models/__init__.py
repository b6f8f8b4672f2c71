"""Builders: a spec in, an `nn.Module` out. One file per family, registered in
`cnnlab.arch.families` with its checks and facts.

Every builder passes in-channels explicitly (no lazy modules), so any model can be built on
the `meta` device: `with torch.device("meta"): model = build(spec)` allocates nothing.
"""

from __future__ import annotations

from torch import nn

from cnnlab.arch.families import FAMILIES
from cnnlab.arch.specs import Spec


def build(spec: Spec) -> nn.Module:
    """The model a spec describes, on the current default device (use `torch.device("meta")`
    as a context manager to build without allocating). Check the spec with
    `cnnlab.arch.checks.validate` first: a bad spec may raise anything torch raises."""
    return FAMILIES[spec.family].build(spec)


def batch_norm_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every BatchNorm layer with its path, in module order: torch's BatchNorm1d/2d and the
    book's from-scratch `BatchNorm` (models/lenet.py). Both update their running statistics as
    `(1 - momentum) * running + momentum * batch`."""
    # Imported here, not at the top: from there lenet would register before the families
    # the chapter puts first (`families` imports this package while it loads them).
    from cnnlab.arch.models.lenet import BatchNorm

    kinds = (nn.modules.batchnorm._BatchNorm, BatchNorm)
    return [(path, m) for path, m in model.named_modules() if isinstance(m, kinds)]

