"""The Architecture page's editing form as data: for every family, its fields in two columns as
the chapter describes the network, each with its widget, label and help, and the
normalization switches the BatchNorm families share. `pages/_spec_form.py` draws one widget
per `Field`; `cnnlab.views.editor` reads and applies what they hold. No Streamlit in here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cnnlab.arch.specs import Spec
from cnnlab.views import editor as editing

KINDS = ("number", "text", "table", "choice", "toggle")  # the widgets a field can have


@dataclass(frozen=True)
class Field:
    """One widget of the form: its kind (KINDS), the spec field it edits, its label and help.
    A number's bounds and step: a float step makes it a float field ("%.2f")."""

    kind: str
    name: str
    label: str
    help: str | None = None
    low: int | None = None
    high: int | None = None
    step: float = 1


@dataclass(frozen=True)
class FamilyForm:
    """A family's fields: two columns of `widths`, then, at the foot of the right one, the
    normalization switches (`norm`: None for none, else what turns them on, "" for always)
    and a caption computed from the spec (`note`)."""

    widths: tuple[int, int]
    left: tuple[Field, ...]
    right: tuple[Field, ...]
    norm: str | None = None
    note: Callable[[Spec], str] | None = None


# The fields every family has, one column each above the family's own.
COMMON = (
    Field("number", "input_size", "Input size (pixels)", low=1, high=1024,
          help="Height = width of the input; Fashion-MNIST is resized to it"),
    Field("number", "in_channels", "Input channels", low=1, high=64),
    Field("number", "num_classes", "Classes", low=1, high=100_000),
    Field("number", "width", "Width multiplier", step=0.05,
          help="Scales every channel count: 0.25 is the textbook's ratio = 4 (d2l 7.2.3)"),
)

NORM_TITLE = "Normalization (exercises 7.5)"


def norm_fields(needs: str) -> tuple[Field, ...]:
    """The normalization switches of the families that use BatchNorm (exercises of 7.5);
    `needs` names the switch that turns them on, for the help text ("" when always on)."""
    needs = f" (with {needs})" if needs else ""
    return (
        Field("choice", "norm_kind", "Norm layer",
              help="What stands where the network puts BatchNorm" + needs + ": batch (d2l "
              "7.5), group (GroupNorm, gcd(32, C) groups), layer (one group: mean and variance "
              "over C, H, W), none. Exercise 7.5.7 asks about other normalizations."),
        Field("toggle", "conv_bias", "Bias on layers a norm follows",
              help="Exercise 7.5.1: a norm's shift beta absorbs the bias of the conv (or "
              "dense) layer before it, so that bias can go: fewer parameters, the same "
              "function"),
        Field("toggle", "norm_affine", "Learned gamma and beta",
              help="Exercise 7.5.5: off fixes gamma = 1 and beta = 0 (affine=False), 2 x C "
              "fewer parameters per norm layer"),
    )


def stage_caption(spec: Spec) -> str:
    """Markdown under GoogLeNet's fields: '**b3**: 2 blocks → 480 channels · ...'."""
    return " · ".join(f"**{name}**: {blocks} blocks → {out} channels"
                      for name, blocks, out in editing.stage_channels(spec))


DENSE = Field("text", "hidden", "Dense layers (units)", help="Hidden dense layers, e.g. 4096, 4096")
DROPOUT = Field("number", "dropout", "Dropout", step=0.05)
BATCH_NORM = Field("toggle", "batch_norm", "Batch norm after each conv")
STEM = Field("number", "stem_channels", "Stem channels", low=1, high=8192)

