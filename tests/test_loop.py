"""Tests for cnnlab.training.loop and cnnlab.training.setup: the training loop, its events,
cancel, divergence, schedules and precise BN. Small and fast: the bundled sample at 28 px,
BN-LeNet, a few dozen steps."""

from __future__ import annotations

import json
import re
import threading
import time

import pytest
import torch

from cnnlab.arch.models import build
from cnnlab.arch.models.lenet import BatchNorm
from cnnlab.arch.presets import PRESETS
from cnnlab.runs.store import Status
from cnnlab.training.config import TrainConfig
from cnnlab.training.data import FashionMNIST
from cnnlab.training.data import DeviceData
from cnnlab.training.loop import evaluate, recalibrate_batch_norm, train
from cnnlab.training import setup
from cnnlab.training.setup import drop_short_batch, eval_batch_size, lr_at, prepare
from tests.conftest import FAST, SPEC

STEP_KEYS = {"kind", "step", "epoch", "time", "train_loss", "train_acc", "examples_per_s", "eta_s",
             "lr"}
EPOCH_KEYS = {"kind", "step", "epoch", "time", "train_loss", "train_acc", "test_loss", "test_acc",
              "examples_per_s", "eval_s", "elapsed"}


def step_losses(events: list[dict]) -> list[float]:
    return [e["train_loss"] for e in events if e["kind"] == "step"]


# ---------------------------------------------------------------- the loop


def test_a_tiny_run_lowers_the_loss(sample: FashionMNIST) -> None:
    events: list[dict] = []
    result = train(SPEC, FAST.replace(epochs=3, log_every=1), on_event=events.append, data=sample)
    losses = step_losses(events)
    assert result.status is Status.DONE
    assert len(losses) == 36  # 3 epochs of ceil(3000 / 256) = 12 steps
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5


def test_events_have_the_promised_keys(sample: FashionMNIST) -> None:
    events: list[dict] = []
    result = train(SPEC, FAST, on_event=events.append, data=sample)
    steps = [e for e in events if e["kind"] == "step"]
    epochs = [e for e in events if e["kind"] == "epoch"]
    assert all(STEP_KEYS <= e.keys() for e in steps)
    assert all(EPOCH_KEYS <= e.keys() for e in epochs)
    assert [e["step"] for e in steps] == [1, 5, 10, 15, 20]
    assert [e["epoch"] for e in epochs] == [1.0, 2.0]
    assert steps[0]["data_source"] == "sample" and "SAMPLE" in steps[0]["data"]
    assert result.history == epochs and result.metrics == epochs[-1]
    assert 0 <= result.metrics["test_acc"] <= 1 and result.examples_per_s > 0


def test_result_says_which_data_and_how_fast(sample: FashionMNIST) -> None:
    result = train(SPEC, FAST.replace(epochs=1), data=sample)
    assert result.data_source == "sample" and "SAMPLE" in result.data
    assert result.params == 44_878  # BN-LeNet's parameters in d2l 7.5
    assert result.epochs_done == 1 and result.steps == 12
    assert json.loads(json.dumps(result.to_dict()))["best_test_acc"] == result.metrics["test_acc"]


def test_a_subset_trains_on_that_many_balanced_images(sample: FashionMNIST) -> None:
    result = train(SPEC, FAST.replace(epochs=1, subset=500, batch_size=100), data=sample)
    assert result.steps == 5
    assert "500 train (class-balanced subset of 3,000)" in result.data


def test_should_stop_ends_a_run_within_two_seconds(sample: FashionMNIST) -> None:
    flag = threading.Event()
    stopped_at: list[float] = []

    def flip_flag() -> None:
        time.sleep(1.0)
        stopped_at.append(time.monotonic())
        flag.set()

    threading.Thread(target=flip_flag, daemon=True).start()
    result = train(SPEC, FAST.replace(epochs=1000), should_stop=flag.is_set, data=sample)
    latency = time.monotonic() - stopped_at[0]
    assert result.status is Status.CANCELLED and "cancelled" in result.message
    assert latency < 2.0
    assert result.model is not None


