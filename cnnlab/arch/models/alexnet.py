"""AlexNet (d2l 7.1): five convolutions, three max-pools, a wide dense head with dropout."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from cnnlab.arch.checks import MAX_CHANNELS, Checker
from cnnlab.arch.families import Family, register
from cnnlab.arch.models.common import conv_relu, dense_head, flat_features
from cnnlab.arch.specs import AlexNetSpec


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


def _check(c: Checker, s: AlexNetSpec) -> None:
    if c.tuple_of("convs", s.convs, 4, "((96, 11, 4, 0), (256, 5, 1, 2))"):
        for i, (ch, k, st, p) in enumerate(s.convs):
            f = f"convs[{i}]"
            c.int_in(f + " channels", ch, 1, MAX_CHANNELS)
            c.int_in(f + " kernel", k, 1, 31)
            c.int_in(f + " stride", st, 1, 16)
            c.int_in(f + " padding", p, 0, 15)
        if c.tuple_of("pool_after", s.pool_after, None, "(0, 1, 4)", min_items=0):
            for i, v in enumerate(s.pool_after):
                c.int_in(f"pool_after[{i}]", v, 0, len(s.convs) - 1, "a conv index")
    c.units("hidden", s.hidden)
    c.number_in("dropout", s.dropout, 0, 1, high_open=True)


register(Family(
    name="alexnet", title="AlexNet", spec=AlexNetSpec, build=alexnet, check=_check,
    recipe=lambda spec: "alexnet",
))
