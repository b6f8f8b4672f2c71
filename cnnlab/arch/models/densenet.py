"""DenseNet (d2l 7.7): a 7x7 stem, `DenseBlock`s that concatenate, `transition_block`s.

Beyond the book: DenseNet-BC's bottleneck (a 1x1 conv to 4 x growth rate before each 3x3)
and the transition's compression factor (the book halves the channels: compression 0.5).
`norm_kind`, `conv_bias` and `norm_affine` change the norm before each conv (exercises of
7.5); a conv keeps its bias unless `conv_bias` is off and a norm follows it: every output here
meets one (the next conv block's, the transition's or the final one) before another conv.
"""

from __future__ import annotations

from collections import OrderedDict

from typing import Any

import torch
from torch import nn

from cnnlab.arch.checks import MAX_CHANNELS, Checker, check_norm, is_int
from cnnlab.arch.families import Family, register
from cnnlab.arch.models.common import norm2d
from cnnlab.arch.specs import CHOICES, DenseNetSpec


def norm_relu(channels: int, norm_kind: str = "batch", norm_affine: bool = True) -> list[nn.Module]:
    """BN (or the `norm2d` of `norm_kind`, or nothing), then ReLU: what precedes each conv."""
    layer = norm2d(norm_kind, channels, norm_affine)
    return ([] if layer is None else [layer]) + [nn.ReLU()]


def conv_block(in_channels: int, num_channels: int, bottleneck: bool = False,
               norm_kind: str = "batch", conv_bias: bool = True,
               norm_affine: bool = True) -> nn.Sequential:
    """BN, ReLU, 3x3 conv (d2l 7.7.2); with `bottleneck`, a BN, ReLU, 1x1 conv goes first."""
    bias = conv_bias or norm_kind == "none"
    layers: list[nn.Module] = []
    if bottleneck:
        wide = 4 * num_channels
        layers += [*norm_relu(in_channels, norm_kind, norm_affine),
                   nn.Conv2d(in_channels, wide, 1, bias=bias)]
        in_channels = wide
    layers += [*norm_relu(in_channels, norm_kind, norm_affine),
               nn.Conv2d(in_channels, num_channels, kernel_size=3, padding=1, bias=bias)]
    return nn.Sequential(*layers)


class DenseBlock(nn.Module):
    """`num_convs` conv blocks; each one's output is concatenated to its input on channels."""

    def __init__(self, num_convs: int, in_channels: int, num_channels: int,
                 bottleneck: bool = False, **norm: Any):
        super().__init__()
        self.net = nn.Sequential(*(
            conv_block(in_channels + i * num_channels, num_channels, bottleneck, **norm)
            for i in range(num_convs)))
        self.out_channels = in_channels + num_convs * num_channels

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        for blk in self.net:
            Y = blk(X)
            X = torch.cat((X, Y), dim=1)
        return X


def transition_block(in_channels: int, num_channels: int, pool: str = "avg",
                     norm_kind: str = "batch", conv_bias: bool = True,
                     norm_affine: bool = True) -> nn.Sequential:
    """BN, ReLU, a 1x1 conv to `num_channels`, a 2x2 average pool (d2l 7.7.3); `pool="max"`
    takes the maximum instead (exercise 7.7.1)."""
    pooling = nn.AvgPool2d if pool == "avg" else nn.MaxPool2d
    return nn.Sequential(*norm_relu(in_channels, norm_kind, norm_affine),
                         nn.Conv2d(in_channels, num_channels, kernel_size=1,
                                   bias=conv_bias or norm_kind == "none"),
                         pooling(kernel_size=2, stride=2))


def densenet(spec: DenseNetSpec) -> nn.Sequential:
    channels, growth_rate = spec.channels(spec.stem_channels), spec.channels(spec.growth_rate)
    norm = dict(norm_kind=spec.norm_kind, conv_bias=spec.conv_bias,
                norm_affine=spec.norm_affine)
    layers: list[tuple[str, nn.Module]] = [("stem", nn.Sequential(
        nn.Conv2d(spec.in_channels, channels, kernel_size=7, stride=2, padding=3,
                  bias=spec.conv_bias or spec.norm_kind == "none"),
        *norm_relu(channels, spec.norm_kind, spec.norm_affine),
        nn.MaxPool2d(kernel_size=3, stride=2, padding=1)))]
    for i, num_convs in enumerate(spec.block_sizes):
        block = DenseBlock(num_convs, channels, growth_rate, spec.bottleneck, **norm)
        layers.append((f"dense_block{i + 1}", block))
        channels = block.out_channels
        if i != len(spec.block_sizes) - 1:  # a transition between dense blocks, not after
            reduced = max(1, int(channels * spec.compression))
            layers.append((f"transition_block{i + 1}", transition_block(
                channels, reduced, spec.transition_pool, **norm)))
            channels = reduced
    layers += [("final_norm", nn.Sequential(*norm_relu(channels, spec.norm_kind,
                                                       spec.norm_affine))),
               ("global_avg_pool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()),
               ("output", nn.Linear(channels, spec.num_classes))]
    return nn.Sequential(OrderedDict(layers))


def _check(c: Checker, s: DenseNetSpec) -> None:
    c.int_in("stem_channels", s.stem_channels, 1, MAX_CHANNELS)
    c.int_in("growth_rate", s.growth_rate, 1, 1024)
    if c.tuple_of("block_sizes", s.block_sizes, None, "(4, 4, 4, 4)", max_items=16):
        for i, v in enumerate(s.block_sizes):
            c.int_in(f"block_sizes[{i}]", v, 1, 128)
        # One (or, with bottlenecks, two) convolutions per layer, a transition between blocks.
        per_layer = 2 if s.bottleneck is True else 1
        c.conv_budget("block_sizes", len(s.block_sizes) + per_layer * sum(
            v for v in s.block_sizes if is_int(v)))
    c.number_in("compression", s.compression, 0, 1, low_open=True)
    c.flag("bottleneck", s.bottleneck)
    c.choice("transition_pool", s.transition_pool, CHOICES["transition_pool"])
    check_norm(c, s)


register(Family(
    name="densenet", title="DenseNet", spec=DenseNetSpec, build=densenet, check=_check,
    recipe=lambda spec: "densenet",
    # Autograd keeps more than one copy of each output here: peak RSS was 1.7x the table's
    # activations before the table counted the blocks' intermediate concatenations (21% more
    # bytes), so 1.8 then is 1.4 now (cnnlab.training.resources).
    eval_slack=3.0,
))
