"""Small pieces the family builders share."""

from __future__ import annotations

from torch import nn

from cnnlab.shapes import pair


def conv_relu(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    padding: int = 0,
    batch_norm: bool = False,
) -> nn.Sequential:
    """Conv2d, optional BatchNorm2d, ReLU: MXNet's `Conv2D(..., activation='relu')` in d2l."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
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
    kernel, stride, padding = (pair(v)[0] for v in (module.kernel_size, module.stride,
                                                    module.padding))
    dilation = pair(getattr(module, "dilation", 1))[0]
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    if getattr(module, "ceil_mode", False):
        return -(-span // stride) + 1
    return span // stride + 1


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
    in_features: int, hidden: tuple[int, ...], num_classes: int, dropout: float
) -> list[tuple[str, nn.Module]]:
    """AlexNet's and VGG's classifier: (Linear, ReLU, Dropout) per hidden size, then Linear."""
    layers: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten())]
    for i, units in enumerate(hidden, start=1):
        layers.append((f"fc{i}", nn.Sequential(nn.Linear(in_features, units), nn.ReLU(), nn.Dropout(dropout))))
        in_features = units
    layers.append(("output", nn.Linear(in_features, num_classes)))
    return layers
