"""The named specs: the chapter's networks and a few variants, each saying where its numbers
come from. `PRESETS` keeps the chapter's order, which the app's pickers follow.
"""

from __future__ import annotations

from cnnlab.arch.specs import (
    AlexNetSpec,
    DenseNetSpec,
    GoogLeNetSpec,
    LeNetSpec,
    NiNSpec,
    ResNetSpec,
    Spec,
    VGGSpec,
)

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
    # Exercise 7.5.2: BN-LeNet without batch norm, trained with BN-LeNet's recipe, so that a
    # comparison differs in batch norm alone. The book prints no result for it.
    "bn-lenet-no-bn": LeNetSpec(first_padding=0, pool="max", batch_norm="none"),
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


def preset_name(spec: Spec, *, any_input_size: bool = False) -> str | None:
    """The name of the preset equal to `spec`, if there is one; with `any_input_size`, the
    one it equals at the preset's input size (no two presets differ only there)."""
    for name, candidate in PRESETS.items():
        size = candidate.input_size if any_input_size else spec.input_size
        if candidate == spec.replace(input_size=size):
            return name
    return None