def test_should_stop_is_heard_between_evaluation_batches(sample: FashionMNIST) -> None:
    calls = 0

    def stop_once_evaluating() -> bool:
        nonlocal calls
        calls += 1
        return calls > 12  # the first 12 calls are the first epoch's steps; then eval begins

    events: list[dict] = []
    result = train(SPEC, FAST, should_stop=stop_once_evaluating, on_event=events.append,
                   data=sample)
    assert result.status is Status.CANCELLED and "evaluation" in result.message
    assert result.steps == 12 and not [e for e in events if e["kind"] == "epoch"]


def test_a_huge_learning_rate_ends_as_diverged_with_step_and_loss(sample: FashionMNIST) -> None:
    result = train(SPEC, FAST.replace(lr=1e6, epochs=5), data=sample)
    assert result.status is Status.DIVERGED
    assert "diverged at step" in result.message and "loss" in result.message
    assert "lr was 1e+06" in result.message
    assert result.steps < 60  # stopped early instead of training on garbage


def test_an_epoch_that_ends_at_chance_with_a_huge_loss_is_diverged(sample: FashionMNIST) -> None:
    # BN-LeNet at lr 50: no step's loss is 50x the first, but the epoch ends at a loss near 18
    # and 0.100 test accuracy. It used to finish "done".
    result = train(SPEC, FAST.replace(lr=50.0), data=sample)
    assert result.status is Status.DIVERGED
    assert "test accuracy 0.100" in result.message
    loss = float(re.search(r"training loss ([0-9.]+)", result.message).group(1))
    assert loss > 10  # far above an untrained network's 2.30
    assert result.steps == 12  # stopped after the first epoch


def test_lenet_with_sigmoids_at_ln_10_after_an_epoch_is_slow_not_diverged(sample: FashionMNIST
                                                                          ) -> None:
    result = train(PRESETS["lenet"], FAST.replace(lr=0.9, epochs=1), data=sample)
    first = result.history[0]
    assert first["test_acc"] < 0.12 and 2.2 < first["train_loss"] < 2.6  # at chance, near ln 10
    assert result.status is Status.DONE


def test_the_same_seed_gives_identical_losses(sample: FashionMNIST) -> None:
    def losses(seed: int) -> list[float]:
        events: list[dict] = []
        config = FAST.replace(seed=seed, max_steps=15, log_every=1, flip=True)
        train(PRESETS["bn-lenet-scratch"], config, on_event=events.append, data=sample)
        return step_losses(events)

    first = losses(3)
    assert losses(3) == first
    assert losses(4) != first


def test_max_steps_stops_and_still_evaluates(sample: FashionMNIST) -> None:
    result = train(SPEC, FAST.replace(max_steps=7), data=sample)
    assert result.status is Status.DONE and result.steps == 7 and result.epochs_done == 0
    assert "max_steps=7" in result.message and "test_acc" in result.metrics


def test_a_small_width_resnet_trains_at_28_pixels(sample: FashionMNIST) -> None:
    spec = PRESETS["resnet18"].replace(width=0.25, input_size=28)
    result = train(spec, FAST.replace(lr=0.05, max_steps=4), data=sample)
    assert result.status is Status.DONE and result.steps == 4


@pytest.mark.parametrize(("name", "expected"), [("alexnet-small", True), ("resnet18", False),
                                               ("bn-lenet", False), ("lenet", False)])
def test_on_the_cpu_channels_last_is_used_only_without_batch_norm(
        sample: FashionMNIST, name: str, expected: bool) -> None:
    # PyTorch's CPU BatchNorm is far less precise in channels-last; LeNet is faster in NCHW.
    spec = PRESETS[name].replace(width=0.25, input_size=28)
    result = train(spec, FAST.replace(lr=0.01, max_steps=1), data=sample)
    assert result.channels_last is expected and result.amp is False


