"""AlexNet (d2l 7.1): five convolutions, three max-pools, a wide dense head with dropout."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from cnnlab.arch.models import register
from cnnlab.arch.models.common import conv_relu, dense_head, flat_features
from cnnlab.arch.specs import AlexNetSpec


@register("alexnet")
def alexnet(spec: AlexNetSpec) -> nn.Sequential:
    features: list[tuple[str, nn.Module]] = []
    channels = spec.in_channels
    for i, (out, kernel, stride, padding) in enumerate(spec.convs):
        out = spec.channels(out)
        features.append((f"conv{i + 1}", conv_relu(channels, out, kernel, stride, padding)))
        if i in spec.pool_after:
            features.append((f"pool{i + 1}", nn.MaxPool2d(kernel_size=3, stride=2)))
        channels = out
    body = nn.Sequential(OrderedDict(features))
    flat = flat_features(body, channels, spec.input_size)
    head = dense_head(flat, spec.hidden, spec.num_classes, spec.dropout)
    return nn.Sequential(OrderedDict(features + head))
