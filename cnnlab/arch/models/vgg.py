"""VGG (d2l 7.2): `vgg_block`s from `conv_arch`, then AlexNet's dense head."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from cnnlab.arch.models import register
from cnnlab.arch.models.common import conv_relu, dense_head, flat_features
from cnnlab.arch.specs import VGGSpec


def vgg_block(
    num_convs: int, in_channels: int, out_channels: int, batch_norm: bool = False
) -> nn.Sequential:
    """`num_convs` 3x3 convolutions (padding 1, so the size stays), then a 2x2 max-pool."""
    layers = []
    for _ in range(num_convs):
        layers.append(conv_relu(in_channels, out_channels, 3, padding=1, batch_norm=batch_norm))
        in_channels = out_channels
    layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers)


@register("vgg")
def vgg(spec: VGGSpec) -> nn.Sequential:
    blocks: list[tuple[str, nn.Module]] = []
    channels = spec.in_channels
    for i, (num_convs, out) in enumerate(spec.conv_arch):
        out = spec.channels(out)
        blocks.append((f"vgg_block{i + 1}", vgg_block(num_convs, channels, out, spec.batch_norm)))
        channels = out
    flat = flat_features(nn.Sequential(OrderedDict(blocks)), channels, spec.input_size)
    head = dense_head(flat, spec.hidden, spec.num_classes, spec.dropout)
    return nn.Sequential(OrderedDict(blocks + head))
