"""Architecture specs: one frozen dataclass per family, holding numbers only.

A spec is data. The app edits it, JSON stores it, `cnnlab.arch.models.build` turns it into an
`nn.Module`. Defaults are the textbook's (Dive into Deep Learning, chapter 7); the presets
at the bottom name where each number comes from. Checking a spec is `cnnlab.arch.checks`'s job.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, ClassVar

# A NiN or AlexNet conv layer: (channels, kernel, stride, padding).
ConvLayer = tuple[int, int, int, int]
# A GoogLeNet Inception block: (c1, (c2a, c2b), (c3a, c3b), c4), as in d2l 7.4.1.
InceptionSplit = tuple[int, tuple[int, int], tuple[int, int], int]


@dataclass(frozen=True, kw_only=True)
class Spec:
    """Fields every family shares. `width` scales every channel count (the textbook's 1/ratio)."""

    family: ClassVar[str] = ""
    input_size: int = 224
    in_channels: int = 1
    num_classes: int = 10
    width: float = 1.0

    def channels(self, c: int) -> int:
        """A channel count after the width multiplier (never below 1)."""
        return max(1, round(c * self.width))

    def replace(self, **changes: Any) -> Spec:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, **dataclasses.asdict(self)}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)


@dataclass(frozen=True, kw_only=True)
class AlexNetSpec(Spec):
    """AlexNet (d2l 7.1.2): conv layers, 3x3/2 max-pools after some of them, a dense head."""

    family: ClassVar[str] = "alexnet"
    convs: tuple[ConvLayer, ...] = (
        (96, 11, 4, 0),  # 224 -> 54x54, as printed in 7.1.2
        (256, 5, 1, 2),
        (384, 3, 1, 1),
        (384, 3, 1, 1),
        (256, 3, 1, 1),
    )
    pool_after: tuple[int, ...] = (0, 1, 4)  # indices of the convs followed by MaxPool(3, 2)
    hidden: tuple[int, ...] = (4096, 4096)
    dropout: float = 0.5


@dataclass(frozen=True, kw_only=True)
class VGGSpec(Spec):
    """VGG (d2l 7.2): `conv_arch` is a tuple of (num_convs, channels), one per `vgg_block`."""

    family: ClassVar[str] = "vgg"
    conv_arch: tuple[tuple[int, int], ...] = ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512))
    hidden: tuple[int, ...] = (4096, 4096)
    dropout: float = 0.5
    batch_norm: bool = False


@dataclass(frozen=True, kw_only=True)
class NiNSpec(Spec):
    """NiN (d2l 7.3): `nin_block`s, each followed by a max-pool, then a class-channel block + GAP.

    A block is (channels, kernel, stride, padding, pool_kernel, pool_stride).
    """

    family: ClassVar[str] = "nin"
    blocks: tuple[tuple[int, int, int, int, int, int], ...] = (
        (96, 11, 4, 0, 3, 2),
        (256, 5, 1, 2, 3, 2),
        (384, 3, 1, 1, 3, 2),
    )
    one_by_one: int = 2  # 1x1 convs per nin_block; exercise 7.3.2 asks what one would do
    dropout: float = 0.5


@dataclass(frozen=True, kw_only=True)
class GoogLeNetSpec(Spec):
    """GoogLeNet (d2l 7.4): stem b1, b2, then Inception stages b3, b4, b5 split by `stages`."""

    family: ClassVar[str] = "googlenet"
    input_size: int = 96
    inception: tuple[InceptionSplit, ...] = (
        (64, (96, 128), (16, 32), 32),  # b3
        (128, (128, 192), (32, 96), 64),
        (192, (96, 208), (16, 48), 64),  # b4
        (160, (112, 224), (24, 64), 64),
        (128, (128, 256), (24, 64), 64),
        (112, (144, 288), (32, 64), 64),
        (256, (160, 320), (32, 128), 128),
        (256, (160, 320), (32, 128), 128),  # b5
        (384, (192, 384), (48, 128), 128),
    )
    stages: tuple[int, ...] = (2, 5, 2)  # Inception blocks in b3, b4, b5
    batch_norm: bool = False  # exercise 7.4.1


@dataclass(frozen=True, kw_only=True)
class LeNetSpec(Spec):
    """LeNet (d2l 6.6) and BN-LeNet (d2l 7.5.4): two 5x5 convs, pools, three dense layers."""

    family: ClassVar[str] = "lenet"
    input_size: int = 28
    conv_channels: tuple[int, int] = (6, 16)
    hidden: tuple[int, ...] = (120, 84)
    first_padding: int = 2  # 6.6 pads the first conv; the BN-LeNet of 7.5.4 does not
    pool: str = "avg"  # "avg" (6.6) or "max" (7.5.4)
    activation: str = "sigmoid"  # "sigmoid" or "relu"
    batch_norm: str = "none"  # "none", "scratch" (d2l's batch_norm function) or "torch"


