"""LeNet (d2l 6.6) and BN-LeNet (d2l 7.5), with the textbook's from-scratch batch norm."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from cnnlab.arch.checks import MAX_CHANNELS, Checker
from cnnlab.arch.families import Family, register
from cnnlab.arch.models.common import flat_features
from cnnlab.arch.specs import LeNetSpec


def batch_norm(
    X: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor,
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
    return gamma * X_hat + beta, moving_mean, moving_var


class BatchNorm(nn.Module):
    """d2l 7.5.3's `BatchNorm` layer: `num_dims` is 2 after a dense layer, 4 after a conv."""

    def __init__(self, num_features: int, num_dims: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        shape = (1, num_features) if num_dims == 2 else (1, num_features, 1, 1)
        self.gamma = nn.Parameter(torch.ones(shape))
        self.beta = nn.Parameter(torch.zeros(shape))
        # Buffers, not parameters: they move with .to(device) and land in the state dict.
        self.register_buffer("moving_mean", torch.zeros(shape))
        self.register_buffer("moving_var", torch.ones(shape))
        self.eps, self.momentum = eps, momentum

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        Y, mean, var = batch_norm(X, self.gamma, self.beta, self.moving_mean, self.moving_var,
                                  self.eps, self.momentum, self.training)
        if self.training:
            self.moving_mean, self.moving_var = mean, var
        return Y


def _norm(kind: str, features: int, num_dims: int) -> list[nn.Module]:
    if kind == "scratch":
        return [BatchNorm(features, num_dims)]
    if kind == "torch":
        return [nn.BatchNorm2d(features) if num_dims == 4 else nn.BatchNorm1d(features)]
    return []


def lenet(spec: LeNetSpec) -> nn.Sequential:
    act = nn.Sigmoid if spec.activation == "sigmoid" else nn.ReLU
    pool = nn.AvgPool2d if spec.pool == "avg" else nn.MaxPool2d
    c1, c2 = (spec.channels(c) for c in spec.conv_channels)
    convs = [
        ("conv1", nn.Sequential(nn.Conv2d(spec.in_channels, c1, 5, padding=spec.first_padding),
                                *_norm(spec.batch_norm, c1, 4), act(), pool(2, 2))),
        ("conv2", nn.Sequential(nn.Conv2d(c1, c2, 5), *_norm(spec.batch_norm, c2, 4), act(), pool(2, 2))),
    ]
    features = flat_features(nn.Sequential(OrderedDict(convs)), c2, spec.input_size)
    dense: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten())]
    for i, units in enumerate(spec.hidden, start=1):
        dense.append((f"fc{i}", nn.Sequential(nn.Linear(features, units),
                                              *_norm(spec.batch_norm, units, 2), act())))
        features = units
    dense.append(("output", nn.Linear(features, spec.num_classes)))
    return nn.Sequential(OrderedDict(convs + dense))


def _check(c: Checker, s: LeNetSpec) -> None:
    if c.tuple_of("conv_channels", s.conv_channels, None, "(6, 16)", max_items=2, min_items=2):
        for i, v in enumerate(s.conv_channels):
            c.int_in(f"conv_channels[{i}]", v, 1, MAX_CHANNELS)
    c.units("hidden", s.hidden)
    c.int_in("first_padding", s.first_padding, 0, 4)
    c.choice("pool", s.pool, ("avg", "max"))
    c.choice("activation", s.activation, ("sigmoid", "relu"))
    c.choice("batch_norm", s.batch_norm, ("none", "scratch", "torch"))


def _recipe(spec: LeNetSpec) -> str:
    """LeNet trains as in 6.6; with batch norm, as BN-LeNet in 7.5."""
    return "lenet" if spec.batch_norm == "none" else "bn-lenet"


register(Family(
    name="lenet", title="LeNet", spec=LeNetSpec, build=lenet, check=_check,
    recipe=_recipe,
))
