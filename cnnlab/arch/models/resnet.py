"""ResNet (d2l 7.6): a 7x7 stem, stages of `Residual` blocks, global average pooling.

Beyond the book: bottleneck blocks (exercise 7.6.2) and the pre-activation order BN, ReLU,
conv (exercise 7.6.3), as options of the book's `Residual` rather than parallel copies.
"""

from __future__ import annotations

from collections import OrderedDict

from typing import Any

import torch
from torch import nn

from cnnlab.arch.checks import MAX_CHANNELS, MAX_CONVS_PER_BLOCK, Checker, check_norm, is_int
from cnnlab.arch.families import Family, register
from cnnlab.arch.models.common import norm2d
from cnnlab.arch.specs import CHOICES, ResNetSpec


class Residual(nn.Module):
    """The residual block of d2l 7.6.2: `relu(F(x) + x)`.

    `use_1x1conv` adds a 1x1 conv on the skip path (the book's `conv3`, called `shortcut` here)
    so that channels and stride can change. `bottleneck` replaces the two 3x3 convs with
    1x1 (to channels/4), 3x3, 1x1 (`conv3`, as in torchvision's Bottleneck). `preact` orders
    each layer BN, ReLU, conv and drops the ReLU after the addition. `norm_kind` picks the
    layer in BN's place (`norm2d`; "none": nn.Identity, so the names stay); `conv_bias=False`
    drops the biases the norms absorb, `norm_affine=False` their gamma and beta.
    """

    def __init__(self, in_channels: int, num_channels: int, use_1x1conv: bool = False,
                 strides: int = 1, bottleneck: bool = False, preact: bool = False,
                 norm_kind: str = "batch", conv_bias: bool = True, norm_affine: bool = True):
        super().__init__()
        self.preact = preact
        self.bottleneck = bottleneck
        mid = max(1, num_channels // 4) if bottleneck else num_channels
        bias = conv_bias or norm_kind == "none"

        def norm(c_in: int, c_out: int) -> nn.Module:
            # Pre-activation normalises the conv's input, post-activation its output.
            layer = norm2d(norm_kind, c_in if preact else c_out, norm_affine)
            return nn.Identity() if layer is None else layer

        if bottleneck:  # the stride sits on the 3x3 conv, as in torchvision
            self.conv1 = nn.Conv2d(in_channels, mid, kernel_size=1, bias=bias)
            self.bn1, self.relu1 = norm(in_channels, mid), nn.ReLU()
            self.conv2 = nn.Conv2d(mid, mid, kernel_size=3, stride=strides, padding=1, bias=bias)
            self.bn2, self.relu2 = norm(mid, mid), nn.ReLU()
            self.conv3 = nn.Conv2d(mid, num_channels, kernel_size=1, bias=bias)
            self.bn3, self.relu3 = norm(mid, num_channels), nn.ReLU()
        else:
            self.conv1 = nn.Conv2d(in_channels, mid, kernel_size=3, stride=strides, padding=1,
                                   bias=bias)
            self.bn1, self.relu1 = norm(in_channels, mid), nn.ReLU()
            self.conv2 = nn.Conv2d(mid, num_channels, kernel_size=3, padding=1, bias=bias)
            self.bn2, self.relu2 = norm(mid, num_channels), nn.ReLU()
        self.shortcut = nn.Conv2d(in_channels, num_channels, 1, strides) if use_1x1conv else None
        self.relu_out = None if preact else nn.ReLU()

    def main_path(self) -> list[tuple[nn.Conv2d, nn.Module, nn.ReLU]]:
        """(conv, BN, ReLU) of each layer of F, in order."""
        layers = [(self.conv1, self.bn1, self.relu1), (self.conv2, self.bn2, self.relu2)]
        if self.bottleneck:
            layers.append((self.conv3, self.bn3, self.relu3))
        return layers

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        Y = X
        layers = self.main_path()
        for i, (conv, bn, relu) in enumerate(layers, start=1):
            if self.preact:
                Y = conv(relu(bn(Y)))
            else:
                Y = bn(conv(Y))
                if i < len(layers):  # the last ReLU waits until after the addition
                    Y = relu(Y)
        if self.shortcut is not None:
            X = self.shortcut(X)
        Y = Y + X
        return Y if self.relu_out is None else self.relu_out(Y)


def resnet_block(in_channels: int, num_channels: int, num_residuals: int,
                 first_block: bool = False, bottleneck: bool = False,
                 preact: bool = False, **norm: Any) -> nn.Sequential:
    """A stage: the first block halves height and width (unless `first_block`, which follows
    the stem's max-pool) and adapts the channels with a 1x1 conv when they change. `norm`:
    `Residual`'s norm_kind, conv_bias and norm_affine."""
    blocks = []
    for i in range(num_residuals):
        if i == 0:
            strides = 1 if first_block else 2
            use_1x1 = strides != 1 or in_channels != num_channels
            blocks.append(Residual(in_channels, num_channels, use_1x1, strides, bottleneck, preact,
                                   **norm))
        else:
            blocks.append(Residual(num_channels, num_channels, bottleneck=bottleneck,
                                   preact=preact, **norm))
    return nn.Sequential(*blocks)


def _stem_norm(spec: ResNetSpec, channels: int) -> list[nn.Module]:
    layer = norm2d(spec.norm_kind, channels, spec.norm_affine)
    return [] if layer is None else [layer]


def resnet(spec: ResNetSpec) -> nn.Sequential:
    stem_channels = spec.channels(spec.stem_channels)
    norm = dict(norm_kind=spec.norm_kind, conv_bias=spec.conv_bias,
                norm_affine=spec.norm_affine)
    stem_norm = _stem_norm(spec, stem_channels)
    layers: list[tuple[str, nn.Module]] = [("stem", nn.Sequential(
        nn.Conv2d(spec.in_channels, stem_channels, kernel_size=7, stride=2, padding=3,
                  bias=spec.conv_bias or not stem_norm),
        *stem_norm, nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2, padding=1)))]
    channels = stem_channels
    for i, (num_residuals, out) in enumerate(spec.stages):
        out = spec.channels(out)
        layers.append((f"resnet_block{i + 1}", resnet_block(
            channels, out, num_residuals, first_block=i == 0,
            bottleneck=spec.block == "bottleneck", preact=spec.preact, **norm)))
        channels = out
    if spec.preact:  # pre-activation blocks end on a conv: normalise before pooling
        layers.append(("final_norm", nn.Sequential(*_stem_norm(spec, channels), nn.ReLU())))
    layers += [("global_avg_pool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()),
               ("output", nn.Linear(channels, spec.num_classes))]
    return nn.Sequential(OrderedDict(layers))


def _check(c: Checker, s: ResNetSpec) -> None:
    c.int_in("stem_channels", s.stem_channels, 1, MAX_CHANNELS)
    if c.tuple_of("stages", s.stages, 2, "((2, 64), (2, 128), (2, 256), (2, 512))"):
        for i, (n, ch) in enumerate(s.stages):
            c.int_in(f"stages[{i}] num_residuals", n, 1, MAX_CONVS_PER_BLOCK)
            c.int_in(f"stages[{i}] channels", ch, 1, MAX_CHANNELS)
            if s.block == "bottleneck" and is_int(ch) and ch % 4:
                c.warn(f"stages[{i}] channels", f"{ch} is not a multiple of 4, so the "
                       "bottleneck width is rounded down", "use a multiple of 4")
        # Two or three convolutions per block, at most one 1x1 shortcut per stage, the stem.
        per_block = 3 if s.block == "bottleneck" else 2
        c.conv_budget("stages", 1 + len(s.stages) + per_block * sum(
            n for n, _ in s.stages if is_int(n)))
    c.choice("block", s.block, CHOICES["block"])
    c.flag("preact", s.preact)
    check_norm(c, s)


register(Family(
    name="resnet", title="ResNet", spec=ResNetSpec, build=resnet, check=_check,
    recipe=lambda spec: "resnet18",
    # Shortcuts keep the block input alive while evaluating (cnnlab.training.resources).
    eval_slack=3.0,
))
