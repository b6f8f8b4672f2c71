"""Tests for cnnlab.runs.jobs, .slots, .processes and .worker: the shared queue, slot routing,
worker processes, cancel, crashes.

Real worker processes train BN-LeNet on the bundled sample for a few dozen steps; each run
costs a few seconds (mostly importing torch in the new process), so those tests are slow.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from cnnlab.arch.checks import SpecError
from cnnlab.arch.presets import PRESETS
from cnnlab.runs.processes import pid_alive, worker_env
from cnnlab.runs.slots import choose_device, fits_on_gpu, gpu_estimate
from cnnlab.runs.store import RunStore, Status, StoreError
from cnnlab.training.config import ConfigError, TrainConfig

ROOT = Path(__file__).resolve().parents[1]
SPEC = PRESETS["bn-lenet"]  # 28 px, 45k parameters: thousands of examples/s on a CPU
RUN_TIMEOUT_S = 90  # generous: the CI machine may be busy with other test processes


def tiny(max_steps: int = 20, **changes) -> TrainConfig:
    """A run of a few seconds: the bundled sample, small batches, stops after max_steps."""
    return TrainConfig(data="sample", batch_size=64, epochs=1, max_steps=max_steps,
                       log_every=5, device="cpu").replace(**changes)


def endless() -> TrainConfig:
    """A run that trains until it is cancelled or killed (thousands of epochs of the sample)."""
    return tiny(max_steps=None, epochs=5000)


def wait_for(condition: Callable[[], object], timeout: float = RUN_TIMEOUT_S, every: float = 0.05):
    """Poll until condition() is truthy and return its value; fail the test on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"timed out after {timeout} s waiting for {condition}")


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / "runs")


def running_with_steps(store: RunStore, run_id: str) -> Callable[[], bool]:
    """Condition: the run is running and has logged at least one training step."""
    def ready() -> bool:
        return store.get(run_id).status is Status.RUNNING and bool(store.metrics(run_id, "step"))
    return ready


def finished(store: RunStore, run_id: str) -> Callable[[], bool]:
    return lambda: store.get(run_id).status.terminal


# -- submitting -----------------------------------------------------------------------------


def test_an_invalid_spec_is_refused_at_submit_with_spec_error(managers, store) -> None:
    manager = managers(cpu_slots=0)
    bad = {**SPEC.to_dict(), "conv_channels": [0, 16]}
    with pytest.raises(SpecError, match="conv_channels"):
        manager.submit("bn-lenet", bad, tiny())
    assert store.list() == []


def test_a_bad_training_config_is_refused_at_submit_naming_the_field(managers, store) -> None:
    manager = managers(cpu_slots=0)
    with pytest.raises(ConfigError, match="lr"):
        manager.submit("bn-lenet", SPEC, {**tiny().to_dict(), "lr": -1.0})
    with pytest.raises(ConfigError, match="unknown field"):
        manager.submit("bn-lenet", SPEC, {"learning_rate": 0.1})
    assert store.list() == []


def test_asking_for_cuda_on_a_server_without_a_gpu_is_refused_at_submit(managers) -> None:
    manager = managers(cpu_slots=0)
    if manager.num_gpus:
        pytest.skip("this machine has a GPU")
    with pytest.raises(ConfigError, match="device"):
        manager.submit("bn-lenet", SPEC, tiny(device="cuda"))


