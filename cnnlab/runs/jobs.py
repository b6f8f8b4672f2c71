"""Background training runs: one queue shared by every browser session, a few runs at a time.

The queue *is* the run store: `submit` records a run as queued, and a dispatcher thread starts
one worker process per run (`python -m cnnlab.runs.worker`) while a slot is free. Workers report
only through the store, so nothing belongs to a browser session: a reload, a closed tab or a
second tab sees the same runs, and a run outlives even the server that started it.

Why a process per run and not a thread: measured on 2 cores, training in a thread of the
server slowed its steps from 25 to 65 ms and its health checks to a 216 ms p95 (one GIL for
both); a process can also be killed when it ignores a cancel, and a crash in it (a
segfault, the OOM killer) leaves the server standing and the run marked with the reason.

Which device a run gets is `cnnlab.runs.slots`; starting, watching and killing the runs is an
executor's job (`cnnlab.runs.executors`): local worker processes by default, or Ray tasks on a
cluster (`cnnlab.runs.ray_executor`). This module keeps the queue and the dispatcher that
joins them, the same for both; `make_job_manager` is the one place that chooses.

Several servers on one runs dir: each manager counts every running run in the store against
its slots, its own workers and the others', so servers with the same settings together keep
the same bound, and a restarted server does not start a second run beside a worker that
outlived the old one. Two managers may start a worker for the same queued run at the same
moment; the worker claims its run with the store's atomic queued -> running transition, so
exactly one trains it and the other exits at once, before it imports torch. The limit: the
store identifies workers by process id, so the servers must share one host (one pid space);
a runs dir on a network share between machines would see every other machine's run as dead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from cnnlab.arch.parse import spec_from_data
from cnnlab.arch.specs import Spec
from cnnlab.runs.executors import Executor, LocalProcesses, choose_executor
from cnnlab.runs.slots import (
    RUNS_PER_GPU,
    choose_device,
    cpu_threads_per_slot,
    gpu_budgets,
    gpu_estimate,
    uses_gpu,
)
from cnnlab.runs.store import Run, RunStore, Status

if TYPE_CHECKING:
    from cnnlab.training.config import TrainConfig  # imported lazily at run time: it pulls in torch

log = logging.getLogger(__name__)

CANCEL_GRACE_S = 5.0  # the worker polls the cancel flag every ~0.5 s; 5 s covers a slow step


class JobManager:
    """Queue, start, watch and cancel training runs. One per server process, shared by all sessions.

    `cpu_slots` and `gpu_slots` bound how many runs train at once; the rest wait in the
    store's queue, in fair turns across owners (cnnlab.runs.turns). `cpu_slots=None` is the
    executor's default (1 locally). Up to `runs_per_gpu` runs share a GPU while their memory
    estimates fit `gpu_budget` bytes (default: slots.GPU_MEMORY_SHARE of each local GPU's
    memory; unknown on a Ray cluster, where a run has its GPU alone); `gpu_slots=None` means
    `runs_per_gpu` per GPU the executor has.
    `cpu_threads=None` picks torch threads for a CPU worker: all cores but one, shared out
    between the CPU slots, so the server keeps a core to answer on. `executor` trains the
    runs (default: local worker processes with those threads).
    """

    def __init__(
        self,
        store: RunStore | None = None,
        *,
        cpu_slots: int | None = None,
        gpu_slots: int | None = None,
        runs_per_gpu: int = RUNS_PER_GPU,
        gpu_budget: int | None = None,
        poll_interval: float = 0.5,
        cancel_grace: float = CANCEL_GRACE_S,
        cpu_threads: int | None = None,
        executor: Executor | None = None,
    ) -> None:
        if (cpu_slots is not None and cpu_slots < 0) or (gpu_slots is not None and gpu_slots < 0):
            raise ValueError("slot counts cannot be negative")
        if runs_per_gpu < 1:
            raise ValueError("runs_per_gpu must be at least 1")
        self.store = store if store is not None else RunStore()
        self.cpu_threads = cpu_threads or cpu_threads_per_slot(cpu_slots or 1)
        self.executor = executor or LocalProcesses(self.cpu_threads)
        self.cpu_slots = self.executor.default_cpu_slots() if cpu_slots is None else cpu_slots
        self.num_gpus = self.executor.num_gpus
        self.runs_per_gpu = runs_per_gpu
        self.gpu_slots = self.num_gpus * runs_per_gpu if gpu_slots is None else gpu_slots
        if self.num_gpus == 0:
            self.gpu_slots = 0  # nothing to put them on
        self.gpu_budgets = self._gpu_budgets(gpu_budget)
        self.poll_interval = poll_interval
        self.cancel_grace = cancel_grace

        self._lock = threading.Lock()  # guards the executor's run table and _cancel_deadlines
        self._cancel_deadlines: dict[str, float] = {}  # run id -> monotonic time to kill at
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._draining = False  # shutdown(wait=True): start nothing new, reap what runs

        # A server that died mid-run left its run "running" with a dead worker: say so now,
        # before counting slots. Its metrics and checkpoints stay as they were.
        # A read-only store (browsing a copy) records nothing: no run is marked or started, and
        # submit raises the store's StoreError saying so.
        for run_id in [] if self.store.read_only else self.store.mark_interrupted():
            log.info("run %s was interrupted (its worker is gone)", run_id)
        self._thread = threading.Thread(target=self._dispatch_loop, name="cnnlab-jobs", daemon=True)
        self._thread.start()

    # -- the public interface, called from any session's script thread ---------------------

    def submit(
        self,
        model: str,
        spec: Spec | dict[str, Any],
        config: TrainConfig | dict[str, Any],
        name: str | None = None,
        group: str | None = None,
        owner: str | None = None,
    ) -> str:
        """Queue a run; returns its id. `config` is a TrainConfig or its dict; `group` ties
        runs queued to be compared (cnnlab.runs.experiments); `owner` names who queued it. The memory estimate made now is
        kept in the run's result, to set beside the peak the worker measures.

        Raises SpecError listing the spec's problems, or ConfigError for the config's, before
        anything is recorded.
        """
        if self._stop.is_set():
            raise RuntimeError("this job manager is shut down")
        checked = spec_from_data(spec.to_dict() if isinstance(spec, Spec) else spec)
        config_dict = _config_dict(config, self.num_gpus)
        run = self.store.create(model, checked.to_dict(), config_dict, name=name, group=group,
                                result=_estimate(checked, config_dict), owner=owner)
        self._wake.set()  # start it now if a slot is free, not at the next poll
        return run.id

    def cancel(self, run_id: str) -> Status:
        """Cancel a queued run now, or ask a running one to stop; returns the status after that.

        A running run that has not stopped itself within `cancel_grace` seconds is killed
        and marked cancelled by the dispatcher. Raises KeyError for an unknown id.
        """
        status = self.store.request_cancel(run_id)
        if status is Status.RUNNING:
            with self._lock:
                self._cancel_deadlines.setdefault(run_id, time.monotonic() + self.cancel_grace)
            self._wake.set()
        return status

    def get(self, run_id: str) -> Run:
        return self.store.get(run_id)

    def status(self, run_id: str) -> Status:
        return self.store.get(run_id).status

    def queue_position(self, run_id: str) -> int | None:
        """1 for the run that starts next; None once it is not queued."""
        return self.store.queue_position(run_id)

    def active(self) -> list[Run]:
        """Running runs (oldest first), then queued runs in the order they will start."""
        running = self.store.list(Status.RUNNING)[::-1]
        return running + self.store.queued()

    def shutdown(self, wait: bool = False, cancel: bool = False) -> None:
        """Stop dispatching. Queued runs stay queued for the next manager.

        Running workers are left to finish their runs (they report through the store, and
        the next manager counts them) unless `cancel`, which cancels this manager's runs.
        `wait` blocks until this manager's workers have exited and been accounted for.
        """
        if cancel:
            with self._lock:
                mine = list(self.executor.running())
            for run_id in mine:
                try:
                    self.cancel(run_id)
                except KeyError:
                    pass  # deleted meanwhile
        if wait:
            self._draining = True
            self._wake.set()
            while self._thread.is_alive() and self._has_workers():
                time.sleep(0.05)
        self._stop.set()
        self._wake.set()
        self._thread.join()
        self.executor.close()

    def _gpu_budgets(self, configured: int | None) -> list[int | None]:
        if configured is not None or self.num_gpus == 0:
            return [configured] * self.num_gpus
        if isinstance(self.executor, LocalProcesses):
            return gpu_budgets(self.num_gpus)
        return [None] * self.num_gpus  # a cluster's GPUs: this process cannot measure them

    # -- the dispatcher thread ---------------------------------------------------------------

    def _has_workers(self) -> bool:
        with self._lock:
            return bool(self.executor.running())

    def _dispatch_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._tick()
            except Exception:  # a busy database or a full disk must not end dispatching
                log.exception("job dispatcher tick failed; retrying")
            self._wake.wait(self.poll_interval)
            self._wake.clear()

    def _tick(self) -> None:
        if self.store.read_only:
            return
        self._reap()
        self._enforce_cancels()
        running = self.store.list(Status.RUNNING)
        self._interrupt_stale(running)
        if not self._draining:
            self._launch(running)

    def _reap(self) -> None:
        """Let the executor account for runs that ended (and record crashes)."""
        with self._lock:
            self.executor.poll(self.store)

    def _enforce_cancels(self) -> None:
        """Kill workers that ignored a cancel for longer than the grace period."""
        now = time.monotonic()
        with self._lock:
            due = [rid for rid, deadline in self._cancel_deadlines.items() if deadline <= now]
        for run_id in due:
            try:
                run = self.store.get(run_id)
            except KeyError:
                run = None
            if run is not None and run.status is Status.RUNNING:
                if self._kill(run):
                    self.store.finish_unless_final(
                        run_id, Status.CANCELLED, f"stopped by force: the run did not stop"
                        f" within {self.cancel_grace:g} s of the cancel")
                else:  # still flagged: the worker finishes it as cancelled if it ever wakes up
                    log.warning("could not kill worker %s of run %s", run.worker_pid, run_id)
            with self._lock:
                self._cancel_deadlines.pop(run_id, None)

    def _kill(self, run: Run) -> bool:
        """Stop the run's training by force (SIGKILL, ray.cancel); True once it is gone."""
        with self._lock:
            return self.executor.kill(self.store, run)

    def _interrupt_stale(self, running: list[Run]) -> None:
        """Mark runs interrupted whose worker died outside this manager's sight."""
        with self._lock:
            mine = self.executor.pids()
        if any(r.worker_pid not in mine and not r.worker_alive() for r in running):
            # Our own workers count as alive here: _reap gives them a message with the exit code.
            self.store.mark_interrupted(ours=mine)

    def _launch(self, running: list[Run]) -> None:
        """Start workers for queued runs, in fair turns, while their kind of slot is free."""
        with self._lock:
            ours = self.executor.running()
        queue = self.store.queued()
        estimates = {r.id: gpu_estimate(r.result) for r in [*running, *queue]}
        # Runs other managers (or an earlier server) started take slots here too.
        placed = dict(ours) | {r.id: r.device or "cpu" for r in running
                               if r.id not in ours and r.worker_alive()}
        busy = Counter(placed.values())
        loads = _loads(placed, estimates)
        gpu_waits = False
        for run in queue:
            if run.id in ours:
                continue  # its worker is starting and has not claimed it yet
            wanted = run.config.get("device", "auto")
            on_gpu = uses_gpu(wanted, self.gpu_slots, self.num_gpus)
            if on_gpu and gpu_waits:
                continue  # no GPU run jumps the one that waits for room, or it might wait forever
            device = choose_device(wanted, busy, self.cpu_slots, self.gpu_slots, self.num_gpus,
                                   loads=loads, candidate=estimates[run.id],
                                   budgets=self.gpu_budgets, runs_per_gpu=self.runs_per_gpu)
            if device is None:
                gpu_waits = gpu_waits or on_gpu
                continue
            with self._lock:
                self.executor.start(self.store, run.id, device)
            busy[device] += 1
            loads.setdefault(device, []).append(estimates[run.id])


