"""The training loop: the textbook's recipe (d2l `train_ch6`) as `fit`, which reports events
through a Reporter, stops cleanly on request or divergence, and runs unchanged on a CPU or a
GPU. `train(spec, config)` checks its input, sets the run up and fits.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.arch.checks import check
from cnnlab.arch.models import batch_norm_modules
from cnnlab.arch.specs import Spec
from cnnlab.runs.store import Status
from cnnlab.training.config import TrainConfig
from cnnlab.training.data import PADDING, DeviceData, FashionMNIST
from cnnlab.training.reporter import Event, Reporter, at_chance
from cnnlab.training.setup import (
    Setup,
    check_spec_fits_data,
    fixed_shapes,
    lr_at,
    prepare,
    resolve_device,
    training_data,
)

StopCheck = Callable[[], bool]
EpochEnd = Callable[[int, nn.Module, Event], None]


@dataclass
class TrainResult:
    """How a run ended. `model` is the trained network (on its training device)."""

    status: Status
    message: str
    metrics: Event  # the last epoch event (or step event when no epoch finished)
    examples_per_s: float  # training only: evaluation and callbacks excluded
    seconds: float  # wall time of the whole call
    epochs_done: int  # complete epochs
    steps: int
    data: str  # FashionMNIST.describe()
    data_source: str
    device: str
    params: int
    channels_last: bool  # the layout actually used (config.channels_last is a request)
    amp: bool  # whether bf16 autocast was actually used
    history: list[Event] = field(default_factory=list)  # every epoch event
    model: nn.Module | None = field(default=None, repr=False)

    @property
    def best_test_acc(self) -> float | None:
        accs = [e["test_acc"] for e in self.history if "test_acc" in e]
        return max(accs) if accs else None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types, without the model: what the run store keeps as the run's result."""
        return {
            "status": self.status.value, "message": self.message, "metrics": self.metrics,
            "examples_per_s": self.examples_per_s, "seconds": self.seconds,
            "epochs_done": self.epochs_done, "steps": self.steps, "data": self.data,
            "data_source": self.data_source, "device": self.device, "params": self.params,
            "channels_last": self.channels_last, "amp": self.amp,
            "best_test_acc": self.best_test_acc,
        }


@dataclass
class Outcome:
    """How `fit` ended: a status, its message, complete epochs and the last epoch event."""

    status: Status
    message: str
    epochs_done: int
    metrics: Event


def train(spec: Spec, config: TrainConfig = TrainConfig(), *,
          on_event: Callable[[Event], None] | None = None,
          should_stop: StopCheck | None = None,
          on_epoch_end: EpochEnd | None = None,
          data: FashionMNIST | None = None) -> TrainResult:
    """Train `spec`'s network on Fashion-MNIST as `config` says.

    on_event(event) gets a 'step' event every `log_every` steps (and after step 1) and an 'epoch'
    event after each evaluation. should_stop() is polled every step and between evaluation
    batches; keep it cheap. on_epoch_end(epoch, model, event) runs after each complete epoch
    (checkpoints). `data` skips loading (config.subset still applies).
    Raises SpecError / ConfigError for bad input and DataError when no data is found; a run that
    is cancelled or diverges returns normally with that status.
    """
    started = time.perf_counter()
    check(spec)
    check_spec_fits_data(spec)
    device = resolve_device(config.device)
    dataset = training_data(config, data)
    run = prepare(spec, config, device, dataset)
    reporter = Reporter(
        total_steps=run.total_steps, steps_per_epoch=run.steps_per_epoch,
        log_every=config.log_every, check_every=run.check_every,
        # Before the first evaluation, guess it as a forward pass: a third of a training step.
        eval_guess_steps=len(run.test_data) / max(1, config.batch_size) / 3,
        on_event=on_event, started=started,
        # Said once, up front: what the numbers are measured on.
        first_extra={"data": dataset.describe(), "data_source": str(dataset.source),
                     "device": str(device), "channels_last": run.channels_last, "amp": run.amp,
                     "cuda_graphs": run.cuda_graphs,
                     **({"cuda_graphs_note": run.graphs_note} if run.graphs_note else {})})
    outcome = fit(run, config, reporter, should_stop or (lambda: False), on_epoch_end)
    return TrainResult(
        status=outcome.status, message=outcome.message,
        metrics=outcome.metrics or reporter.training_metrics(),
        examples_per_s=reporter.examples_per_s(), seconds=time.perf_counter() - started,
        epochs_done=outcome.epochs_done, steps=reporter.steps, data=dataset.describe(),
        data_source=str(dataset.source), device=str(device),
        params=sum(p.numel() for p in run.model.parameters()),
        channels_last=run.channels_last, amp=run.amp, history=reporter.history, model=run.model)


