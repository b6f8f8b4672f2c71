"""Architecture specs: one frozen dataclass per family, holding numbers only.

A spec is data. The app edits it, JSON stores it, `cnnlab.arch.models.build` turns it into an
`nn.Module`. Defaults are the textbook's (Dive into Deep Learning, chapter 7). The named
instances are `cnnlab.arch.presets`; checking a spec is `cnnlab.arch.checks`'s job, reading
one from JSON `cnnlab.arch.parse`'s.
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

# What stands where a family puts BatchNorm (`norm_kind`): "batch", "group" (GroupNorm with
# gcd(32, C) groups), "layer" (GroupNorm(1, C): LayerNorm over C, H, W) or "none".
NORM_KINDS = ("batch", "group", "layer", "none")
# Every text field's choices, in one place for the checks and the Architecture page's buttons
# (batch_norm is text only on LeNet; VGG's and GoogLeNet's are switches).
CHOICES: dict[str, tuple[str, ...]] = {
    "norm_kind": NORM_KINDS, "head": ("dense", "gap"), "pool": ("avg", "max"),
    "activation": ("sigmoid", "relu"), "batch_norm": ("none", "scratch", "torch"),
    "block": ("basic", "bottleneck"), "transition_pool": ("avg", "max"),
}


@dataclass(frozen=True, kw_only=True)
class NormSwitches:
    """The normalization switches of the families that use BatchNorm (exercises 7.5.1-7.5.5)."""

    norm_kind: str = "batch"  # see NORM_KINDS
    conv_bias: bool = True  # False: no bias on a conv (or dense) layer a norm follows (7.5.1)
    norm_affine: bool = True  # False: gamma = 1 and beta = 0, fixed (exercise 7.5.5)


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
class VGGSpec(NormSwitches, Spec):
    """VGG (d2l 7.2): `conv_arch` is a tuple of (num_convs, channels), one per `vgg_block`."""

    family: ClassVar[str] = "vgg"
    conv_arch: tuple[tuple[int, int], ...] = ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512))
    hidden: tuple[int, ...] = (4096, 4096)
    dropout: float = 0.5
    batch_norm: bool = False
    norm_in_head: bool = False  # with batch_norm, a norm after each hidden dense layer (7.5.3)
    head: str = "dense"  # "dense" (the book's) or "gap": global average pooling, then Linear


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
class GoogLeNetSpec(NormSwitches, Spec):
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
class LeNetSpec(NormSwitches, Spec):
    """LeNet (d2l 6.6) and BN-LeNet (d2l 7.5.4): two 5x5 convs, pools, three dense layers."""

    family: ClassVar[str] = "lenet"
    input_size: int = 28
    conv_channels: tuple[int, int] = (6, 16)
    hidden: tuple[int, ...] = (120, 84)
    first_padding: int = 2  # 6.6 pads the first conv; the BN-LeNet of 7.5.4 does not
    pool: str = "avg"  # "avg" (6.6) or "max" (7.5.4)
    activation: str = "sigmoid"  # "sigmoid" or "relu"
    batch_norm: str = "none"  # "none", "scratch" (d2l's batch_norm function) or "torch"
    norm_in_head: bool = True  # 7.5.4 normalizes the dense layers too (exercise 7.5.3)
    dropout: float = 0.0  # after each hidden dense layer (exercise 7.1.5)


@dataclass(frozen=True, kw_only=True)
class ResNetSpec(NormSwitches, Spec):
    """ResNet (d2l 7.6): a 7x7 stem, then stages of (num_residuals, channels) `Residual` blocks."""

    family: ClassVar[str] = "resnet"
    input_size: int = 96
    stem_channels: int = 64
    stages: tuple[tuple[int, int], ...] = ((2, 64), (2, 128), (2, 256), (2, 512))
    block: str = "basic"  # "basic" (two 3x3) or "bottleneck" (1x1, 3x3, 1x1; exercise 7.6.2)
    preact: bool = False  # BN, ReLU, conv order (exercise 7.6.3)


@dataclass(frozen=True, kw_only=True)
class DenseNetSpec(NormSwitches, Spec):
    """DenseNet (d2l 7.7): a 7x7 stem, `DenseBlock`s joined by `transition_block`s."""

    family: ClassVar[str] = "densenet"
    input_size: int = 96
    stem_channels: int = 64
    growth_rate: int = 32
    block_sizes: tuple[int, ...] = (4, 4, 4, 4)  # convs per dense block
    compression: float = 0.5  # transition blocks keep this share of the channels
    bottleneck: bool = False  # DenseNet-BC: a 1x1 conv to 4 * growth_rate before each 3x3
    transition_pool: str = "avg"  # the transition block's 2x2 pool: "avg" or "max" (7.7.1)
