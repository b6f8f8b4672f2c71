"""LeNet (d2l 6.6) and BN-LeNet (d2l 7.5), with the textbook's from-scratch batch norm."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from cnnlab.arch.checks import MAX_CHANNELS, Checker, check_norm, echo
from cnnlab.arch.families import Family, register
from cnnlab.arch.models.common import flat_features, norm1d, norm2d
from cnnlab.arch.specs import CHOICES, LeNetSpec


def batch_norm(
    X: torch.Tensor, gamma: torch.Tensor | None, beta: torch.Tensor | None,
    moving_mean: torch.Tensor, moving_var: torch.Tensor, eps: float, momentum: float,
    training: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """d2l 7.5.3's `batch_norm`: normalise with batch statistics while training, with the
    moving averages at prediction time. `momentum` weighs the new batch (PyTorch's convention).
    The book asks autograd whether it is training; `training` says so explicitly here."""
    if not training:
        X_hat = (X - moving_mean) / torch.sqrt(moving_var + eps)
    else:
        if X.dim() == 2:  # fully connected: statistics per feature
            mean = X.mean(dim=0)
            var = ((X - mean) ** 2).mean(dim=0)
        else:  # convolutional: statistics per channel, over batch, height and width
            mean = X.mean(dim=(0, 2, 3), keepdim=True)
            var = ((X - mean) ** 2).mean(dim=(0, 2, 3), keepdim=True)
        X_hat = (X - mean) / torch.sqrt(var + eps)
        moving_mean = (1.0 - momentum) * moving_mean + momentum * mean.detach()
        moving_var = (1.0 - momentum) * moving_var + momentum * var.detach()
    # Without gamma and beta (exercise 7.5.5's fixed coefficients) the layer only normalises.
    Y = X_hat if gamma is None else gamma * X_hat + beta
    return Y, moving_mean, moving_var


class BatchNorm(nn.Module):
    """d2l 7.5.3's `BatchNorm` layer: `num_dims` is 2 after a dense layer, 4 after a conv.
    `affine=False` leaves out gamma and beta (as nn.BatchNorm2d's `affine`)."""

    def __init__(self, num_features: int, num_dims: int, eps: float = 1e-5, momentum: float = 0.1,
                 affine: bool = True):
        super().__init__()
        shape = (1, num_features) if num_dims == 2 else (1, num_features, 1, 1)
        self.gamma = nn.Parameter(torch.ones(shape)) if affine else None
        self.beta = nn.Parameter(torch.zeros(shape)) if affine else None
        # Buffers, not parameters: they move with .to(device) and land in the state dict.
        self.register_buffer("moving_mean", torch.zeros(shape))
        self.register_buffer("moving_var", torch.ones(shape))
        self.eps, self.momentum = eps, momentum

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        Y, mean, var = batch_norm(X, self.gamma, self.beta, self.moving_mean, self.moving_var,
                                  self.eps, self.momentum, self.training)
        if self.training:
            # In place, where the book rebinds the attributes: the buffers keep their memory,
            # which a step captured as a CUDA graph (training.setup.graphed_forward) reads and
            # writes on every replay; a rebound buffer would leave the graph on the old one.
            self.moving_mean.copy_(mean)
            self.moving_var.copy_(var)
        return Y


def _norm(spec: LeNetSpec, features: int, num_dims: int) -> list[nn.Module]:
    """The norm after a conv (`num_dims` 4) or dense layer (2): the book's from-scratch
    BatchNorm, or torch's layer of `norm_kind`; none without batch_norm."""
    if spec.batch_norm == "scratch":  # batch norm only: the checks refuse another norm_kind
        return [BatchNorm(features, num_dims, affine=spec.norm_affine)]
    if spec.batch_norm != "torch":
        return []
    make = norm2d if num_dims == 4 else norm1d
    layer = make(spec.norm_kind, features, spec.norm_affine)
    return [] if layer is None else [layer]


def _conv(spec: LeNetSpec, c_in: int, c_out: int, padding: int) -> list[nn.Module]:
    """A 5x5 conv and its norm; the conv drops its bias when a norm follows, unless conv_bias."""
    norm = _norm(spec, c_out, 4)
    conv = nn.Conv2d(c_in, c_out, 5, padding=padding, bias=spec.conv_bias or not norm)
    return [conv, *norm]


def _dense(spec: LeNetSpec, n_in: int, n_out: int, act: type[nn.Module]) -> nn.Sequential:
    """A hidden dense layer: Linear, its norm (with norm_in_head), activation, dropout."""
    norm = _norm(spec, n_out, 2) if spec.norm_in_head else []
    layers = [nn.Linear(n_in, n_out, bias=spec.conv_bias or not norm), *norm, act()]
    if spec.dropout > 0:  # exercise 7.1.5; left out at 0, so 6.6's LeNet is unchanged
        layers.append(nn.Dropout(spec.dropout))
    return nn.Sequential(*layers)


def lenet(spec: LeNetSpec) -> nn.Sequential:
    act = nn.Sigmoid if spec.activation == "sigmoid" else nn.ReLU
    pool = nn.AvgPool2d if spec.pool == "avg" else nn.MaxPool2d
    c1, c2 = (spec.channels(c) for c in spec.conv_channels)
    convs = [
        ("conv1", nn.Sequential(*_conv(spec, spec.in_channels, c1, spec.first_padding), act(),
                                pool(2, 2))),
        ("conv2", nn.Sequential(*_conv(spec, c1, c2, 0), act(), pool(2, 2))),
    ]
    features = flat_features(nn.Sequential(OrderedDict(convs)), c2, spec.input_size)
    dense: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten())]
    for i, units in enumerate(spec.hidden, start=1):
        dense.append((f"fc{i}", _dense(spec, features, units, act)))
        features = units
    dense.append(("output", nn.Linear(features, spec.num_classes)))
    return nn.Sequential(OrderedDict(convs + dense))