def test_cosine_schedule_falls_from_lr_to_zero() -> None:
    config = TrainConfig(lr=0.4, schedule="cosine")
    assert lr_at(config, 0, 100) == pytest.approx(0.4)
    assert lr_at(config, 50, 100) == pytest.approx(0.2)
    assert lr_at(config, 100, 100) == pytest.approx(0.0, abs=1e-12)


def test_step_schedule_divides_by_ten_at_half_and_three_quarters() -> None:
    config = TrainConfig(lr=1.0, schedule="step")
    assert [lr_at(config, s, 100) for s in (0, 49, 50, 75)] == pytest.approx([1, 1, 0.1, 0.01])


def test_anneal_schedule_holds_the_lr_for_four_fifths_then_falls_to_zero() -> None:
    config = TrainConfig(lr=0.5, schedule="anneal")
    assert [lr_at(config, s, 100) for s in (0, 50, 80, 90, 99)] == pytest.approx(
        [0.5, 0.5, 0.5, 0.25, 0.025])
    assert sum(lr_at(config, s, 1000) for s in range(1000)) == pytest.approx(0.9 * 0.5 * 1000,
                                                                             rel=1e-3)


# ---------------------------------------------------------------- precise BN and compile


def test_recalibrating_batch_norm_sets_the_running_stats_to_the_batch_average():
    torch.manual_seed(0)
    torch_bn, scratch_bn = torch.nn.BatchNorm2d(3), BatchNorm(3, num_dims=4)
    model = torch.nn.Sequential(torch_bn, scratch_bn).eval()
    batches = [torch.randn(8, 3, 4, 4) * (k + 1) + k for k in range(4)]
    assert recalibrate_batch_norm(model, batches) == 4
    expected_mean = torch.stack([b.mean(dim=(0, 2, 3)) for b in batches]).mean(dim=0)
    assert torch.allclose(torch_bn.running_mean, expected_mean, atol=1e-5)
    assert not model.training and torch_bn.momentum == 0.1  # mode and momentum put back
    assert scratch_bn.momentum == 0.1 and not torch.equal(scratch_bn.moving_var,
                                                           torch.ones(1, 3, 1, 1))


@pytest.mark.slow
def test_a_compiled_run_trains_and_saves_plain_parameter_names(sample):
    spec = PRESETS["lenet"]
    config = TrainConfig(data="sample", batch_size=64, lr=0.9, max_steps=12, log_every=4,
                         compile=True, bn_recalibration=0)
    result = train(spec, config, data=sample)
    assert result.status == "done"
    assert set(result.model.state_dict()) == set(build(spec).state_dict())


def test_a_compiled_run_drops_a_short_last_batch_so_it_compiles_once(sample: FashionMNIST) -> None:
    # 3,000 sample images in batches of 256 leave a last batch of 184; torch.compile would
    # compile again for that shape. torch.compile itself is lazy: nothing compiles here.
    cpu = torch.device("cpu")
    assert prepare(SPEC, FAST.replace(compile=True), cpu, sample).drop_last
    assert not prepare(SPEC, FAST, cpu, sample).drop_last


def test_padded_evaluation_scores_exactly_as_unpadded_and_feeds_one_shape(
        sample: FashionMNIST) -> None:
    # 500 test images in batches of 192: two full batches and one of 116, padded to 192.
    model = build(SPEC)
    model.eval()
    test = DeviceData(sample.test_images[:500], sample.test_labels[:500], "cpu")
    shapes: set[tuple[int, ...]] = set()
    hook = model.register_forward_pre_hook(lambda _, args: shapes.add(tuple(args[0].shape)))
    padded = evaluate(model, test, 192, pad_last=True)
    assert shapes == {(192, 1, 28, 28)}
    hook.remove()
    plain = evaluate(model, test, 192)
    assert padded[0] == pytest.approx(plain[0], rel=1e-5) and padded[1] == plain[1]
    whole = evaluate(model, test, 500)  # and both agree with one batch of everything
    assert plain[0] == pytest.approx(whole[0], rel=1e-5) and plain[1] == whole[1]