def fit(run: Setup, config: TrainConfig, reporter: Reporter, should_stop: StopCheck,
        on_epoch_end: EpochEnd | None = None) -> Outcome:
    """train_ch6: epochs of SGD steps, each followed by an evaluation on the test set.

    Stops early, returning normally, when should_stop() turns true (polled every step and
    between evaluation batches), when the loss diverges, or after config.max_steps.
    """
    generator = torch.Generator().manual_seed(config.seed)  # CPU: same order everywhere
    epochs_done, metrics = 0, {}
    run.model.train()
    for epoch in range(config.epochs):
        reporter.start_epoch()
        for x, y in run.train_data.batches(config.batch_size, shuffle=True, generator=generator,
                                           flip=config.flip, drop_last=run.drop_last):
            if should_stop():
                return Outcome(Status.CANCELLED, f"cancelled at step {reporter.steps} "
                               f"(epoch {epoch + 1})", epochs_done, metrics)
            lr = lr_at(config, reporter.steps, run.total_steps)
            loss, correct = train_step(run, x, y, lr, config.label_smoothing)
            diverged = reporter.step(loss, correct, len(y), lr)
            if diverged is not None:
                return Outcome(Status.DIVERGED, diverged, epochs_done, metrics)
            if reporter.steps >= run.total_steps:
                break
        diverged = reporter.end_epoch()
        if diverged is not None:
            return Outcome(Status.DIVERGED, diverged, epochs_done, metrics)

        with reporter.paused():
            eval_start = time.perf_counter()
            scores = evaluate_epoch(run, config, reporter.steps, should_stop)
            eval_s = time.perf_counter() - eval_start
        if scores is None:
            return Outcome(Status.CANCELLED, "cancelled during evaluation after step "
                           f"{reporter.steps}", epochs_done, metrics)
        metrics = reporter.epoch(*scores, eval_s)
        diverged = at_chance(metrics["train_loss"], metrics["test_acc"], run.num_classes,
                             reporter.lr)
        if diverged is not None:
            return Outcome(Status.DIVERGED, diverged, epochs_done, metrics)

        complete = reporter.steps == (epoch + 1) * run.steps_per_epoch
        if complete:
            epochs_done = epoch + 1
            if on_epoch_end is not None:
                with reporter.paused():
                    on_epoch_end(epochs_done, run.model, metrics)
        if reporter.steps >= run.total_steps:
            if not complete:
                return Outcome(Status.DONE, f"stopped after max_steps={config.max_steps} steps",
                               epochs_done, metrics)
            break
    return Outcome(Status.DONE, f"trained {epochs_done} epochs ({reporter.steps} steps)",
                   epochs_done, metrics)


def train_step(run: Setup, x: torch.Tensor, y: torch.Tensor, lr: float,
               label_smoothing: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD step at `lr`; the loss and the number correct, left on the device."""
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    # A captured step was captured without autocast's weight cache; it must run the same way.
    with torch.autocast(run.device.type, torch.bfloat16, enabled=run.amp,
                        cache_enabled=not run.cuda_graphs):
        logits = run.forward(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    run.optimizer.step()
    return loss.detach(), (logits.detach().argmax(dim=1) == y).sum()


def evaluate_epoch(run: Setup, config: TrainConfig, step: int,
                   should_stop: StopCheck) -> tuple[float, float] | None:
    """Test loss and accuracy after `step` steps, BatchNorm statistics recalibrated first when
    the config asks; None if should_stop() turned true."""
    if config.bn_recalibration:
        # A generator of its own, so the training order is the same with or without this.
        generator = torch.Generator().manual_seed(config.seed + step)
        images = (x for x, _ in run.train_data.batches(config.batch_size, shuffle=True,
                                                        generator=generator,
                                                        drop_last=run.drop_last))
        with torch.autocast(run.device.type, torch.bfloat16, enabled=run.amp):
            recalibrate_batch_norm(run.model, itertools.islice(images, config.bn_recalibration))
    return evaluate(run.model, run.test_data, run.eval_batch, amp=run.amp,
                    should_stop=should_stop, pad_last=fixed_shapes(run.device))


def recalibrate_batch_norm(model: nn.Module, images: Iterable[torch.Tensor]) -> int:
    """Set every BatchNorm layer's running mean and variance to their average over `images`
    (batches of training inputs), with the weights frozen: "precise BN" (Wu & Johnson,
    "Rethinking Batch in BatchNorm", 2021). Returns the number of batches used.

    Why: at the book's lr of 1.0, BN-LeNet's weights move so fast that the moving averages
    (which weigh the last ~10 batches) describe a slightly different network. Measured on the
    full data (BN-LeNet from scratch, README): test accuracy then swings between 0.72 and 0.84
    from epoch to epoch, while the same weights with recomputed statistics score 0.875-0.887
    from epoch 5 on.
    """
    norms = [m for _, m in batch_norm_modules(model)]
    if not norms:
        return 0
    saved = [(m, m.momentum) for m in norms]
    was_training = model.training
    model.train()
    count = 0
    try:
        with torch.no_grad():
            for count, x in enumerate(images, start=1):
                for m in norms:  # momentum 1/k turns the update into a running average
                    m.momentum = 1.0 / count
                model(x)
    finally:
        for m, momentum in saved:
            m.momentum = momentum
        model.train(was_training)
    return count


def evaluate(model: nn.Module, data: DeviceData, batch_size: int, *, amp: bool = False,
             should_stop: StopCheck | None = None,
             pad_last: bool = False) -> tuple[float, float] | None:
    """Mean cross-entropy and accuracy over a whole split, in eval mode without gradients;
    with `pad_last`, in batches of one shape (the padding counts for neither).
    Returns None when `should_stop()` turns true (checked between batches)."""
    device = data.images.device
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    try:
        with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=amp):
            for x, y in data.batches(batch_size, pad_last=pad_last):
                if should_stop is not None and should_stop():
                    return None
                logits = model(x).float()
                loss_sum += F.cross_entropy(logits, y, reduction="sum", ignore_index=PADDING)
                correct += (logits.argmax(dim=1) == y).sum()
    finally:
        model.train(was_training)
    n = max(1, len(data))
    return loss_sum.item() / n, correct.item() / n