def _check(c: Checker, s: LeNetSpec) -> None:
    if c.tuple_of("conv_channels", s.conv_channels, None, "(6, 16)", max_items=2, min_items=2):
        for i, v in enumerate(s.conv_channels):
            c.int_in(f"conv_channels[{i}]", v, 1, MAX_CHANNELS)
    c.units("hidden", s.hidden)
    c.int_in("first_padding", s.first_padding, 0, 4)
    c.choice("pool", s.pool, CHOICES["pool"])
    c.choice("activation", s.activation, CHOICES["activation"])
    c.choice("batch_norm", s.batch_norm, CHOICES["batch_norm"])
    check_norm(c, s, "batch_norm is 'none'" if s.batch_norm == "none" else "")
    if s.batch_norm == "scratch" and s.norm_kind != "batch":
        c.error("norm_kind", f"{echo(s.norm_kind)} cannot go with batch_norm 'scratch': the "
                "book's from-scratch layer (7.5.3) is batch norm only",
                "set batch_norm to 'torch' to use torch's layer of this kind, or norm_kind "
                "back to 'batch'")
    c.flag("norm_in_head", s.norm_in_head)
    if s.norm_in_head is False and s.batch_norm == "none":
        c.warn("norm_in_head", "has no effect while batch_norm is 'none'",
               "choose a batch_norm to normalize the conv layers alone")
    c.number_in("dropout", s.dropout, 0, 1, high_open=True)


def _recipe(spec: LeNetSpec) -> str:
    """LeNet trains as in 6.6; with batch norm, or in BN-LeNet's layout (7.5.4: no padding,
    max-pool) without it, as BN-LeNet in 7.5.5: so "bn-lenet-no-bn" and "bn-lenet" differ in
    batch norm alone, their lr, batch size and epochs included."""
    bn_layout = spec.first_padding == 0 and spec.pool == "max"
    return "bn-lenet" if spec.batch_norm != "none" or bn_layout else "lenet"


register(Family(
    name="lenet", title="LeNet", spec=LeNetSpec, build=lenet, check=_check,
    recipe=_recipe,
))
