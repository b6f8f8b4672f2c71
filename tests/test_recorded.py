"""Tests for cnnlab.runs.recorded: runs trained and recorded in the run store (metrics,
checkpoints, cancel requests, failures, divergence)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from cnnlab.arch.models import build
from cnnlab.runs.recorded import run_recorded
from cnnlab.runs.store import RunStore, Status
from cnnlab.training.config import TrainConfig
from tests.conftest import FAST, SPEC


def recorded_run(store: RunStore, spec_dict: dict, config: TrainConfig) -> str:
    run_id = store.create("bn-lenet", spec_dict, config.to_dict()).id
    store.mark_running(run_id, pid=1, device="cpu")
    return run_id


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

    monkeypatch.setattr("cnnlab.training.setup.make_optimizer", explode)
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


def test_a_recorded_run_keeps_its_measured_peak_memory(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    run_id = recorded_run(store, SPEC.to_dict(), FAST.replace(max_steps=2))
    assert run_recorded(store, run_id) is Status.DONE
    result = store.get(run_id).result
    # On a CPU: this process's peak resident memory, which holds at least the torch runtime.
    assert result["memory_measured"] > 100 * 2**20
    assert "resident" in result["memory_measured_what"]
