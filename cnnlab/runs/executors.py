"""Who trains a run the job manager has started: the executor interface, the local one, and the
one place that chooses between local worker processes and a Ray cluster.

`cnnlab.runs.jobs.JobManager` keeps the queue and the slots; an executor starts a run on a
device, says which of its runs still train, kills one that ignored a cancel, and records how
a run ended when the run could not say so itself (a crash). Two exist:

- `LocalProcesses` (the default, nothing to install): one `python -m cnnlab.runs.worker`
  process per run on this machine; the worker writes to the run store itself.
- `cnnlab.runs.ray_executor.RayExecutor`: one Ray task per run on a Ray cluster; the task
  streams its events back and this server writes them, so the cluster needs no shared disk.

`choose_executor` picks one from $CNNLAB_RAY_ADDRESS (or an address passed in); Ray is
imported only when it is chosen.
"""

from __future__ import annotations

import logging
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cnnlab.errors import CnnlabError
from cnnlab.runs import processes
from cnnlab.runs.store import Run, RunStore, Status

log = logging.getLogger(__name__)

RAY_ADDRESS_ENV = "CNNLAB_RAY_ADDRESS"


class ExecutorError(CnnlabError):
    """The chosen executor cannot run anything (Ray not installed, the cluster unreachable)."""


class Executor(Protocol):
    """What the job manager needs from whoever trains its runs. Called from its dispatcher
    thread (start, poll, kill) and from any session (running, for shutdown and slots)."""

    num_gpus: int  # GPUs a run can be given: this machine's, or the cluster's

    def default_cpu_slots(self) -> int:
        """How many CPU runs train at once unless the server says otherwise."""
        ...

    def start(self, store: RunStore, run_id: str, device: str) -> None:
        """Start the queued run on `device` ("cpu" or "cuda:N", a slot from choose_device).
        A run that cannot be started is marked failed, never left queued to be retried forever."""
        ...

    def poll(self, store: RunStore) -> None:
        """Account for runs that ended; record how those that could not say so ended."""
        ...

    def running(self) -> dict[str, str]:
        """This executor's runs still training: run id -> the device slot they hold."""
        ...

    def pids(self) -> set[int]:
        """The worker pids the store may hold for this executor's runs (alive by definition)."""
        ...

    def kill(self, store: RunStore, run: Run) -> bool:
        """Stop the run's training by force; True once it is gone."""
        ...

    def close(self) -> None:
        """Release what the executor holds (a Ray connection it opened); runs are not touched."""
        ...


@dataclass
class _Worker:
    """A worker process this manager started, and where it runs."""

    run_id: str
    proc: subprocess.Popen[bytes]
    device: str  # "cpu" or "cuda:N"
    log_path: Path


class LocalProcesses:
    """One worker process per run on this machine (`python -m cnnlab.runs.worker`).

    The worker claims its run and writes to the store itself, so the run outlives this server.
    Not thread-safe on its own: the job manager calls it under its lock or from its one
    dispatcher thread.
    """

    def __init__(self, cpu_threads: int) -> None:
        from cnnlab.training.setup import visible_gpus  # lazy: imports torch

        self.cpu_threads = cpu_threads
        self.num_gpus = visible_gpus()
        self._workers: dict[str, _Worker] = {}

    def default_cpu_slots(self) -> int:
        return 1  # one CPU run at a time: the server keeps cores to answer on

    def start(self, store: RunStore, run_id: str, device: str) -> None:
        """Start a worker process for the run; its output goes to <run dir>/worker.log."""
        log_path = store.run_dir(run_id) / "worker.log"
        try:
            proc = processes.launch_worker(store.runs_dir, run_id, device, self.cpu_threads,
                                           log_path)
        except OSError as exc:  # too many processes, a full disk: fail it, do not retry forever
            store.finish_unless_final(run_id, Status.FAILED, f"could not start a worker: {exc}")
            return
        self._workers[run_id] = _Worker(run_id, proc, device, log_path)
        log.info("started worker %s for run %s on %s", proc.pid, run_id, device)

    def poll(self, store: RunStore) -> None:
        """Account for workers that have exited; mark runs they left unfinished."""
        exited = [w for w in self._workers.values() if w.proc.poll() is not None]
        for worker in exited:
            del self._workers[worker.run_id]
            self._after_exit(store, worker)

    def running(self) -> dict[str, str]:
        return {run_id: w.device for run_id, w in list(self._workers.items())}

    def pids(self) -> set[int]:
        return {w.proc.pid for w in list(self._workers.values())}

    def kill(self, store: RunStore, run: Run) -> bool:
        """SIGKILL the run's worker and its process group; True once it is gone."""
        worker = self._workers.get(run.id)
        if worker is not None:
            return processes.kill_child(worker.proc)
        # Another manager's worker, or one that outlived a previous server.
        return processes.kill_worker(run.worker_pid, run.id)

    def close(self) -> None:
        pass  # workers outlive the manager on purpose

    @staticmethod
    def _after_exit(store: RunStore, worker: _Worker) -> None:
        try:
            run = store.get(worker.run_id)
        except KeyError:
            return  # deleted while it ran
        ours = run.status is Status.RUNNING and run.worker_pid == worker.proc.pid
        # Still queued: the worker died before it could claim the run (a broken install, a
        # bad interpreter). Fail the run rather than start the same doomed worker forever.
        if not ours and run.status is not Status.QUEUED:
            return  # finished normally, or another manager's worker took it
        reason = processes.exit_reason(worker.proc.returncode)
        tail = processes.log_tail(worker.log_path)
        message = f"worker process {worker.proc.pid} {reason}" + (
            " without finishing the run; metrics up to that point are kept" if ours
            else " before it could start the run")
        message += f". Last output: {tail}" if tail else ""
        store.finish_unless_final(run.id, Status.FAILED, message)


def ray_address(address: str | None = None) -> str | None:
    """The Ray cluster to train on: `address`, else $CNNLAB_RAY_ADDRESS; None (or "") means
    local worker processes."""
    chosen = address if address is not None else os.environ.get(RAY_ADDRESS_ENV, "")
    return chosen.strip() or None


def choose_executor(address: str | None = None, *, cpu_threads: int) -> Executor:
    """Local worker processes, or a Ray cluster when an address is given or set in
    $CNNLAB_RAY_ADDRESS ("auto", "ray://head:10001"). Raises ExecutorError naming the fix when
    Ray is not installed or the cluster cannot be reached."""
    address = ray_address(address)
    if address is None:
        return LocalProcesses(cpu_threads)
    try:
        from cnnlab.runs.ray_executor import RayExecutor
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] != "ray":
            raise  # a broken cnnlab install, not a missing Ray
        raise ExecutorError(
            f"{RAY_ADDRESS_ENV} is {address!r}, so runs should train on a Ray cluster, but Ray"
            f" cannot be imported here ({exc}). Fix: install it (.venv/bin/pip install"
            f" ray==2.60.0), or unset {RAY_ADDRESS_ENV} to train in local worker processes."
        ) from None
    return RayExecutor(address)
