"""What a training loop says about itself: one object owns the meters, the training clock, the
ETA, the divergence watch and the events, so the loop only trains.

Per-step losses stay on the device until a check (a GPU would stall if each step read its
loss), then come to the host in one sync, are checked for divergence and counted.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from cnnlab.runs.metrics import Event

# A run has diverged once its training loss is not finite, or above DIVERGE_FACTOR x the first
# step's loss (cross-entropy starts near ln 10 = 2.3, so ~115), or above DIVERGE_LIMIT anyway.
DIVERGE_FACTOR = 50.0
DIVERGE_LIMIT = 1e4
# A run has also diverged when an epoch ends at chance (test accuracy at most CHANCE_FACTOR /
# classes) with a training loss above UNTRAINED_FACTOR x ln(classes), the loss of a network
# that predicts uniformly. Measured: BN-LeNet at lr 50 ends its first epoch at loss 18.0 and
# 0.100 test accuracy, then "learns" nothing. A LeNet with sigmoids that learns slowly sits
# at ln 10 = 2.30 and chance for its first epoch: loss near ln(classes) is slow, not diverged.
CHANCE_FACTOR = 1.2
UNTRAINED_FACTOR = 1.5


def divergence(losses: Iterable[float], first_step: int, first_loss: float | None,
               lr: float) -> str | None:
    """A message if one of these per-step losses is NaN/inf or far above the first loss."""
    for i, loss in enumerate(losses):
        step = first_step + i
        reference = loss if first_loss is None else first_loss
        limit = min(DIVERGE_LIMIT, DIVERGE_FACTOR * reference)
        if not math.isfinite(loss):
            why = f"training loss is {loss}"
        elif loss > limit:
            why = f"training loss {loss:.4g} > {limit:.4g} ({DIVERGE_FACTOR:g}x the first loss)"
        else:
            continue
        return f"diverged at step {step}: {why}; try a smaller learning rate (lr was {lr:g})"
    return None


def at_chance(train_loss: float, test_acc: float, num_classes: int, lr: float) -> str | None:
    """A message if an epoch ended at chance accuracy with a loss far above an untrained
    network's (ln num_classes): the weights were thrown somewhere useless."""
    chance, untrained = 1 / num_classes, math.log(num_classes)
    if test_acc > CHANCE_FACTOR * chance or train_loss <= UNTRAINED_FACTOR * untrained:
        return None
    return (f"diverged: the epoch ended at chance, test accuracy {test_acc:.3f} (chance is "
            f"{chance:.3f}), with training loss {train_loss:.3g}, far above an untrained "
            f"network's ln {num_classes} = {untrained:.2f}; try a smaller learning rate "
            f"(lr was {lr:g})")


class Meter:
    """Running sums of loss and correct predictions over examples."""

    def __init__(self) -> None:
        self.loss, self.correct, self.n = 0.0, 0.0, 0

    def add(self, loss: float, correct: float, n: int) -> None:
        self.loss += loss * n
        self.correct += correct
        self.n += n

    def means(self) -> tuple[float, float]:
        return self.loss / max(1, self.n), self.correct / max(1, self.n)


class Clock:
    """Training seconds only: stopped around evaluation and the caller's callbacks, so
    examples/s and the ETA's per-step time measure training alone."""

    def __init__(self, now: Callable[[], float] = time.perf_counter) -> None:
        self._now = now
        self.total, self._since = 0.0, now()

    @contextmanager
    def paused(self) -> Iterator[None]:
        self.total += self._now() - self._since
        try:
            yield
        finally:
            self._since = self._now()

    def __call__(self) -> float:
        return self.total + self._now() - self._since


