"""Which input sizes are too small for a network (exercise 7.4.2): the smallest square input
that builds and runs, and the smallest at which no convolution runs on a 1x1 map.

Searches over sizes on the `meta` device: each probe is a forward pass with cnnlab's fast
shape-only kernels (`ShapeOnly`), so nothing is allocated and a failing size costs little.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import nn

from cnnlab.analysis.layers import LayerTable, inspect_spec_afresh
from cnnlab.analysis.meta import ShapeOnly, meta_input, on_meta_in_eval, to_meta
from cnnlab.arch.checks import MAX_INPUT_SIZE
from cnnlab.arch.models import build
from cnnlab.arch.specs import Spec


def smallest_input(spec: Spec) -> int | None:
    """The smallest square input size (pixels) this spec's network builds and runs at, or None
    if not even MAX_INPUT_SIZE does (exercise 7.4.2 asks it for GoogLeNet). The spec's own
    input size plays no part: the network is rebuilt at each size tried, dense head included.
    Cached by the spec (see search_key)."""
    return _cached_smallest_input(search_key(spec))


def search_key(spec: Spec) -> Spec:
    """The spec both searches run on and are cached by: at MAX_INPUT_SIZE and width 1.

    Neither changes the answer. The input size is what is searched for; the width only scales
    channel counts (never below 1), and whether a window fits its map depends on its kernel,
    stride, padding and the map's size alone. So a width edit on the Architecture page finds
    the answer cached instead of searching again (about 0.1 s for AlexNet on 2 cores)."""
    return spec.replace(input_size=MAX_INPUT_SIZE, width=1.0)


def _smallest_input(spec: Spec) -> int | None:
    def factory(size: int) -> nn.Module:
        return build(spec.replace(input_size=size))

    # A dense head sized for the input (AlexNet, VGG, LeNet) needs a rebuild per size tried;
    # a network that ends in global pooling is the same module at any size: build it once
    # (DenseNet-121: 0.7 s of rebuilds down to one).
    with torch.device("meta"):
        model = factory(MAX_INPUT_SIZE)
        same_at_half = _count(factory(MAX_INPUT_SIZE // 2)) == _count(model)
    return smallest_input_size(model if same_at_half else factory, spec.in_channels,
                               MAX_INPUT_SIZE)


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


_cached_smallest_input = functools.lru_cache(maxsize=128)(_smallest_input)


def smallest_uncollapsed_input(spec: Spec) -> int | None:
    """The smallest square input size at which no convolution runs on a 1x1 map
    (`collapsed_before_end`), or None if not even MAX_INPUT_SIZE: the other half of exercise
    7.4.2, since GoogLeNet's padded pools let it run on a single pixel. Cached by the spec
    (see search_key)."""
    return _cached_smallest_uncollapsed_input(search_key(spec))


def _smallest_uncollapsed_input(spec: Spec) -> int | None:
    low = smallest_input(spec)
    if low is None:
        return None

    def keeps_maps(size: int) -> bool:  # uncached: the search would crowd out the pages' tables
        return collapsed_before_end(inspect_spec_afresh(spec.replace(input_size=size))) is None

    return _lowest(keeps_maps, low, MAX_INPUT_SIZE)


_cached_smallest_uncollapsed_input = functools.lru_cache(maxsize=128)(_smallest_uncollapsed_input)


def collapsed_before_end(table: LayerTable) -> tuple[str, str] | None:
    """(the layer whose output is first 1x1, the first convolution after it) when a
    convolution runs on a 1x1 map, else None. Its 3x3 or 5x5 window then sees one pixel and
    padding: a network can run at such a size (GoogLeNet runs far below the book's 96) and
    still have nothing left to look at."""
    collapsed = None
    for row in table.rows:
        if collapsed is not None and row.kind == "conv":
            return collapsed, row.path
        if collapsed is None and len(row.output_shape) == 3 and row.output_shape[1:] == (1, 1):
            collapsed = row.path
    return None


def smallest_input_size(model_or_factory: nn.Module | Callable[[int], nn.Module],
                        in_channels: int = 1, upper: int = 224) -> int | None:
    """The smallest square input size in [1, upper] for which a meta forward pass works, or
    None if `upper` itself fails.

    Binary search: each conv/pool shrinks the map by a size-monotone rule, so once a size
    works every larger one does. A module's dense head fixes its input size to a narrow range
    around the size it was built for: pass that size as `upper`. A factory (size -> model,
    built here on meta) rebuilds the head for each size, so any `upper` will do.
    """
    return _lowest(_size_probe(model_or_factory, in_channels), 1, upper)


def _lowest(works: Callable[[int], bool], low: int, high: int) -> int | None:
    """The smallest size in [low, high] that `works`, for a test that, once true, stays true
    for every larger size; None if not even `high` works. A binary search."""
    if not works(high):
        return None
    while low < high:  # invariant: `high` works, nothing below `low` does
        middle = (low + high) // 2
        if works(middle):
            high = middle
        else:
            low = middle + 1
    return high


def _size_probe(model_or_factory: nn.Module | Callable[[int], nn.Module],
                in_channels: int) -> Callable[[int], bool]:
    """size -> whether a meta forward pass works at size x size."""
    if isinstance(model_or_factory, nn.Module):
        model = to_meta(model_or_factory)  # once, not per probe

        def build_at(size: int) -> nn.Module:
            return model
    else:
        factory = model_or_factory

        def build_at(size: int) -> nn.Module:
            with torch.device("meta"):
                return factory(size)

    def works(size: int) -> bool:
        try:
            candidate = build_at(size)
            with on_meta_in_eval(candidate) as meta_model, ShapeOnly():
                meta_model(meta_input(meta_model, (1, in_channels, size, size)))
        except Exception:  # any failure means "too small"; InspectionError names the layer
            return False
        return True

    return works
