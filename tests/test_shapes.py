"""cnnlab.shapes.window_output_size: one sliding-window formula, equal to PyTorch's own, used by
the models' dense-head sizing and the fast meta kernels."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from cnnlab.analysis.meta import ShapeOnly, to_meta
from cnnlab.arch.models.common import SpatialCollapse, flat_features
from cnnlab.shapes import window_output_size

KERNELS, STRIDES, PADDINGS, DILATIONS = (1, 2, 3, 4), (1, 2, 3), (0, 1, 2), (1, 2)
SIZES = range(1, 10)


def layers(kernel: int, stride: int, padding: int, dilation: int,
           ceil_mode: bool) -> list[nn.Module]:
    """The window layers PyTorch runs with these numbers (pools refuse padding over half of
    their kernel whatever the size; AvgPool2d has no dilation, Conv2d no ceil mode)."""
    found: list[nn.Module] = []
    if not ceil_mode:
        found.append(nn.Conv2d(1, 1, kernel, stride, padding, dilation))
    if 2 * padding <= kernel:
        found.append(nn.MaxPool2d(kernel, stride, padding, dilation, ceil_mode=ceil_mode))
        if dilation == 1:
            found.append(nn.AvgPool2d(kernel, stride, padding, ceil_mode=ceil_mode))
    return found


def torch_side(layer: nn.Module, size: int) -> int | None:
    """The output side PyTorch gives on the CPU, or None when it refuses the size."""
    try:
        return layer(torch.zeros(1, 1, size, size)).shape[-1]
    except RuntimeError:
        return None


GRID = [(k, s, p, d, ceil) for k, s, p, d, ceil in
        itertools.product(KERNELS, STRIDES, PADDINGS, DILATIONS, (False, True))]


@pytest.mark.parametrize("kernel, stride, padding, dilation, ceil_mode", GRID)
def test_the_window_formula_gives_pytorchs_output_side(kernel, stride, padding, dilation,
                                                       ceil_mode):
    for layer, size in itertools.product(layers(kernel, stride, padding, dilation, ceil_mode),
                                         SIZES):
        side = window_output_size(size, kernel, stride, padding, dilation, ceil_mode)
        assert torch_side(layer, size) == (side if side >= 1 else None), (layer, size)


@pytest.mark.parametrize("kernel, stride, padding, dilation, ceil_mode", GRID)
def test_dense_head_sizing_and_the_meta_kernels_agree_with_pytorch(kernel, stride, padding,
                                                                   dilation, ceil_mode):
    for layer in layers(kernel, stride, padding, dilation, ceil_mode):
        meta_layer = to_meta(layer)
        for size in SIZES:
            side = torch_side(layer, size)
            meta_input = torch.zeros(1, 1, size, size, device="meta")
            if side is None:
                with pytest.raises(SpatialCollapse):
                    flat_features(nn.Sequential(layer), 1, size)
                with pytest.raises(RuntimeError), ShapeOnly():
                    meta_layer(meta_input)
                continue
            assert flat_features(nn.Sequential(layer), 1, size) == side * side, (layer, size)
            with ShapeOnly():
                assert meta_layer(meta_input).shape[-2:] == (side, side), (layer, size)


def test_ceil_mode_drops_a_last_window_that_would_start_in_the_padding():
    # 5 pixels, a 2x2 pool with stride 2 and padding 1: windows start at -1, 1, 3; a fourth
    # would start at 5, in the padding alone, so PyTorch keeps 3 where ceil(4/2) + 1 says 4.
    assert window_output_size(5, 2, 2, 1, ceil_mode=True) == 3
    assert nn.MaxPool2d(2, 2, 1, ceil_mode=True)(torch.zeros(1, 1, 5, 5)).shape[-1] == 3