def make_job_manager(store: RunStore | None = None, *, ray_address: str | None = None,
                     **options: Any) -> JobManager:
    """The job manager the app and the CLI use: local worker processes, or a Ray cluster when
    `ray_address` or $CNNLAB_RAY_ADDRESS names one. `options` go to JobManager. Raises
    ExecutorError (a CnnlabError naming the fix) when Ray is missing or unreachable."""
    cpu_threads = options.pop("cpu_threads", None) or cpu_threads_per_slot(
        options.get("cpu_slots") or 1)
    executor = choose_executor(ray_address, cpu_threads=cpu_threads)
    return JobManager(store, executor=executor, cpu_threads=cpu_threads, **options)


# -- helpers --------------------------------------------------------------------------------


def _loads(placed: dict[str, str], estimates: dict[str, int | None]
           ) -> dict[str, list[int | None]]:
    """Device -> the GPU memory estimates of the runs on it (None: not known)."""
    loads: dict[str, list[int | None]] = {}
    for run_id, device in placed.items():
        loads.setdefault(device, []).append(estimates.get(run_id))
    return loads


def _estimate(spec: Spec, config: dict[str, Any]) -> dict[str, Any]:
    """The memory estimate made before launch (resources.estimate_record)."""
    from cnnlab.training import resources  # lazy: imports torch
    from cnnlab.training.config import TrainConfig

    return resources.estimate_record(spec, TrainConfig.from_dict(config))


def _config_dict(config: TrainConfig | dict[str, Any], num_gpus: int) -> dict[str, Any]:
    """A TrainConfig (or its dict) as a complete dict. Raises ConfigError for unknown fields,
    bad values (TrainConfig checks them), or device="cuda" on a server without a GPU: a
    student should hear that at submit, not after waiting in the queue."""
    from cnnlab.training.config import TrainConfig  # lazy: imports torch
    from cnnlab.training.setup import resolve_device

    if isinstance(config, dict):
        config = TrainConfig.from_dict(config)
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig or a dict, not {type(config).__name__}")
    resolve_device(config.device, gpus=num_gpus)
    return config.to_dict()
