"""GoogLeNet (d2l 7.4): a stem, then stages of `Inception` blocks, global average pooling."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from cnnlab.arch.checks import MAX_CHANNELS, Checker, check_norm
from cnnlab.arch.families import Family, register
from cnnlab.arch.models.common import conv_relu
from cnnlab.arch.specs import GoogLeNetSpec, InceptionSplit


class Inception(nn.Module):
    """Four parallel paths concatenated on channels (d2l 7.4.1).

    p1: 1x1 conv; p2: 1x1 then 3x3; p3: 1x1 then 5x5; p4: 3x3 max-pool then 1x1.
    (The textbook's p1_1, p2_1 and p2_2, ... are p1, p2[0] and p2[1], ... here.)
    """

    def __init__(self, in_channels: int, c1: int, c2: tuple[int, int], c3: tuple[int, int],
                 c4: int, batch_norm: bool = False, norm_kind: str = "batch",
                 conv_bias: bool = True, norm_affine: bool = True):
        super().__init__()
        norm = dict(batch_norm=batch_norm, norm_kind=norm_kind, conv_bias=conv_bias,
                    norm_affine=norm_affine)
        self.p1 = conv_relu(in_channels, c1, 1, **norm)
        self.p2 = nn.Sequential(conv_relu(in_channels, c2[0], 1, **norm),
                                conv_relu(c2[0], c2[1], 3, padding=1, **norm))
        self.p3 = nn.Sequential(conv_relu(in_channels, c3[0], 1, **norm),
                                conv_relu(c3[0], c3[1], 5, padding=2, **norm))
        self.p4 = nn.Sequential(nn.MaxPool2d(kernel_size=3, stride=1, padding=1),
                                conv_relu(in_channels, c4, 1, **norm))
        self.out_channels = c1 + c2[1] + c3[1] + c4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.p1(x), self.p2(x), self.p3(x), self.p4(x)), dim=1)


def _scaled(split: InceptionSplit, spec: GoogLeNetSpec) -> InceptionSplit:
    c1, (c2a, c2b), (c3a, c3b), c4 = split
    ch = spec.channels
    return ch(c1), (ch(c2a), ch(c2b)), (ch(c3a), ch(c3b)), ch(c4)


def googlenet(spec: GoogLeNetSpec) -> nn.Sequential:
    ch = spec.channels
    norm = dict(batch_norm=spec.batch_norm, norm_kind=spec.norm_kind, conv_bias=spec.conv_bias,
                norm_affine=spec.norm_affine)
    b1 = nn.Sequential(conv_relu(spec.in_channels, ch(64), 7, stride=2, padding=3, **norm),
                       nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
    b2 = nn.Sequential(conv_relu(ch(64), ch(64), 1, **norm),
                       conv_relu(ch(64), ch(192), 3, padding=1, **norm),
                       nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
    stages: list[tuple[str, nn.Module]] = [("b1", b1), ("b2", b2)]
    channels, splits = ch(192), iter(spec.inception)
    for s, count in enumerate(spec.stages):
        blocks: list[nn.Module] = []
        for _ in range(count):
            blocks.append(Inception(channels, *_scaled(next(splits), spec), **norm))
            channels = blocks[-1].out_channels
        last = s == len(spec.stages) - 1
        blocks += [nn.AdaptiveAvgPool2d(1), nn.Flatten()] if last else [
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1)]
        stages.append((f"b{s + 3}", nn.Sequential(*blocks)))
    stages.append(("output", nn.Linear(channels, spec.num_classes)))
    return nn.Sequential(OrderedDict(stages))


def _check(c: Checker, s: GoogLeNetSpec) -> None:
    example = "(64, (96, 128), (16, 32), 32)"
    if c.tuple_of("inception", s.inception, 4, f"({example}, ...)"):
        for i, (c1, c2, c3, c4) in enumerate(s.inception):
            f = f"inception[{i}]"
            c.int_in(f + " c1", c1, 1, MAX_CHANNELS)
            for name, pair in (("c2", c2), ("c3", c3)):
                if c.tuple_of(f + " " + name, pair, None, example, max_items=2, min_items=2):
                    for j, v in enumerate(pair):
                        c.int_in(f"{f} {name}[{j}]", v, 1, MAX_CHANNELS)
            c.int_in(f + " c4", c4, 1, MAX_CHANNELS)
    if c.tuple_of("stages", s.stages, None, "(2, 5, 2)", max_items=8):
        counted = [c.int_in(f"stages[{i}]", v, 1, 32) for i, v in enumerate(s.stages)]
        if all(counted) and isinstance(s.inception, (tuple, list)) \
                and sum(s.stages) != len(s.inception):
            c.error("stages", f"the stages hold {sum(s.stages)} Inception blocks but "
                    f"`inception` lists {len(s.inception)}",
                    "make the stage sizes add up to the number of Inception blocks")
        if all(counted):  # six convolutions per Inception block, three in the stem
            c.conv_budget("stages", 6 * sum(s.stages) + 3)
    c.flag("batch_norm", s.batch_norm)
    check_norm(c, s, "" if s.batch_norm is True else "batch_norm is off")


register(Family(
    name="googlenet", title="GoogLeNet", spec=GoogLeNetSpec, build=googlenet, check=_check,
    recipe=lambda spec: "googlenet",
    # Four parallel paths keep more activations alive (measured: cnnlab.training.resources).
    eval_slack=3.0,
))
