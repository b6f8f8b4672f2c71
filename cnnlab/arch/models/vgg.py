"""VGG (d2l 7.2): `vgg_block`s from `conv_arch`, then AlexNet's dense head.

Beyond the book: a global-average-pooling head as in NiN (`head="gap"`, exercise 7.2.1 asks
where the parameters are) and the normalization switches of 7.5's exercises.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from cnnlab.arch.checks import MAX_CHANNELS, MAX_CONVS_PER_BLOCK, Checker, check_norm, echo, is_int
from cnnlab.arch.families import Family, register
from cnnlab.arch.models.common import conv_relu, dense_head, flat_features
from cnnlab.arch.specs import CHOICES, VGGSpec


def vgg_block(
    num_convs: int, in_channels: int, out_channels: int, batch_norm: bool = False,
    norm_kind: str = "batch", conv_bias: bool = True, norm_affine: bool = True,
) -> nn.Sequential:
    """`num_convs` 3x3 convolutions (padding 1, so the size stays), then a 2x2 max-pool."""
    layers = []
    for _ in range(num_convs):
        layers.append(conv_relu(in_channels, out_channels, 3, padding=1, batch_norm=batch_norm,
                                norm_kind=norm_kind, conv_bias=conv_bias,
                                norm_affine=norm_affine))
        in_channels = out_channels
    layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers)


def vgg(spec: VGGSpec) -> nn.Sequential:
    blocks: list[tuple[str, nn.Module]] = []
    channels = spec.in_channels
    for i, (num_convs, out) in enumerate(spec.conv_arch):
        out = spec.channels(out)
        blocks.append((f"vgg_block{i + 1}", vgg_block(
            num_convs, channels, out, spec.batch_norm, spec.norm_kind, spec.conv_bias,
            spec.norm_affine)))
        channels = out
    flat = flat_features(nn.Sequential(OrderedDict(blocks)), channels, spec.input_size)
    if spec.head == "gap":  # NiN's idea: average each map, so the head sees `channels` numbers
        head: list[tuple[str, nn.Module]] = [("global_avg_pool", nn.AdaptiveAvgPool2d(1))]
        head += dense_head(channels, spec.hidden, spec.num_classes, spec.dropout,
                           *_head_norm(spec))
    else:
        head = dense_head(flat, spec.hidden, spec.num_classes, spec.dropout, *_head_norm(spec))
    return nn.Sequential(OrderedDict(blocks + head))


def _head_norm(spec: VGGSpec) -> tuple[str, bool, bool]:
    """`dense_head`'s (norm_kind, bias, norm_affine): a norm after each hidden dense layer
    only with both batch_norm and norm_in_head."""
    kind = spec.norm_kind if spec.batch_norm and spec.norm_in_head else "none"
    return kind, spec.conv_bias, spec.norm_affine


def _check(c: Checker, s: VGGSpec) -> None:
    if c.tuple_of("conv_arch", s.conv_arch, 2, "((1, 64), (1, 128), (2, 256))"):
        for i, (n, ch) in enumerate(s.conv_arch):
            f = f"conv_arch[{i}]"
            if c.int_in(f + " num_convs", n, 1, MAX_CONVS_PER_BLOCK) and n > 8:
                c.warn(f + " num_convs", f"a vgg_block of {n} convolutions is unusually deep "
                       "(VGG-19 has at most 4 per block)", f"did you mean ({n // 10}, {ch})?"
                       if n >= 10 else "check the first number of the pair")
            c.int_in(f + " channels", ch, 1, MAX_CHANNELS)
        c.conv_budget("conv_arch", sum(n for n, _ in s.conv_arch if is_int(n)))
    c.units("hidden", s.hidden)
    c.number_in("dropout", s.dropout, 0, 1, high_open=True)
    c.flag("batch_norm", s.batch_norm)
    check_norm(c, s, "" if s.batch_norm is True else "batch_norm is off")
    c.flag("norm_in_head", s.norm_in_head)
    if s.norm_in_head is True and s.batch_norm is not True:
        c.warn("norm_in_head", "has no effect while batch_norm is off",
               "turn batch_norm on to normalize the dense layers too")
    if c.choice("head", s.head, CHOICES["head"]) and s.head == "gap" and s.hidden:
        c.warn("head", f"the global-average-pooling head still has the hidden dense layers "
               f"{echo(s.hidden)}", "empty `hidden` for NiN's head: pooling, then one Linear")


register(Family(
    name="vgg", title="VGG", spec=VGGSpec, build=vgg, check=_check,
    recipe=lambda spec: "vgg11-small",
))
