"""Tests for cnnlab.training.train: the training loop, its events, cancel, divergence, recorded runs and
the `train` / `runs` / `reproduce` commands. Small and fast: the bundled sample at 28 px,
BN-LeNet, a few dozen steps."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import torch

from cnnlab import cli
from cnnlab.training.data import FashionMNIST, load_fashion_mnist
from cnnlab.arch.models import build
from cnnlab.arch.models.lenet import BatchNorm
from cnnlab.runs.store import RunStore, Status
from cnnlab.arch.presets import PRESETS
from cnnlab.training.train import (
    TEXTBOOK_RESULTS,
    ConfigError,
    TrainConfig,
    lr_at,
    run_recorded,
    textbook_config,
    train,
)

SPEC = PRESETS["bn-lenet"]  # 28 px, 45k parameters: a step takes milliseconds on a CPU
FAST = TrainConfig(epochs=2, batch_size=256, lr=1.0, data="sample", device="cpu", log_every=5)
STEP_KEYS = {"kind", "step", "epoch", "time", "train_loss", "train_acc", "examples_per_s", "eta_s",
             "lr"}
EPOCH_KEYS = {"kind", "step", "epoch", "time", "train_loss", "train_acc", "test_loss", "test_acc",
              "examples_per_s", "elapsed"}


@pytest.fixture(scope="module")
def sample() -> FashionMNIST:
    return load_fashion_mnist(source="sample")


def step_losses(events: list[dict]) -> list[float]:
    return [e["train_loss"] for e in events if e["kind"] == "step"]


def recorded_run(store: RunStore, spec_dict: dict, config: TrainConfig) -> str:
    run_id = store.create("bn-lenet", spec_dict, config.to_dict()).id
    store.mark_running(run_id, pid=1, device="cpu")
    return run_id


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
    assert result.params == 44_878  # BN-LeNet, DESIGN.md's reference table
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
                                               ("bn-lenet", False)])
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


# ---------------------------------------------------------------- configs


def test_config_round_trips_through_json() -> None:
    config = TrainConfig(lr=0.05, subset=1000, schedule="cosine", max_steps=3, flip=True)
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_a_bad_config_lists_every_problem_by_field() -> None:
    with pytest.raises(ConfigError) as caught:
        TrainConfig.from_dict({"lr": -1, "epochs": 0, "schedule": "linear"})
    assert [p.field for p in caught.value.problems] == ["epochs", "lr", "schedule"]


def test_unknown_config_fields_are_named() -> None:
    with pytest.raises(ConfigError, match="learning_rate"):
        TrainConfig.from_dict({"learning_rate": 0.1})


def test_textbook_config_has_the_books_settings() -> None:
    assert (textbook_config("alexnet").lr, textbook_config("alexnet").batch_size) == (0.01, 128)
    assert (textbook_config("resnet18").lr, textbook_config("resnet18").batch_size) == (0.05, 256)
    assert textbook_config("bn-lenet-scratch").lr == 1.0
    assert textbook_config("resnet34") == textbook_config("resnet18")  # the family's recipe
    assert TEXTBOOK_RESULTS["bn-lenet-scratch"].test_acc == 0.874


# ---------------------------------------------------------------- recorded runs


def test_run_recorded_writes_metrics_and_loadable_checkpoints(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    run_id = recorded_run(store, SPEC.to_dict(), FAST)
    assert run_recorded(store, run_id) is Status.DONE
    run = store.get(run_id)
    assert run.status is Status.DONE and run.result["epochs_done"] == 2
    assert run.result["data_source"] == "sample"
    kinds = [e["kind"] for e in store.metrics(run_id)]
    assert kinds.count("epoch") == 2 and kinds.count("step") == 5
    assert store.checkpoints(run_id) == ["epoch-001", "epoch-002", "final"]
    checkpoint = store.load_checkpoint(run_id, "final")  # weights_only=True inside
    model = build(SPEC)
    model.load_state_dict(checkpoint["state_dict"])
    assert checkpoint["meta"]["epoch"] == 2
    assert checkpoint["meta"]["spec"] == json.loads(SPEC.to_json())  # JSON: lists, not tuples


def test_a_cancel_request_in_the_store_cancels_the_run(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    run_id = recorded_run(store, SPEC.to_dict(), FAST.replace(epochs=1000))
    timer = threading.Timer(1.0, store.request_cancel, args=(run_id,))
    timer.start()
    asked = time.monotonic() + 1.0
    assert run_recorded(store, run_id) is Status.CANCELLED
    assert time.monotonic() - asked < 2.0
    assert "final" in store.checkpoints(run_id)


def test_a_spec_error_fails_the_run_with_its_message(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    run_id = recorded_run(store, {**SPEC.to_dict(), "width": -1}, FAST)
    assert run_recorded(store, run_id) is Status.FAILED
    run = store.get(run_id)
    assert run.message.startswith("invalid spec") and "width" in run.message


def test_a_bad_config_fails_the_run_with_its_message(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    run_id = store.create("bn-lenet", SPEC.to_dict(), {**FAST.to_dict(), "lr": "fast"}).id
    store.mark_running(run_id, pid=1)
    assert run_recorded(store, run_id) is Status.FAILED
    assert "lr" in store.get(run_id).message


def test_a_crash_inside_training_is_recorded_as_failed(tmp_path: Path, monkeypatch) -> None:
    def explode(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("cnnlab.training.train.make_optimizer", explode)
    store = RunStore(tmp_path / "runs")
    run_id = recorded_run(store, SPEC.to_dict(), FAST)
    assert run_recorded(store, run_id) is Status.FAILED
    run = store.get(run_id)
    assert run.message == "RuntimeError: boom" and "Traceback" in run.result["traceback"]


def test_a_diverged_run_is_recorded_as_diverged(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    run_id = recorded_run(store, SPEC.to_dict(), FAST.replace(lr=1e6))
    assert run_recorded(store, run_id) is Status.DIVERGED
    assert "diverged at step" in store.get(run_id).message
    assert "final" not in store.checkpoints(run_id)


# ---------------------------------------------------------------- the command line


def test_cli_train_on_the_sample_records_a_run(runs_dir: Path, capsys) -> None:
    assert cli.main(["train", "bn-lenet", "--data", "sample", "--max-steps", "5"]) == 0
    (run,) = RunStore(runs_dir).list()
    assert run.status is Status.DONE and run.result["steps"] == 5
    assert run.config["lr"] == 1.0 and run.config["max_steps"] == 5  # the book's lr, our cap
    out, err = capsys.readouterr()
    assert f"run id: {run.id}" in out and "SAMPLE" in err


def test_cli_runs_lists_recorded_runs(runs_dir: Path, capsys) -> None:
    cli.main(["train", "bn-lenet", "--data", "sample", "--epochs", "1"])
    capsys.readouterr()
    assert cli.main(["runs"]) == 0
    header, row = capsys.readouterr().out.strip().splitlines()
    assert "best test acc" in header
    assert row.split()[1:4] == ["bn-lenet", "done", "1"]


def test_cli_train_with_a_bad_option_exits_2_without_a_traceback(runs_dir: Path, capsys) -> None:
    assert cli.main(["train", "bn-lenet", "--lr", "-3", "--data", "sample"]) == 2
    err = capsys.readouterr().err
    assert "lr: must be a positive number" in err and "Traceback" not in err
    assert RunStore(runs_dir).list() == []  # nothing recorded for a typo


def test_cli_reproduce_prints_ours_next_to_the_book(runs_dir: Path, capsys) -> None:
    argv = ["reproduce", "--models", "bn-lenet", "--data", "sample", "--max-steps", "3"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    (row,) = [line for line in out.splitlines() if line.startswith("bn-lenet ")]
    assert "0.814" in row and "27,746" in row  # the book's test acc and examples/s
    assert "SAMPLE" in out and len(RunStore(runs_dir).list()) == 1


def test_cli_reproduce_refuses_models_the_chapter_does_not_train(runs_dir: Path, capsys) -> None:
    assert cli.main(["reproduce", "--models", "vgg19"]) == 2
    assert "not a model the chapter trains: vgg19" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cli_train_on_cuda_without_a_gpu_exits_2(runs_dir: Path, capsys) -> None:
    assert cli.main(["train", "bn-lenet", "--device", "cuda", "--data", "sample"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_recalibrating_batch_norm_sets_the_running_stats_to_the_batch_average():
    from cnnlab.training.train import recalibrate_batch_norm

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
