"""Small pieces the family builders share."""

from __future__ import annotations

from torch import nn

from cnnlab.shapes import pair, window_output_size


def group_count(channels: int) -> int:
    """gcd(32, channels): 32 groups as in Wu & He (2018), fewer when they would not divide the
    channels evenly (the largest power of two up to 32 that does)."""
    return next(g for g in (32, 16, 8, 4, 2, 1) if channels % g == 0)


def norm2d(kind: str, channels: int, affine: bool = True) -> nn.Module | None:
    """The layer that stands where the family puts BatchNorm2d (`NormSwitches.norm_kind`):
    "batch", "group" (gcd(32, C) groups: 32 as in Wu & He 2018, fewer when C is not a multiple),
    "layer" (one group: mean and variance over C, H and W) or "none" (None: no layer).
    `affine=False` fixes gamma = 1 and beta = 0 (exercise 7.5.5)."""
    if kind == "batch":
        return nn.BatchNorm2d(channels, affine=affine)
    if kind == "group":
        return nn.GroupNorm(group_count(channels), channels, affine=affine)
    if kind == "layer":
        return nn.GroupNorm(1, channels, affine=affine)
    return None


def norm1d(kind: str, features: int, affine: bool = True) -> nn.Module | None:
    """`norm2d` after a dense layer: BatchNorm1d, GroupNorm on (N, C), LayerNorm, or None."""
    if kind == "batch":
        return nn.BatchNorm1d(features, affine=affine)
    if kind == "group":
        return nn.GroupNorm(group_count(features), features, affine=affine)
    if kind == "layer":
        return nn.LayerNorm(features, elementwise_affine=affine)
    return None


def conv_relu(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    padding: int = 0,
    batch_norm: bool = False,
    norm_kind: str = "batch",
    conv_bias: bool = True,
    norm_affine: bool = True,
) -> nn.Sequential:
    """Conv2d, optional norm, ReLU: MXNet's `Conv2D(..., activation='relu')` in d2l. With
    `batch_norm`, a `norm2d(norm_kind)` follows the conv, which then drops its bias unless
    `conv_bias` (the norm's shift absorbs it: exercise 7.5.1)."""
    norm = norm2d(norm_kind, out_channels, norm_affine) if batch_norm else None
    bias = conv_bias or norm is None
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding,
                                         bias=bias)]
    if norm is not None:
        layers.append(norm)
    layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class SpatialCollapse(ValueError):
    """The input is too small: the feature map shrinks below 1x1 at `layer`."""

    def __init__(self, input_size: int, layer: str):
        self.layer = layer
        super().__init__(f"the {input_size}x{input_size} input shrinks to nothing at layer '{layer}'")


def _out_size(size: int, module: nn.Module) -> int:
    """Height (= width) after one layer, by the formula in d2l 6.3 (padding and stride)."""
    if not isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        return size
    # Layers here are square: (k, k) and k mean the same, so the height stands for both.
    kernel, stride, padding, dilation = (pair(v)[0] for v in (
        module.kernel_size, module.stride, module.padding, getattr(module, "dilation", 1)))
    return window_output_size(size, kernel, stride, padding, dilation,
                              getattr(module, "ceil_mode", False))


def flat_features(features: nn.Module, channels: int, input_size: int) -> int:
    """How many numbers `features` hands to the dense head for a square input.

    Arithmetic on the layer hyperparameters, so it works whatever device the layers are on.
    Raises SpatialCollapse naming the layer where the feature map shrinks below 1x1.
    """
    size = input_size
    for name, module in features.named_modules():
        size = _out_size(size, module)
        if size < 1:
            raise SpatialCollapse(input_size, name)
    return channels * size * size


def dense_head(
    in_features: int, hidden: tuple[int, ...], num_classes: int, dropout: float,
    norm_kind: str = "none", bias: bool = True, norm_affine: bool = True,
) -> list[tuple[str, nn.Module]]:
    """AlexNet's and VGG's classifier: (Linear, norm, ReLU, Dropout) per hidden size, then
    Linear. The norm (`norm1d(norm_kind)`, none by default) is VGG's `norm_in_head`; a Linear
    it follows keeps its bias only with `bias`."""
    layers: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten())]
    for i, units in enumerate(hidden, start=1):
        norm = norm1d(norm_kind, units, norm_affine)
        linear = nn.Linear(in_features, units, bias=bias or norm is None)
        parts = [linear] + ([norm] if norm is not None else []) + [nn.ReLU(), nn.Dropout(dropout)]
        layers.append((f"fc{i}", nn.Sequential(*parts)))
        in_features = units
    layers.append(("output", nn.Linear(in_features, num_classes)))
    return layers