class Reporter:
    """Meters, clock, ETA, divergence watch and events of one run.

    The loop calls `step` after each training step, `end_epoch` after each pass, and
    `epoch` with each evaluation's scores. A 'step' event goes out every `log_every` steps
    and after step 1 (with `first_extra`: what the numbers are measured on); an 'epoch' event
    after each evaluation. `now` (a monotonic clock) and `wall` are injectable for tests.
    """

    def __init__(self, *, total_steps: int, steps_per_epoch: int, log_every: int,
                 check_every: int, eval_guess_steps: float,
                 on_event: Callable[[Event], None] | None = None, first_extra: Event | None = None,
                 now: Callable[[], float] = time.perf_counter,
                 wall: Callable[[], float] = time.time, started: float | None = None) -> None:
        self.total_steps, self.steps_per_epoch = total_steps, steps_per_epoch
        self.log_every, self.check_every = log_every, check_every
        # Before the first evaluation its time is guessed as this many steps' worth of time.
        self.eval_guess_steps = eval_guess_steps
        self.on_event, self.first_extra = on_event, first_extra or {}
        self.now, self.wall = now, wall
        self.clock = Clock(now)
        self.started = now() if started is None else started  # for "elapsed": wall time
        self.steps = self.examples = 0
        self.lr = 0.0
        self.first_loss: float | None = None
        self.pending: list[tuple[torch.Tensor, torch.Tensor, int]] = []
        self.interval, self.interval_start = Meter(), 0.0
        self.epoch_meter, self.epoch_start, self.epoch_seconds = Meter(), 0.0, 0.0
        self.last_eval_s: float | None = None
        self.history: list[Event] = []

    def paused(self) -> Any:
        """Stop the training clock around work that is not training (evaluation, callbacks)."""
        return self.clock.paused()

    # -- during an epoch --------------------------------------------------------------------

    def start_epoch(self) -> None:
        self.epoch_meter, self.epoch_start = Meter(), self.clock()

    def step(self, loss: torch.Tensor, correct: torch.Tensor, n: int, lr: float) -> str | None:
        """Count one training step (loss and correct count still on the device); a divergence
        message when a check finds one, else None."""
        self.pending.append((loss, correct, n))
        self.steps += 1
        self.examples += n
        self.lr = lr
        first = self.steps == 1
        log = first or self.steps % self.log_every == 0
        if log or self.steps % self.check_every == 0:
            diverged = self._flush()
            if diverged is not None:
                return diverged
        if log:
            self._emit(self._step_event(self.first_extra if first else {}))
        return None

    def end_epoch(self) -> str | None:
        """Count the epoch's last pending steps; a divergence message or None."""
        diverged = self._flush()
        if diverged is None:
            self.epoch_seconds = self.clock() - self.epoch_start
        return diverged

    def eta(self, training_s: float) -> float:
        """Seconds left after `training_s` seconds of training: the remaining steps at the mean
        step time so far, plus the remaining evaluations at the last one's time (guessed
        before the first)."""
        per_step = training_s / max(1, self.steps)
        remaining = self.total_steps - self.steps
        evals_left = math.ceil(remaining / self.steps_per_epoch) if remaining else 0
        eval_s = (self.last_eval_s if self.last_eval_s is not None
                  else self.eval_guess_steps * per_step)
        return remaining * per_step + evals_left * eval_s

    def _flush(self) -> str | None:
        """Bring pending per-step losses to the host (one sync); a divergence message or None."""
        if not self.pending:
            return None
        losses = torch.stack([p[0] for p in self.pending]).float().tolist()
        corrects = torch.stack([p[1] for p in self.pending]).tolist()
        sizes = [p[2] for p in self.pending]
        first = self.steps - len(self.pending) + 1
        self.pending.clear()
        if self.first_loss is None:
            self.first_loss = losses[0]
        diverged = divergence(losses, first, self.first_loss, self.lr)
        if diverged is not None:
            return diverged
        for loss, correct, n in zip(losses, corrects, sizes):
            self.interval.add(loss, correct, n)
            self.epoch_meter.add(loss, correct, n)
        return None

    def _step_event(self, extra: Event) -> Event:
        loss, acc = self.interval.means()
        now = self.clock()
        seconds = now - self.interval_start
        event = {
            "kind": "step", "step": self.steps, "time": self.wall(),
            "epoch": self.steps / self.steps_per_epoch,
            "train_loss": loss, "train_acc": acc,
            "examples_per_s": self.interval.n / seconds if seconds > 0 else 0.0,
            "eta_s": self.eta(now), "lr": self.lr, "total_steps": self.total_steps, **extra,
        }
        self.interval, self.interval_start = Meter(), now
        return event

    # -- after an epoch ---------------------------------------------------------------------

    def epoch(self, test_loss: float, test_acc: float, eval_s: float) -> Event:
        """The 'epoch' event of an evaluation that took `eval_s`, sent and kept in history."""
        self.last_eval_s = eval_s
        train_loss, train_acc = self.epoch_meter.means()
        event = {
            "kind": "epoch", "epoch": round(self.steps / self.steps_per_epoch, 4),
            "step": self.steps, "time": self.wall(), "train_loss": train_loss,
            "train_acc": train_acc, "test_loss": test_loss, "test_acc": test_acc,
            "examples_per_s": self.epoch_meter.n / max(self.epoch_seconds, 1e-9),
            "eval_s": eval_s, "elapsed": self.now() - self.started,
        }
        self.history.append(event)
        self._emit(event)
        return event

    def training_metrics(self) -> Event:
        """The running training averages since the last step event (for runs that never
        reached an evaluation); empty when there are none."""
        loss, acc = self.interval.means()
        return {"train_loss": loss, "train_acc": acc} if self.interval.n else {}

    def examples_per_s(self) -> float:
        """Training examples per training second, over the whole run."""
        seconds = self.clock()
        return self.examples / seconds if seconds > 0 else 0.0

    def _emit(self, event: Event) -> None:
        if self.on_event is not None:
            with self.clock.paused():
                self.on_event(event)
