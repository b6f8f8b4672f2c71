"""Tests for cnnlab.training.reporter: meters, the training clock, the ETA, the divergence
watch and the events, driven by hand with a fake clock (no training)."""

from __future__ import annotations

import math

import pytest
import torch

from cnnlab.training.reporter import Clock, Meter, Reporter, at_chance, divergence


class FakeTime:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def reporter(fake: FakeTime, events: list[dict], **changes) -> Reporter:
    options = dict(total_steps=20, steps_per_epoch=10, log_every=5, check_every=1,
                   eval_guess_steps=2.0, on_event=events.append, first_extra={"device": "cpu"},
                   now=fake, wall=lambda: 1.7e9)
    return Reporter(**{**options, **changes})


def step(r: Reporter, fake: FakeTime, loss: float, correct: int = 5, n: int = 10,
         seconds: float = 1.0, lr: float = 0.1) -> str | None:
    fake.t += seconds
    return r.step(torch.tensor(loss), torch.tensor(correct), n, lr)


def test_a_meter_averages_over_examples() -> None:
    meter = Meter()
    meter.add(1.0, 3, 10)
    meter.add(4.0, 1, 30)
    assert meter.means() == (pytest.approx(3.25), pytest.approx(0.1))
    assert Meter().means() == (0.0, 0.0)


def test_the_clock_stops_while_paused() -> None:
    fake = FakeTime()
    clock = Clock(fake)
    fake.t += 2
    with clock.paused():
        fake.t += 50
    fake.t += 1
    assert clock() == pytest.approx(3.0)


def test_step_events_come_after_step_one_and_every_log_every_steps() -> None:
    fake, events = FakeTime(), []
    r = reporter(fake, events)
    for _ in range(10):
        assert step(r, fake, 2.0) is None
    assert [e["step"] for e in events] == [1, 5, 10]
    assert events[0]["device"] == "cpu" and "device" not in events[1]  # said once, up front
    assert events[1]["train_loss"] == pytest.approx(2.0) and events[1]["train_acc"] == 0.5
    assert events[1]["examples_per_s"] == pytest.approx(10.0)  # 40 examples in 4 s
    assert events[1]["time"] == 1.7e9 and events[1]["lr"] == 0.1 and events[1]["epoch"] == 0.5


def test_the_eta_counts_the_steps_and_evaluations_left() -> None:
    fake, events = FakeTime(), []
    r = reporter(fake, events)
    for _ in range(5):
        step(r, fake, 2.0, seconds=2.0)
    # 15 steps at 2 s, and 2 evaluations guessed at 2 steps' time (4 s) each.
    assert events[-1]["eta_s"] == pytest.approx(15 * 2.0 + 2 * 4.0)
    for _ in range(5):
        step(r, fake, 2.0, seconds=2.0)
    r.end_epoch()
    r.epoch(0.5, 0.8, eval_s=7.0)  # now the last evaluation's real time counts
    step(r, fake, 2.0, seconds=2.0)
    assert r.eta(r.clock()) == pytest.approx(9 * 2.0 + 1 * 7.0)


def test_the_clock_excludes_the_callbacks_and_evaluation() -> None:
    fake = FakeTime()

    def slow_callback(event: dict) -> None:
        fake.t += 100  # a slow store write must not count as training time

    r = reporter(fake, [], on_event=slow_callback)
    for _ in range(10):
        step(r, fake, 2.0, seconds=1.0)
    with r.paused():
        fake.t += 30
    assert r.clock() == pytest.approx(10.0)
    assert r.examples_per_s() == pytest.approx(10.0)


def test_an_epoch_event_reports_the_epochs_training_and_the_test_scores() -> None:
    fake, events = FakeTime(), []
    r = reporter(fake, events, started=fake.t)
    r.start_epoch()
    for _ in range(10):
        step(r, fake, 1.0, correct=8)
    assert r.end_epoch() is None
    event = r.epoch(0.4, 0.9, eval_s=3.0)
    assert event == events[-1] and r.history == [event]
    assert (event["kind"], event["epoch"], event["step"]) == ("epoch", 1.0, 10)
    assert (event["train_loss"], event["train_acc"]) == (pytest.approx(1.0), pytest.approx(0.8))
    assert (event["test_loss"], event["test_acc"]) == (0.4, 0.9)
    assert event["examples_per_s"] == pytest.approx(10.0) and event["elapsed"] == pytest.approx(10)
    assert event["eval_s"] == 3.0


def test_a_loss_fifty_times_the_first_is_divergence_at_its_step() -> None:
    fake, events = FakeTime(), []
    r = reporter(fake, events)
    assert step(r, fake, 2.0) is None
    assert step(r, fake, 90.0) is None
    message = step(r, fake, 101.0, lr=3.0)
    assert message is not None and message.startswith("diverged at step 3")
    assert "lr was 3" in message


def test_losses_wait_on_the_device_until_a_check() -> None:
    fake, events = FakeTime(), []
    r = reporter(fake, events, check_every=5, log_every=5)
    step(r, fake, 2.0)  # step 1 is always checked
    for _ in range(3):
        assert step(r, fake, math.nan) is None  # not read yet: no sync
    assert len(r.pending) == 3
    assert "training loss is nan" in step(r, fake, 2.0)


def test_divergence_needs_a_non_finite_or_far_larger_loss() -> None:
    assert divergence([2.3, 50.0, 114.0], 1, None, 0.1) is None
    assert "step 4" in divergence([2.3, math.inf], 3, 2.3, 0.1)
    assert "1e+04" in divergence([20_000.0], 1, 1_000.0, 0.1)  # the cap: DIVERGE_LIMIT


def test_without_an_evaluation_the_metrics_are_the_running_training_averages() -> None:
    fake, events = FakeTime(), []
    r = reporter(fake, events, log_every=100)
    assert r.training_metrics() == {}
    step(r, fake, 2.0)  # step 1: an event, which resets the interval
    step(r, fake, 4.0, correct=10)
    assert r.training_metrics() == {"train_loss": pytest.approx(4.0), "train_acc": 1.0}


def test_an_epoch_at_chance_with_a_loss_far_above_ln_classes_is_divergence() -> None:
    message = at_chance(train_loss=18.0, test_acc=0.100, num_classes=10, lr=50.0)
    assert message is not None and "0.100" in message and "18" in message
    assert "ln 10" in message and "lr was 50" in message


def test_an_epoch_at_chance_with_the_untrained_loss_is_slow_learning_not_divergence() -> None:
    assert at_chance(train_loss=math.log(10) + 0.01, test_acc=0.100, num_classes=10,
                     lr=0.9) is None


def test_a_high_loss_above_chance_is_not_divergence() -> None:
    assert at_chance(train_loss=18.0, test_acc=0.45, num_classes=10, lr=1.0) is None
