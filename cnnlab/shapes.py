"""Sizes as the code base reads and writes them: a kernel or stride as (height, width), a
tensor shape as "64x24x24" text. Shared by the models, the layer table, the diagram and the
views, so the notation is the same everywhere."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def pair(value: Any) -> tuple[Any, Any]:
    """(height, width) of a size PyTorch accepts as k, (k,) or (h, w): 3 -> (3, 3)."""
    return (value, value) if isinstance(value, int) else (value[0], value[-1])


def largest_side(value: Any, default: int) -> int:
    """The larger side of `pair(value)`, or `default` for an empty list (how aten passes an
    argument left out, such as a pool's stride)."""
    if isinstance(value, (list, tuple)) and not value:
        return default
    return int(max(pair(value)))


def shape_text(shape: Sequence[int] | None, sep: str = "x", empty: str = "") -> str:
    """(64, 24, 24) -> "64x24x24"; `empty` when there is no shape (None or a scalar's ())."""
    return sep.join(map(str, shape)) if shape else empty