def test_on_a_gpu_every_batch_has_one_shape_and_elsewhere_evaluation_batches_are_large():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")  # a device object needs no GPU
    assert eval_batch_size(128, cuda, 96) == 128 and eval_batch_size(256, cuda, 28) == 256
    assert eval_batch_size(128, cpu, 96) == 256 and eval_batch_size(128, cpu, 224) == 188
    assert eval_batch_size(512, cpu, 28) == 512  # never below the training's
    # 60,000 in batches of 128 leave 96: dropped on a GPU or when compiled, kept otherwise
    assert drop_short_batch(60_000, 128, compile=False, fixed=True)
    assert drop_short_batch(60_000, 128, compile=True, fixed=False)
    assert not drop_short_batch(60_000, 128, compile=False, fixed=False)
    assert drop_short_batch(257, 256, compile=False, fixed=False)  # a batch of one, always
    assert not drop_short_batch(60_000, 250, compile=True, fixed=True)  # no short batch
    assert not drop_short_batch(100, 256, compile=True, fixed=True)  # the only batch stays


def test_a_run_with_one_batch_shape_as_on_a_gpu_trains_and_scores_every_test_image(
        monkeypatch, sample: FashionMNIST) -> None:
    # prepare's and the loop's GPU wiring on this CPU: fixed_shapes is what tells them a GPU.
    from cnnlab.training import loop
    for module in (setup, loop):
        monkeypatch.setattr(module, "fixed_shapes", lambda device: True)
    # 3,000 sample images in batches of 256 leave 184, which sit out; the 1,000 test images
    # are scored in four batches of 256, the last padded.
    batch_sizes: set[int] = set()

    def record(module, args) -> None:  # the spec check's meta-device passes do not count
        if args and args[0].device.type != "meta":
            batch_sizes.add(args[0].shape[0])

    hook = torch.nn.modules.module.register_module_forward_pre_hook(record)
    try:
        result = train(SPEC, FAST.replace(epochs=1, bn_recalibration=2), data=sample)
    finally:
        hook.remove()
    assert result.status is Status.DONE and result.steps == 3_000 // 256
    assert batch_sizes == {256}  # training, precise BN and evaluation alike
    test = DeviceData(sample.test_images, sample.test_labels, "cpu")
    assert result.metrics["test_acc"] == evaluate(result.model, test, 1_000)[1]  # padding: nil


def test_cuda_graphs_asked_for_on_a_cpu_train_eagerly_and_say_so(sample: FashionMNIST) -> None:
    config = FAST.replace(device="auto", cuda_graphs=True, max_steps=3)  # auto: this CPU
    assert not prepare(SPEC, config, torch.device("cpu"), sample).cuda_graphs
    events: list[dict] = []
    result = train(SPEC, config, on_event=events.append, data=sample)
    assert result.status is Status.DONE
    first = next(e for e in events if e["kind"] == "step")
    assert first["cuda_graphs"] is False and "cuda_graphs_note" not in first


def test_a_capture_that_fails_leaves_the_model_eager_with_the_reason(monkeypatch) -> None:
    # torch.cuda.make_graphed_callables needs a GPU; stand in for one whose capture refuses.
    model = build(SPEC)

    def refuse(module, sample_args):
        # a wrapper of the model is captured, so the model's own forward stays eager
        assert module is not model and module[0] is model
        assert [tuple(x.shape) for x in sample_args] == [(8, 1, 28, 28)]
        raise RuntimeError("operation not permitted when stream is capturing\nmore detail")

    monkeypatch.setattr(torch.cuda, "make_graphed_callables", refuse)
    forward, why = setup.graphed_forward(model, torch.zeros(8, 1, 28, 28), amp=False)
    assert forward is model
    assert why == "CUDA graphs off: operation not permitted when stream is capturing"