@dataclass(frozen=True, kw_only=True)
class ResNetSpec(Spec):
    """ResNet (d2l 7.6): a 7x7 stem, then stages of (num_residuals, channels) `Residual` blocks."""

    family: ClassVar[str] = "resnet"
    input_size: int = 96
    stem_channels: int = 64
    stages: tuple[tuple[int, int], ...] = ((2, 64), (2, 128), (2, 256), (2, 512))
    block: str = "basic"  # "basic" (two 3x3) or "bottleneck" (1x1, 3x3, 1x1; exercise 7.6.2)
    preact: bool = False  # BN, ReLU, conv order (exercise 7.6.3)


@dataclass(frozen=True, kw_only=True)
class DenseNetSpec(Spec):
    """DenseNet (d2l 7.7): a 7x7 stem, `DenseBlock`s joined by `transition_block`s."""

    family: ClassVar[str] = "densenet"
    input_size: int = 96
    stem_channels: int = 64
    growth_rate: int = 32
    block_sizes: tuple[int, ...] = (4, 4, 4, 4)  # convs per dense block
    compression: float = 0.5  # transition blocks keep this share of the channels
    bottleneck: bool = False  # DenseNet-BC: a 1x1 conv to 4 * growth_rate before each 3x3


FAMILIES: dict[str, type[Spec]] = {
    cls.family: cls
    for cls in (AlexNetSpec, VGGSpec, NiNSpec, GoogLeNetSpec, LeNetSpec, ResNetSpec, DenseNetSpec)
}

# The VGG paper (Simonyan & Zisserman 2014), Table 1.
VGG_A = ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512))
VGG_B = ((2, 64), (2, 128), (2, 256), (2, 512), (2, 512))
VGG_D = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))
VGG_E = ((2, 64), (2, 128), (4, 256), (4, 512), (4, 512))

PRESETS: dict[str, Spec] = {
    "alexnet": AlexNetSpec(),
    # Exercise 7.1.2: AlexNet for 28x28 input: small kernels, no stride, a smaller head.
    "alexnet-small": AlexNetSpec(
        input_size=28,
        convs=((64, 3, 1, 1), (128, 3, 1, 1), (256, 3, 1, 1), (256, 3, 1, 1), (128, 3, 1, 1)),
        pool_after=(0, 1, 4),
        hidden=(1024, 1024),
    ),
    "vgg11": VGGSpec(conv_arch=VGG_A),
    "vgg13": VGGSpec(conv_arch=VGG_B),
    "vgg16": VGGSpec(conv_arch=VGG_D),
    "vgg19": VGGSpec(conv_arch=VGG_E),
    "vgg11-small": VGGSpec(conv_arch=VGG_A, width=0.25),  # d2l 7.2.3: ratio = 4
    "nin": NiNSpec(),
    # The 28x28 NiN from the lecture notes (seed 004).
    "nin-small": NiNSpec(
        input_size=28,
        blocks=((24, 3, 1, 0, 2, 1), (64, 3, 2, 2, 2, 1), (96, 4, 2, 1, 3, 2)),
    ),
    "googlenet": GoogLeNetSpec(),
    "lenet": LeNetSpec(),
    "bn-lenet": LeNetSpec(first_padding=0, pool="max", batch_norm="torch"),
    "bn-lenet-scratch": LeNetSpec(first_padding=0, pool="max", batch_norm="scratch"),
    "resnet18": ResNetSpec(),
    "resnet34": ResNetSpec(stages=((3, 64), (4, 128), (6, 256), (3, 512))),
    "resnet50": ResNetSpec(
        stages=((3, 256), (4, 512), (6, 1024), (3, 2048)), block="bottleneck"
    ),
    "densenet": DenseNetSpec(),
    "densenet121": DenseNetSpec(block_sizes=(6, 12, 24, 16), bottleneck=True),
}


def preset(name: str) -> Spec:
    """The preset spec called `name`; KeyError lists the known names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}") from None


def _as_tuples(value: Any) -> Any:
    """JSON has lists only; specs hold tuples (hashable, so a spec can key a cache)."""
    if isinstance(value, list):
        return tuple(_as_tuples(v) for v in value)
    return value


def from_dict(data: dict[str, Any]) -> Spec:
    """A spec from its dict form. Raises ValueError naming unknown families or fields.

    Types are not checked here: `cnnlab.arch.checks.validate` reports every problem at once.
    """
    if not isinstance(data, dict):
        raise ValueError("a spec must be a JSON object with a 'family' field")
    family = data.get("family")
    if family not in FAMILIES:
        raise ValueError(f"family: unknown {family!r}; choose one of: {', '.join(FAMILIES)}")
    cls = FAMILIES[family]
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known - {"family"})
    if unknown:
        raise ValueError(
            f"unknown field(s) for {family}: {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    return cls(**{k: _as_tuples(v) for k, v in data.items() if k != "family"})


def from_json(text: str) -> Spec:
    """A spec from JSON text. Raises ValueError (with the JSON error's position) on bad input."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc}") from None
    return from_dict(data)
