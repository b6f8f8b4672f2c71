"""cnnlab.training.sgd: the same weights as torch.optim.SGD, bit for bit."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.training.sgd import SGD


def trained(make_optimizer, steps: int = 6) -> list[torch.Tensor]:
    """A small conv net's parameters after `steps` steps (the lr changes half way; the bias
    of the last layer is frozen, so one parameter never has a gradient)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 10))
    model[4].bias.requires_grad_(False)
    optimizer = make_optimizer(model.parameters())
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    for step in range(steps):
        optimizer.param_groups[0]["lr"] = 0.1 if step < steps // 2 else 0.02
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("momentum, weight_decay", [(0.0, 0.0), (0.9, 0.0), (0.9, 5e-4),
                                                    (0.0, 1e-3)])
def test_the_same_weights_as_torch_optim_sgd(momentum, weight_decay):
    ours = trained(lambda p: SGD(p, lr=0.1, momentum=momentum, weight_decay=weight_decay))
    torchs = trained(lambda p: torch.optim.SGD(p, lr=0.1, momentum=momentum,
                                               weight_decay=weight_decay))
    assert all(torch.equal(a, b) for a, b in zip(ours, torchs))
    assert not torch.equal(ours[0], trained(lambda p: SGD(p, lr=0.1), steps=0)[0])  # it moved


def test_momentum_buffers_are_kept_between_steps_and_only_for_parameters_with_gradients():
    w, frozen = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(2))
    optimizer = SGD([w, frozen], lr=1.0, momentum=0.5)
    for _ in range(2):
        optimizer.zero_grad()
        w.sum().backward()
        optimizer.step()
    # velocity 1 then 0.5 * 1 + 1 = 1.5: w = 1 - 1 - 1.5
    assert torch.equal(w.detach(), torch.full((3,), -1.5))
    assert torch.equal(optimizer.momentum_buffers[0], torch.full((3,), 1.5))
    assert optimizer.momentum_buffers[1] is None and torch.equal(frozen.detach(), torch.ones(2))


def test_zero_grad_can_keep_the_tensors():
    w = nn.Parameter(torch.ones(2))
    optimizer = SGD([w], lr=0.1)
    w.sum().backward()
    optimizer.zero_grad(set_to_none=False)
    assert torch.equal(w.grad, torch.zeros(2))