def test_submissions_from_eight_threads_are_all_recorded_in_the_queue(managers, store) -> None:
    manager = managers(cpu_slots=0)  # nothing starts: the test is about the queue
    start = threading.Barrier(8)
    ids: list[str] = []

    def submit_three(i: int) -> None:
        start.wait()
        for j in range(3):
            ids.append(manager.submit("bn-lenet", SPEC, tiny(), name=f"student {i}.{j}"))

    threads = [threading.Thread(target=submit_three, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ids) == len(set(ids)) == 24
    queued = [run.id for run in store.queued()]
    assert sorted(queued) == sorted(ids)
    assert [manager.queue_position(run_id) for run_id in queued] == list(range(1, 25))


def test_cancelling_a_queued_run_cancels_it_at_once(managers, store) -> None:
    manager = managers(cpu_slots=0)
    first = manager.submit("bn-lenet", SPEC, tiny())
    second = manager.submit("bn-lenet", SPEC, tiny())
    assert manager.cancel(first) is Status.CANCELLED
    run = store.get(first)
    assert run.status is Status.CANCELLED and run.started_at is None
    assert manager.queue_position(first) is None
    assert manager.queue_position(second) == 1
    assert [r.id for r in manager.active()] == [second]


def test_a_new_manager_on_the_same_runs_dir_sees_the_same_queue(managers, store) -> None:
    before = managers(cpu_slots=0)
    ids = [before.submit("bn-lenet", SPEC, tiny(), name=f"run {i}") for i in range(2)]
    before.shutdown()
    after = managers(store=RunStore(store.runs_dir), cpu_slots=0)  # a reload or a restart
    assert [run.id for run in after.active()] == ids
    assert [after.queue_position(run_id) for run_id in ids] == [1, 2]
    assert after.get(ids[0]).name == "run 0"


def test_a_worker_for_a_run_that_is_no_longer_queued_exits_and_leaves_it_alone(store) -> None:
    run_id = store.create("bn-lenet", SPEC.to_dict(), tiny().to_dict()).id
    store.request_cancel(run_id)
    done = subprocess.run(
        [sys.executable, "-m", "cnnlab.runs.worker", "--runs-dir", str(store.runs_dir), run_id],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    run = store.get(run_id)
    assert run.status is Status.CANCELLED and run.worker_pid is None


# -- routing (the GPU half cannot run on a CPU-only machine, so it is checked as a function) ---


def test_runs_that_may_use_a_gpu_go_to_the_least_busy_gpu_and_wait_when_all_are_taken() -> None:
    slots = dict(cpu_slots=1, gpu_slots=2, num_gpus=2)
    assert choose_device("auto", Counter(), **slots) == "cuda:0"
    assert choose_device("cuda", Counter({"cuda:0": 1}), **slots) == "cuda:1"
    assert choose_device("auto", Counter({"cuda:0": 1, "cuda:1": 1}), **slots) is None
    assert choose_device("cpu", Counter({"cuda:0": 1, "cuda:1": 1}), **slots) == "cpu"


def test_without_gpus_every_run_shares_the_cpu_slots() -> None:
    assert choose_device("auto", Counter(), cpu_slots=1, gpu_slots=0, num_gpus=0) == "cpu"
    assert choose_device("auto", Counter({"cpu": 1}), cpu_slots=1, gpu_slots=0, num_gpus=0) is None
    assert choose_device("cpu", Counter(), cpu_slots=0, gpu_slots=0, num_gpus=0) is None


GIB = 2**30


def test_runs_share_a_gpu_while_their_estimates_fit_its_budget_up_to_runs_per_gpu() -> None:
    assert fits_on_gpu(10 * GIB, [], candidate=20 * GIB, runs_per_gpu=4)  # idle: any run
    assert fits_on_gpu(10 * GIB, [3 * GIB, 3 * GIB], candidate=4 * GIB, runs_per_gpu=4)
    assert not fits_on_gpu(10 * GIB, [3 * GIB, 3 * GIB], candidate=5 * GIB, runs_per_gpu=4)
    assert not fits_on_gpu(10 * GIB, [GIB] * 4, candidate=GIB, runs_per_gpu=4)
    # Anything unknown (no budget, a run estimated for the CPU) means the GPU alone.
    assert not fits_on_gpu(None, [GIB], candidate=GIB, runs_per_gpu=4)
    assert not fits_on_gpu(10 * GIB, [None], candidate=GIB, runs_per_gpu=4)
    assert not fits_on_gpu(10 * GIB, [GIB], candidate=None, runs_per_gpu=4)
    assert gpu_estimate({"memory_estimated": 5, "memory_device": "cuda"}) == 5
    assert gpu_estimate({"memory_estimated": 5, "memory_device": "cpu"}) is None


def test_a_run_goes_to_the_least_busy_gpu_it_fits_on() -> None:
    shared = dict(cpu_slots=1, gpu_slots=8, num_gpus=2, budgets=[10 * GIB, 10 * GIB],
                  runs_per_gpu=4)
    busy = Counter({"cuda:0": 1, "cuda:1": 2})
    loads = {"cuda:0": [8 * GIB], "cuda:1": [2 * GIB, 2 * GIB]}
    assert choose_device("auto", busy, loads=loads, candidate=GIB, **shared) == "cuda:0"
    assert choose_device("auto", busy, loads=loads, candidate=3 * GIB, **shared) == "cuda:1"
    assert choose_device("auto", busy, loads=loads, candidate=7 * GIB, **shared) is None


def test_a_worker_sees_only_its_own_gpu_or_none_on_the_cpu(monkeypatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")  # the server was given GPUs 2 and 3
    assert worker_env("cuda:1", threads=2)["CUDA_VISIBLE_DEVICES"] == "3"
    cpu = worker_env("cpu", threads=1)
    assert cpu["CUDA_VISIBLE_DEVICES"] == "" and cpu["OMP_NUM_THREADS"] == "1"


# -- running --------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_submitted_run_goes_from_queued_to_running_to_done_with_metrics(managers, store) -> None:
    manager = managers(cpu_slots=1)
    run_id = manager.submit("bn-lenet", SPEC, tiny(max_steps=20), name="first")
    assert manager.status(run_id) is Status.QUEUED  # a worker process takes a moment to claim it
    seen = [Status.QUEUED]

    def done() -> bool:
        status = manager.status(run_id)
        if status is not seen[-1]:
            seen.append(status)
        return status.terminal

    wait_for(done, every=0.02)
    run = store.get(run_id)
    assert seen == [Status.QUEUED, Status.RUNNING, Status.DONE], run.message
    assert run.device == "cpu" and run.worker_pid not in (None, os.getpid())
    assert [e["step"] for e in store.metrics(run_id, "step")][-1] == 20
    assert len(store.metrics(run_id, "epoch")) == 1
    assert "final" in store.checkpoints(run_id)
    assert manager.active() == []


@pytest.mark.slow
def test_with_one_cpu_slot_runs_go_one_at_a_time_in_submission_order(managers, store) -> None:
    manager = managers(cpu_slots=1)
    ids = [manager.submit("bn-lenet", SPEC, tiny(max_steps=20), name=f"run {i}") for i in range(3)]
    most_running = 0
    positions = None

    def all_done() -> bool:
        nonlocal most_running, positions
        statuses = [manager.status(run_id) for run_id in ids]
        most_running = max(most_running, statuses.count(Status.RUNNING))
        if positions is None and statuses[0] is Status.RUNNING:
            positions = [manager.queue_position(run_id) for run_id in ids]
        return all(s.terminal for s in statuses)

    wait_for(all_done, timeout=3 * RUN_TIMEOUT_S, every=0.02)
    runs = [store.get(run_id) for run_id in ids]
    assert [run.status for run in runs] == [Status.DONE] * 3, [run.message for run in runs]
    assert most_running == 1
    assert positions == [None, 1, 2]
    for earlier, later in zip(runs, runs[1:]):
        assert later.started_at >= earlier.finished_at


@pytest.mark.slow
def test_cancelling_a_running_run_stops_it_within_a_few_seconds(managers, store) -> None:
    manager = managers(cpu_slots=1)
    run_id = manager.submit("bn-lenet", SPEC, endless())
    wait_for(running_with_steps(store, run_id))
    pid = store.get(run_id).worker_pid
    asked = time.monotonic()
    assert manager.cancel(run_id) is Status.RUNNING  # the worker stops itself at its next poll
    wait_for(finished(store, run_id), timeout=5)
    stopped_after = time.monotonic() - asked
    run = store.get(run_id)
    assert run.status is Status.CANCELLED, run.message
    assert "by force" not in (run.message or "")  # it stopped on its own, well within the grace
    assert stopped_after < 5
    wait_for(lambda: not pid_alive(pid), timeout=5)


@pytest.mark.slow
def test_a_worker_that_ignores_a_cancel_is_killed_after_the_grace_period(managers, store) -> None:
    manager = managers(cpu_slots=1, cancel_grace=1.0)
    run_id = manager.submit("bn-lenet", SPEC, endless())
    wait_for(running_with_steps(store, run_id))
    pid = store.get(run_id).worker_pid
    os.kill(pid, signal.SIGSTOP)  # frozen: it can no longer see the cancel flag
    manager.cancel(run_id)
    wait_for(finished(store, run_id), timeout=1.0 + 8)
    run = store.get(run_id)
    assert run.status is Status.CANCELLED
    assert "by force" in run.message
    assert not pid_alive(pid)


@pytest.mark.slow
def test_a_worker_killed_while_the_manager_watches_is_marked_failed_with_the_signal(
        managers, store) -> None:
    manager = managers(cpu_slots=1)
    run_id = manager.submit("bn-lenet", SPEC, endless())
    wait_for(running_with_steps(store, run_id))
    os.kill(store.get(run_id).worker_pid, signal.SIGKILL)  # as the OOM killer would
    wait_for(finished(store, run_id), timeout=10)
    run = store.get(run_id)
    assert run.status is Status.FAILED
    assert "SIGKILL" in run.message and "metrics up to that point are kept" in run.message
    assert store.metrics(run_id, "step")


@pytest.mark.slow
def test_a_run_whose_worker_was_killed_while_no_server_ran_is_interrupted_on_the_next_start(
        managers, store) -> None:
    old = managers(cpu_slots=1)
    run_id = old.submit("bn-lenet", SPEC, endless())
    wait_for(lambda: store.metrics(run_id, "epoch") and store.checkpoints(run_id))
    old.shutdown()  # the server dies; its worker does not (it has a session of its own)
    pid = store.get(run_id).worker_pid
    assert pid_alive(pid)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(pid), timeout=5)
    recorded = store.metrics(run_id)
    assert store.get(run_id).status is Status.RUNNING  # nobody has noticed yet

    managers(store=RunStore(store.runs_dir), cpu_slots=1)  # the server starts again
    run = store.get(run_id)
    assert run.status is Status.INTERRUPTED
    assert str(pid) in run.message
    assert store.metrics(run_id) == recorded  # the recorded epochs are intact
    assert "epoch-001" in store.checkpoints(run_id)


@pytest.mark.slow
def test_a_run_queued_before_a_restart_is_run_by_the_next_manager(managers, store) -> None:
    old = managers(cpu_slots=0)
    run_id = old.submit("bn-lenet", SPEC, tiny(max_steps=10))
    old.shutdown()
    new = managers(store=RunStore(store.runs_dir), cpu_slots=1)
    wait_for(finished(store, run_id))
    assert new.status(run_id) is Status.DONE


@pytest.mark.slow
def test_a_second_manager_counts_the_first_ones_worker_against_its_slot_and_can_cancel_it(
        managers, store) -> None:
    first = managers(cpu_slots=1)
    long_run = first.submit("bn-lenet", SPEC, endless())
    wait_for(running_with_steps(store, long_run))
    second = managers(store=RunStore(store.runs_dir), cpu_slots=1)  # e.g. a second server
    short_run = second.submit("bn-lenet", SPEC, tiny(max_steps=10))
    time.sleep(1.5)  # many dispatcher polls
    assert second.status(short_run) is Status.QUEUED
    assert second.cancel(long_run) is Status.RUNNING  # through the store's flag
    wait_for(finished(store, long_run), timeout=5)
    assert store.get(long_run).status is Status.CANCELLED
    wait_for(finished(store, short_run))
    assert store.get(short_run).status is Status.DONE


# -- GPU sharing through a real JobManager, on pretend GPUs -----------------------------------


class PretendGpus:
    """An executor with `num_gpus` GPUs that trains nothing: start() marks the run running with
    this test's pid (a live process), as a worker's claim would; finish() ends one."""

    def __init__(self, num_gpus: int) -> None:
        self.num_gpus = num_gpus
        self.started: dict[str, str] = {}

    def default_cpu_slots(self) -> int:
        return 0

    def start(self, store: RunStore, run_id: str, device: str) -> None:
        store.mark_running(run_id, os.getpid(), device=device)
        self.started[run_id] = device

    def poll(self, store: RunStore) -> None:
        for run_id in list(self.started):
            if store.get(run_id).status.terminal:
                del self.started[run_id]

    def running(self) -> dict[str, str]:
        return dict(self.started)

    def pids(self) -> set[int]:
        return {os.getpid()}

    def kill(self, store: RunStore, run) -> bool:
        store.finish_unless_final(run.id, Status.CANCELLED, "killed")
        return True

    def close(self) -> None:
        pass


def queue_gpu_run(store: RunStore, gib: float) -> str:
    estimate = {"memory_estimated": int(gib * GIB), "memory_device": "cuda"}
    return store.create("bn-lenet", SPEC.to_dict(), tiny(device="cuda").to_dict(),
                        result=estimate).id


def test_the_manager_starts_gpu_runs_side_by_side_while_their_estimates_fit(
        managers, store) -> None:
    gpus = PretendGpus(num_gpus=1)
    big, small, second_big, tiny_run = (queue_gpu_run(store, gib) for gib in (5, 3, 4, 1))
    managers(executor=gpus, gpu_budget=9 * GIB, runs_per_gpu=3)
    wait_for(lambda: len(gpus.started) == 2)
    time.sleep(0.5)  # several dispatcher ticks: nothing else may start
    assert gpus.started == {big: "cuda:0", small: "cuda:0"}  # 8 GiB of 9
    # 1 GiB would fit, but it does not jump the 4 GiB run waiting ahead of it.
    assert store.get(tiny_run).status is Status.QUEUED
    store.finish(small, Status.DONE)
    wait_for(lambda: second_big in gpus.started)  # 5 + 4 GiB
    time.sleep(0.5)
    assert store.get(tiny_run).status is Status.QUEUED  # 10 GiB would not fit
    store.finish(big, Status.DONE)
    wait_for(lambda: tiny_run in gpus.started)
    assert gpus.started == {second_big: "cuda:0", tiny_run: "cuda:0"}


# -- fair turns and stale rows, with real workers ------------------------------------------------


@pytest.mark.slow
def test_with_one_cpu_slot_a_second_owners_first_run_starts_before_the_first_owners_second(
        managers, store) -> None:
    manager = managers(cpu_slots=1)
    a1, a2 = (manager.submit("bn-lenet", SPEC, tiny(max_steps=10), owner="ann") for _ in range(2))
    b1 = manager.submit("bn-lenet", SPEC, tiny(max_steps=10), owner="bob")
    assert [manager.queue_position(i) for i in (b1, a2)] in ([2, 3], [1, 2])  # a1 may be off
    wait_for(lambda: all(store.get(i).status.terminal for i in (a1, a2, b1)),
             timeout=3 * RUN_TIMEOUT_S)
    runs = {i: store.get(i) for i in (a1, a2, b1)}
    assert [r.status for r in runs.values()] == [Status.DONE] * 3, [r.message for r in runs.values()]
    assert runs[a1].started_at < runs[b1].started_at < runs[a2].started_at


@pytest.mark.slow
def test_a_running_row_whose_pid_now_names_an_unrelated_process_does_not_hold_the_slot(
        managers, store) -> None:
    stale = store.create("bn-lenet", SPEC.to_dict(), tiny().to_dict()).id
    gone = subprocess.Popen(["sleep", "60"])
    store.mark_running(stale, gone.pid, device="cpu")  # its start time is recorded with the pid
    gone.kill()
    gone.wait()
    # Start times count clock ticks (10 ms): a real reuse comes after the pids wrap around,
    # long after; here the two processes must not start within one tick.
    time.sleep(0.05)
    unrelated = subprocess.Popen(["sleep", "60"])  # the pid of the dead worker, reused
    try:
        with sqlite3.connect(store.db_path) as conn:
            conn.execute("UPDATE runs SET worker_pid = ? WHERE id = ?", (unrelated.pid, stale))
        assert pid_alive(unrelated.pid) and store.get(stale).status is Status.RUNNING
        manager = managers(cpu_slots=1)
        assert store.get(stale).status is Status.INTERRUPTED
        run_id = manager.submit("bn-lenet", SPEC, tiny(max_steps=10))
        wait_for(finished(store, run_id))
        assert store.get(run_id).status is Status.DONE
        assert unrelated.poll() is None  # left alone
    finally:
        unrelated.kill()
        unrelated.wait()


def test_a_manager_on_a_read_only_store_shows_the_queue_and_refuses_to_queue(
        managers, store) -> None:
    stale = store.create("bn-lenet", SPEC.to_dict(), tiny().to_dict()).id
    store.mark_running(stale, pid=2**22 + 1)  # a worker long gone
    waiting = store.create("bn-lenet", SPEC.to_dict(), tiny().to_dict()).id
    manager = managers(store=RunStore(store.runs_dir, read_only=True), cpu_slots=1)
    time.sleep(0.5)  # several dispatcher ticks: none may fail or start anything
    assert [r.id for r in manager.active()] == [stale, waiting]
    assert manager.queue_position(waiting) == 1
    with pytest.raises(StoreError, match="read-only"):
        manager.submit("bn-lenet", SPEC, tiny())
