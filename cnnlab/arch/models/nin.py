"""Network in Network (d2l 7.3): `nin_block`s (a conv, then 1x1 convs), global average pooling."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from cnnlab.arch.checks import MAX_CHANNELS, Checker
from cnnlab.arch.families import Family, register
from cnnlab.arch.models.common import conv_relu
from cnnlab.arch.specs import NiNSpec


def nin_block(
    in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int,
    one_by_one: int = 2,
) -> nn.Sequential:
    """A conv, then `one_by_one` 1x1 convs: a per-pixel MLP over the channels (d2l 7.3.1)."""
    layers = [conv_relu(in_channels, out_channels, kernel_size, stride, padding)]
    layers += [conv_relu(out_channels, out_channels, 1) for _ in range(one_by_one)]
    return nn.Sequential(*layers)


def nin(spec: NiNSpec) -> nn.Sequential:
    layers: list[tuple[str, nn.Module]] = []
    channels = spec.in_channels
    for i, (out, kernel, stride, padding, pool_kernel, pool_stride) in enumerate(spec.blocks):
        out = spec.channels(out)
        layers.append((f"nin_block{i + 1}", nin_block(channels, out, kernel, stride, padding, spec.one_by_one)))
        layers.append((f"pool{i + 1}", nn.MaxPool2d(pool_kernel, pool_stride)))
        channels = out
    # The last block has one channel per class; averaging each map gives the logits.
    layers += [
        ("dropout", nn.Dropout(spec.dropout)),
        (f"nin_block{len(spec.blocks) + 1}", nin_block(channels, spec.num_classes, 3, 1, 1, spec.one_by_one)),
        ("global_avg_pool", nn.AdaptiveAvgPool2d(1)),
        ("flatten", nn.Flatten()),
    ]
    return nn.Sequential(OrderedDict(layers))


def _check(c: Checker, s: NiNSpec) -> None:
    if c.tuple_of("blocks", s.blocks, 6, "((96, 11, 4, 0, 3, 2), (256, 5, 1, 2, 3, 2))"):
        names = ("channels", "kernel", "stride", "padding", "pool_kernel", "pool_stride")
        highs = (MAX_CHANNELS, 31, 16, 15, 15, 15)
        for i, block in enumerate(s.blocks):
            for name, v, high in zip(names, block, highs):
                c.int_in(f"blocks[{i}] {name}", v, 0 if name == "padding" else 1, high)
    if c.int_in("one_by_one", s.one_by_one, 0, 8) and isinstance(s.blocks, tuple):
        # Each block is a conv and its 1x1s; a last such block maps to the classes.
        c.conv_budget("blocks", (len(s.blocks) + 1) * (1 + s.one_by_one))
    c.number_in("dropout", s.dropout, 0, 1, high_open=True)


register(Family(
    name="nin", title="NiN", spec=NiNSpec, build=nin, check=_check,
    recipe=lambda spec: "nin",
))
