"""Tests for cnnlab.runs.ray_executor and the executor choice: runs as Ray tasks on a real local
Ray instance (2 CPUs, started once for the module), recorded by the server as a local worker's.

Slow: the Ray instance takes about 6 s to start, and each run's first task imports torch in a
new Ray worker process.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

ray = pytest.importorskip("ray")

from cnnlab.arch.presets import PRESETS  # noqa: E402
from cnnlab.runs.executors import ExecutorError, LocalProcesses, choose_executor  # noqa: E402
from cnnlab.runs.jobs import make_job_manager  # noqa: E402
from cnnlab.runs.ray_executor import RayExecutor, ray_reason, record_message  # noqa: E402
from cnnlab.runs.store import RunStore, Status  # noqa: E402
from cnnlab.training.config import TrainConfig  # noqa: E402

SPEC = PRESETS["bn-lenet"]
RUN_TIMEOUT_S = 120  # generous: other test processes may share the two cores
# Two epochs of the 3,000-image sample (12 steps each): both epoch events, checkpoints, final.
TWO_EPOCHS = TrainConfig(epochs=2, batch_size=256, lr=1.0, data="sample", device="cpu",
                         log_every=4, seed=3)
# Trains until cancelled or killed; an epoch (46 steps of 64) takes about a second.
ENDLESS = TrainConfig(epochs=5000, batch_size=64, lr=0.9, data="sample", device="cpu",
                      log_every=5)
EPOCH_FIELDS = ("epoch", "step", "train_loss", "train_acc", "test_loss", "test_acc")


@pytest.fixture(scope="module", autouse=True)
def ray_instance() -> Iterator[None]:
    """A local Ray instance for the module, small: the machine is shared."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / "runs")


def wait_for(condition: Callable[[], object], timeout: float = RUN_TIMEOUT_S) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout} s waiting for {condition}")


def ended(store: RunStore, run_id: str) -> Callable[[], bool]:
    return lambda: store.get(run_id).status.terminal


def epoch_values(store: RunStore, run_id: str) -> list[tuple[float, ...]]:
    return [tuple(e[k] for k in EPOCH_FIELDS) for e in store.metrics(run_id, "epoch")]


# -- choosing the executor ----------------------------------------------------------------------


def test_without_an_address_runs_train_in_local_worker_processes(monkeypatch) -> None:
    monkeypatch.delenv("CNNLAB_RAY_ADDRESS", raising=False)
    assert isinstance(choose_executor(cpu_threads=1), LocalProcesses)


def test_the_address_in_the_environment_chooses_the_ray_cluster(monkeypatch, store) -> None:
    monkeypatch.setenv("CNNLAB_RAY_ADDRESS", "auto")
    manager = make_job_manager(store, poll_interval=0.1)
    try:
        assert isinstance(manager.executor, RayExecutor)
        assert manager.cpu_slots == 2  # the module's instance has 2 CPUs and no GPU
    finally:
        manager.shutdown()


def test_a_ray_client_address_is_refused_with_the_fix(monkeypatch) -> None:
    with pytest.raises(ExecutorError, match=r"ray start --address=HEAD:6379"):
        choose_executor("ray://head:10001", cpu_threads=1)


def test_a_cluster_address_with_nothing_listening_is_refused_at_once_with_the_fix(
        monkeypatch) -> None:
    import cnnlab.runs.ray_executor as ray_executor

    monkeypatch.setattr(ray_executor.ray, "is_initialized", lambda: False)  # as at server start
    started = time.monotonic()
    with pytest.raises(ExecutorError, match=r"cannot use the Ray cluster at '127\.0\.0\.1:1'.*"
                                            r"ray start --head"):
        choose_executor("127.0.0.1:1", cpu_threads=1)
    assert time.monotonic() - started < ray_executor.PROBE_TIMEOUT_S + 1