FAMILY_FORMS: dict[str, FamilyForm] = {
    "alexnet": FamilyForm((3, 2), left=(
        Field("table", "convs", "One row per convolution (channels, kernel, stride, padding); "
              "tick pool for a 3x3/2 max-pool after it. d2l 7.1.2."),
    ), right=(DENSE, DROPOUT)),
    "vgg": FamilyForm((3, 2), left=(
        Field("text", "conv_arch", "conv_arch", help="The textbook's tuple of (num_convs, "
              "channels), one pair per vgg_block, e.g. ((1, 64), (1, 128), (2, 256), (2, 512), "
              "(2, 512))"),
        Field("table", "conv_arch", "The same conv_arch as a table: one vgg_block per row. "
              "Add or delete rows to change the depth."),
    ), right=(
        DENSE, DROPOUT, BATCH_NORM,
        Field("toggle", "norm_in_head", "…and after each hidden dense layer",
              help="Exercise 7.5.3: do we need batch norm in every layer? Only with batch "
              "norm on"),
        Field("choice", "head", "Head",
              help="dense: the book's (flatten, dense layers); gap: global average pooling as "
              "in NiN (d2l 7.3), then the dense layers in `hidden` (empty it for one Linear): "
              "watch the parameter count collapse (exercise 7.2.2 asks why VGG needs so much "
              "memory)"),
    ), norm="batch norm on"),
    "nin": FamilyForm((3, 2), left=(
        Field("table", "blocks", "One nin_block per row: its conv (channels, kernel, stride, "
              "padding), then the max-pool after it. A last block maps to the classes."),
    ), right=(
        Field("number", "one_by_one", "1x1 convs per block", low=0, high=8,
              help="The per-pixel MLP of d2l 7.3.1 (exercise 7.3.2)"),
        DROPOUT,
    )),
    "googlenet": FamilyForm((3, 2), left=(
        Field("table", "inception", "One Inception block per row: c1 | c2a>c2b | c3a>c3b | c4 "
              "(d2l 7.4.1); out_channels = c1 + c2b + c3b + c4, before the width."),
    ), right=(
        Field("text", "stages", "Inception blocks per stage (b3, b4, b5)", help="e.g. 2, 5, 2"),
        Field("toggle", "batch_norm", "Batch norm after each conv", help="Exercise 7.4.1"),
    ), norm="batch norm on", note=stage_caption),
    "lenet": FamilyForm((1, 1), left=(
        Field("text", "conv_channels", "Conv channels", help="The two 5x5 convs, e.g. 6, 16"),
        Field("text", "hidden", "Dense layers (units)", help="e.g. 120, 84"),
        Field("number", "first_padding", "Padding of the first conv", low=0, high=4,
              help="2 in d2l 6.6, 0 in BN-LeNet (7.5.4)"),
    ), right=(
        Field("choice", "batch_norm", "Batch norm",
              help="scratch: the textbook's BatchNorm class (7.5.3); torch: nn.BatchNorm2d"),
        Field("choice", "activation", "Activation"),
        Field("choice", "pool", "Pooling"),
        Field("toggle", "norm_in_head", "Normalize the dense layers too",
              help="7.5.4 does; exercise 7.5.3 asks whether every layer needs it"),
        Field("number", "dropout", "Dropout after dense layers", step=0.05,
              help="Exercise 7.1.5: dropout after each hidden dense layer"),
    ), norm="batch norm torch; scratch is batch norm only"),
    "resnet": FamilyForm((3, 2), left=(
        Field("table", "stages", "One resnet_block per row: num_residuals Residual blocks of "
              "channels; every stage after the first halves height and width."),
    ), right=(
        STEM,
        Field("choice", "block", "Residual block",
              help="basic: two 3x3 convs; bottleneck: 1x1, 3x3, 1x1 (exercise 7.6.2)"),
        Field("toggle", "preact", "Pre-activation (BN, ReLU, conv)", help="Exercise 7.6.3"),
    ), norm=""),
    "densenet": FamilyForm((1, 1), left=(
        Field("text", "block_sizes", "Convs per dense block", help="e.g. 4, 4, 4, 4"),
        Field("number", "growth_rate", "Growth rate", low=1, high=1024,
              help="Channels each conv block adds"),
        STEM,
    ), right=(
        Field("number", "compression", "Compression", step=0.05,
              help="Share of channels a transition block keeps (0.5 in the book)"),
        Field("toggle", "bottleneck", "Bottleneck (DenseNet-BC)",
              help="A 1x1 conv to 4 x growth rate before each 3x3"),
        Field("choice", "transition_pool", "Transition pooling",
              help="Exercise 7.7.1: why average pooling rather than max-pooling in the "
              "transition layer?"),
    ), norm=""),
}
