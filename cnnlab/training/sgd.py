"""Minibatch SGD, with optional momentum and weight decay: torch's own update rule without
`torch.optim.Optimizer` around it.

Why not `torch.optim.SGD`: every `torch.optim.Optimizer` imports `torch._dynamo` the first
time it adds a parameter group, zeroes gradients or steps (those methods are wrapped in
`torch._disable_dynamo`, which imports dynamo to build the wrapper). That import costs about
1.2 s on 2 cores, a quarter of a cold `cnnlab train bn-lenet --epochs 1`
(`bench/cold_train.py`). The update itself is still torch's: `step` calls
`torch.optim.sgd.sgd`, the functional form that `torch.optim.SGD.step` calls, with the same
arguments, so the two give the same weights bit for bit (`tests/test_sgd.py`). Only the
bookkeeping is ours: the parameter list and the momentum buffers. The book writes its own
minibatch SGD the same way (d2l 3.4, `SGD.step`).

Adam and AdamW still come from `torch.optim` (`setup.make_optimizer`) and pay the import.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.optim.sgd import sgd


class SGD:
    """`torch.optim.SGD(params, lr, momentum, weight_decay)` for what the loop uses of it:
    `param_groups[0]["lr"]` (the schedule sets it each step), `zero_grad()` and `step()`."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float, momentum: float = 0.0,
                 weight_decay: float = 0.0) -> None:
        self.params = list(params)
        self.param_groups = [{"lr": lr, "momentum": momentum, "weight_decay": weight_decay}]
        self.momentum_buffers: list[torch.Tensor | None] = [None] * len(self.params)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.detach_().zero_()

    @torch.no_grad()
    def step(self) -> None:
        group = self.param_groups[0]
        used = [i for i, p in enumerate(self.params) if p.grad is not None]
        buffers = [self.momentum_buffers[i] for i in used]
        sgd([self.params[i] for i in used], [self.params[i].grad for i in used], buffers,
            weight_decay=group["weight_decay"], momentum=group["momentum"], lr=group["lr"],
            dampening=0.0, nesterov=False, maximize=False)
        if group["momentum"]:  # sgd() creates each buffer on its first step, in the list given
            for i, buffer in zip(used, buffers):
                self.momentum_buffers[i] = buffer