def test_ray_missing_is_a_message_naming_the_install_and_the_variable(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if not installed
    monkeypatch.delitem(sys.modules, "cnnlab.runs.ray_executor")
    with pytest.raises(ExecutorError, match=r"pip install ray==2\.60\.0.*unset CNNLAB_RAY_ADDRESS"):
        choose_executor("auto", cpu_threads=1)


def test_the_server_applies_only_the_messages_a_recorded_run_writes() -> None:
    with pytest.raises(ValueError, match="delete"):
        record_message(object(), ("delete", "everything"))


def test_a_ray_error_becomes_one_line_without_terminal_colours() -> None:
    error = RuntimeError("\x1b[36mray::train_remote()\x1b[39m (pid=1)\n  File x\nBoom: it broke")
    assert ray_reason(error) == "RuntimeError: Boom: it broke"


# -- runs on the cluster ------------------------------------------------------------------------


def test_a_run_on_ray_records_the_same_epochs_and_weights_as_a_local_worker(managers, store
                                                                            ) -> None:
    # Exactly equal, not close: both train with one torch thread on this machine's CPU from
    # the same seed, so every kernel sums in the same order; a difference would mean the
    # stream lost, reordered or altered what the run reported.
    # The two managers share one store and each starts whichever run is queued first, so the
    # Ray manager starts only once the local one has taken its run (it then stays busy).
    local = managers(cpu_slots=1, cpu_threads=1)
    local_id = local.submit("bn-lenet", SPEC, TWO_EPOCHS)
    wait_for(lambda: store.get(local_id).status is not Status.QUEUED)
    on_ray = managers(executor=RayExecutor("auto"), cpu_slots=1)
    ray_id = on_ray.submit("bn-lenet", SPEC, TWO_EPOCHS)
    for run_id in (local_id, ray_id):
        wait_for(ended(store, run_id))
    local_run, ray_run = store.get(local_id), store.get(ray_id)
    assert (local_run.status, ray_run.status) == (Status.DONE, Status.DONE), ray_run.message
    assert ray_run.result["executor"] == "ray" and ray_run.result["pid"] != os.getpid()
    # A Ray worker process outlives its tasks: its peak is an upper bound, and says so.
    assert "upper bound" in ray_run.result["memory_measured_what"]
    assert "upper bound" not in local_run.result["memory_measured_what"]
    assert len(epoch_values(store, ray_id)) == 2
    assert epoch_values(store, ray_id) == epoch_values(store, local_id)
    assert len(store.metrics(ray_id, "step")) == len(store.metrics(local_id, "step"))
    assert store.checkpoints(ray_id) == store.checkpoints(local_id) == [
        "epoch-001", "epoch-002", "final"]
    ours, theirs = (store.load_checkpoint(r, "final") for r in (ray_id, local_id))
    # The same meta, but for the run id and the clock (time, examples/s) in the last event.
    untimed = {k: v for k, v in theirs["meta"].items() if k != "metrics"}
    assert {k: v for k, v in ours["meta"].items() if k != "metrics"} == {**untimed,
                                                                        "run_id": ray_id}
    assert all(ours["meta"]["metrics"][k] == theirs["meta"]["metrics"][k] for k in EPOCH_FIELDS)
    for name, tensor in theirs["state_dict"].items():
        assert torch.equal(ours["state_dict"][name], tensor), name


def test_cancelling_a_run_on_ray_stops_it_quickly_with_a_final_checkpoint(managers, store
                                                                         ) -> None:
    manager = managers(executor=RayExecutor("auto"), cpu_slots=1)
    run_id = manager.submit("bn-lenet", SPEC, ENDLESS)
    wait_for(lambda: store.metrics(run_id, "step"))
    asked = time.monotonic()
    assert manager.cancel(run_id) is Status.RUNNING
    wait_for(ended(store, run_id), timeout=10)
    run = store.get(run_id)
    assert run.status is Status.CANCELLED, run.message
    # The run stopped itself ("cancelled at step N" or "during evaluation"): no force needed.
    assert run.message.startswith("cancelled") and "force" not in run.message, run.message
    assert time.monotonic() - asked < 3
    assert "final" in store.checkpoints(run_id)


def test_a_run_that_outlives_the_grace_period_is_cancelled_through_ray_by_force(managers,
                                                                               store) -> None:
    # No grace at all: the dispatcher cancels the Ray task before the run polls its flag.
    manager = managers(executor=RayExecutor("auto"), cpu_slots=1, cancel_grace=0.0)
    run_id = manager.submit("bn-lenet", SPEC, ENDLESS)
    wait_for(lambda: store.metrics(run_id, "step"))
    manager.cancel(run_id)
    wait_for(ended(store, run_id), timeout=15)
    run = store.get(run_id)
    assert run.status is Status.CANCELLED
    assert "by force" in run.message
    wait_for(lambda: not manager.executor.running(), timeout=5)  # its stream has ended too


def test_a_killed_ray_worker_fails_the_run_with_rays_reason_and_keeps_its_epochs(managers,
                                                                                store) -> None:
    manager = managers(executor=RayExecutor("auto"), cpu_slots=1)
    run_id = manager.submit("bn-lenet", SPEC, ENDLESS)
    wait_for(lambda: "epoch-001" in store.checkpoints(run_id))
    pid = store.get(run_id).result["pid"]  # the Ray worker process training the run
    # The task never opens the run store: the server is its only writer.
    opened = {os.path.realpath(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    assert not any(path.startswith(str(store.runs_dir.resolve())) for path in opened)
    os.kill(pid, signal.SIGKILL)
    wait_for(ended(store, run_id), timeout=30)
    run = store.get(run_id)
    assert run.status is Status.FAILED
    assert "Ray task failed" in run.message and "Error" in run.message, run.message
    assert store.metrics(run_id, "epoch")[0]["epoch"] == 1
    assert "epoch-001" in store.checkpoints(run_id)


def test_a_cluster_the_server_cannot_use_is_a_message_on_the_page_not_a_traceback(
        tmp_path, monkeypatch) -> None:
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from cnnlab.views.text import markdown_text

    monkeypatch.setenv("CNNLAB_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("CNNLAB_RAY_ADDRESS", "ray://head:10001")
    st.cache_resource.clear()  # the job manager is shared between AppTest instances
    app = Path(__file__).resolve().parent.parent / "app.py"
    at = AppTest.from_file(str(app), default_timeout=60).run()
    st.cache_resource.clear()
    assert not at.exception
    errors = [e.value for e in at.sidebar.error]  # Markdown, escaped: the address is shown literally
    assert any("Ray Client" in e and markdown_text("CNNLAB_RAY_ADDRESS=auto") in e
               and markdown_text("'ray://head:10001'") in e for e in errors), errors
