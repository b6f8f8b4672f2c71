"""Sizes as the code base reads and writes them: a kernel or stride as (height, width), a
tensor shape as "64x24x24" text, the side a sliding window leaves. Shared by the models, the
layer table, the diagram and the views, so the notation and the arithmetic are the same
everywhere."""

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


def window_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0,
                       dilation: int = 1, ceil_mode: bool = False) -> int:
    """The output side of a convolution or pooling window sliding over `size` pixels, exactly
    as PyTorch computes it: floor((n + 2p - d(k - 1) - 1) / s) + 1 (d2l 6.3's formula, with
    dilation). Ceil mode rounds up, but drops a last window that would start in the padding
    (aten's pooling_output_shape). Below 1 when the map shrinks to nothing: PyTorch raises."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def shape_text(shape: Sequence[int] | None, sep: str = "x", empty: str = "") -> str:
    """(64, 24, 24) -> "64x24x24"; `empty` when there is no shape (None or a scalar's ())."""
    return sep.join(map(str, shape)) if shape else empty
