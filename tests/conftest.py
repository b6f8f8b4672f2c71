"""Shared fixtures: specs built on the meta device, small real models."""

from __future__ import annotations

import pytest
import torch

from cnnlab.models import build
from cnnlab.specs import Spec


def meta_model(spec: Spec) -> torch.nn.Module:
    """`spec`'s network on the meta device, in eval mode: shapes without memory."""
    with torch.device("meta"):
        return build(spec).eval()


def block_shapes(spec: Spec) -> dict[str, tuple[int, ...]]:
    """Output shape (without batch) of each top-level block, from a meta forward."""
    model = meta_model(spec)
    x = torch.empty(1, spec.in_channels, spec.input_size, spec.input_size, device="meta")
    shapes = {}
    for name, block in model.named_children():
        x = block(x)
        shapes[name] = tuple(x.shape[1:])
    return shapes


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    """A fresh run store directory for the test, also exported as CNNLAB_RUNS."""
    path = tmp_path / "runs"
    monkeypatch.setenv("CNNLAB_RUNS", str(path))
    return path
