"""Background training runs: one queue shared by every browser session, a few runs at a time.

The queue *is* the run store: `submit` records a run as queued, and a dispatcher thread starts
one worker process per run (`python -m cnnlab.runs.worker`) while a slot is free. Workers report
only through the store, so nothing belongs to a browser session: a reload, a closed tab or a
second tab sees the same runs, and a run outlives even the server that started it.

Why a process per run and not a thread: STREAMLIT.md measured training in a thread of the
server slowing its steps from 25 to 65 ms and health checks to a 216 ms p95 on 2 cores (one
GIL for both); a process can also be killed when it ignores a cancel, and a crash in it (a
segfault, the OOM killer) leaves the server standing and the run marked with the reason.

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
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnlab.runs.store import Run, RunStore, Status, pid_alive
from cnnlab.arch.specs import Spec
from cnnlab.arch.checks import spec_from_dict

if TYPE_CHECKING:
    from cnnlab.training.config import TrainConfig  # imported lazily at run time: it pulls in torch

log = logging.getLogger(__name__)

CANCEL_GRACE_S = 5.0  # the worker polls the cancel flag every ~0.5 s; 5 s covers a slow step
KILL_WAIT_S = 5.0  # how long to wait for a SIGKILLed process to disappear
# CPU workers run at lower priority, so the scheduler serves the server's short bursts (a page
# rerun, a health check) first and training gets every cycle the server does not want; and
# with all cores but one as torch threads. Measured on 2 shared cores, BN-LeNet at 28 px: one
# thread trained at a steady 10-13k examples/s; two threads reached 19k on an idle machine but
# fell to 2-3k whenever anything else wanted a core (OpenMP threads wait for each other at
# every op, so one preempted thread stalls them all). The spare core keeps the server and the
# training both steady.
CPU_WORKER_NICE = 5
GPU_WORKER_THREADS = 2  # data lives on the GPU; the worker's CPU only launches kernels
LOG_TAIL_CHARS = 600  # how much of a crashed worker's output goes into the run's message
PACKAGE_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class _Worker:
    """A worker process this manager started, and where it runs."""

    run_id: str
    proc: subprocess.Popen[bytes]
    device: str  # "cpu" or "cuda:N"
    log_path: Path


class JobManager:
    """Queue, start, watch and cancel training runs. One per server process, shared by all sessions.

    `cpu_slots` and `gpu_slots` bound how many runs train at once; the rest wait in the
    store's queue, oldest first. `gpu_slots=None` means one slot per visible GPU.
    `cpu_threads=None` picks torch threads for a CPU worker: all cores but one, shared out
    between the CPU slots, so the server keeps a core to answer on.
    """

    def __init__(
        self,
        store: RunStore | None = None,
        *,
        cpu_slots: int = 1,
        gpu_slots: int | None = None,
        poll_interval: float = 0.5,
        cancel_grace: float = CANCEL_GRACE_S,
        cpu_threads: int | None = None,
    ) -> None:
        if cpu_slots < 0 or (gpu_slots is not None and gpu_slots < 0):
            raise ValueError("slot counts cannot be negative")
        self.store = store if store is not None else RunStore()
        self.cpu_slots = cpu_slots
        self.num_gpus = _visible_gpus()
        self.gpu_slots = self.num_gpus if gpu_slots is None else gpu_slots
        if self.num_gpus == 0:
            self.gpu_slots = 0  # nothing to put them on
        self.poll_interval = poll_interval
        self.cancel_grace = cancel_grace
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        self.cpu_threads = cpu_threads or max(1, ((cores or 1) - 1) // max(1, cpu_slots))

        self._lock = threading.Lock()  # guards _workers and _cancel_deadlines
        self._workers: dict[str, _Worker] = {}
        self._cancel_deadlines: dict[str, float] = {}  # run id -> monotonic time to kill at
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._draining = False  # shutdown(wait=True): start nothing new, reap what runs

        # A server that died mid-run left its run "running" with a dead worker: say so now,
        # before counting slots. Its metrics and checkpoints stay as they were.
        for run_id in self.store.mark_interrupted():
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
    ) -> str:
        """Queue a run; returns its id. `config` is a TrainConfig or its dict.

        Raises SpecError listing the spec's problems, or ConfigError for the config's, before
        anything is recorded.
        """
        if self._stop.is_set():
            raise RuntimeError("this job manager is shut down")
        checked = spec_from_dict(spec.to_dict() if isinstance(spec, Spec) else spec)
        config_dict = _config_dict(config, self.num_gpus)
        run = self.store.create(model, checked.to_dict(), config_dict, name=name)
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
                mine = list(self._workers)
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

    # -- the dispatcher thread ---------------------------------------------------------------

    def _has_workers(self) -> bool:
        with self._lock:
            return bool(self._workers)

    def _dispatch_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._tick()
            except Exception:  # a busy database or a full disk must not end dispatching
                log.exception("job dispatcher tick failed; retrying")
            self._wake.wait(self.poll_interval)
            self._wake.clear()

    def _tick(self) -> None:
        self._reap()
        self._enforce_cancels()
        running = self.store.list(Status.RUNNING)
        self._interrupt_stale(running)
        if not self._draining:
            self._launch(running)

    def _reap(self) -> None:
        """Account for workers that have exited; mark runs they left unfinished."""
        with self._lock:
            exited = {rid: w for rid, w in self._workers.items() if w.proc.poll() is not None}
            for run_id in exited:
                del self._workers[run_id]
        for worker in exited.values():
            self._after_exit(worker)

    def _after_exit(self, worker: _Worker) -> None:
        try:
            run = self.store.get(worker.run_id)
        except KeyError:
            return  # deleted while it ran
        ours = run.status is Status.RUNNING and run.worker_pid == worker.proc.pid
        # Still queued: the worker died before it could claim the run (a broken install, a
        # bad interpreter). Fail the run rather than start the same doomed worker forever.
        if not ours and run.status is not Status.QUEUED:
            return  # finished normally, or another manager's worker took it
        reason = _exit_reason(worker.proc.returncode)
        tail = _log_tail(worker.log_path)
        message = f"worker process {worker.proc.pid} {reason}" + (
            " without finishing the run; metrics up to that point are kept" if ours
            else " before it could start the run")
        message += f". Last output: {tail}" if tail else ""
        _finish_quietly(self.store, run.id, Status.FAILED, message)

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
                    _finish_quietly(self.store, run_id, Status.CANCELLED,
                                    f"stopped by force: the worker did not stop within"
                                    f" {self.cancel_grace:g} s of the cancel")
                else:  # still flagged: the worker finishes it as cancelled if it ever wakes up
                    log.warning("could not kill worker %s of run %s", run.worker_pid, run_id)
            with self._lock:
                self._cancel_deadlines.pop(run_id, None)

    def _kill(self, run: Run) -> bool:
        """SIGKILL the run's worker and its process group; True once it is gone."""
        with self._lock:
            worker = self._workers.get(run.id)
        if worker is not None:
            _killpg(worker.proc.pid)
            try:
                worker.proc.wait(KILL_WAIT_S)
            except subprocess.TimeoutExpired:
                return False
            return True
        # Another manager's worker (or one that outlived a previous server): kill it by pid,
        # but only when /proc confirms the pid is still that run's worker, not a reused pid.
        pid = run.worker_pid
        if pid is not None and _is_worker_of(pid, run.id):
            _killpg(pid)
            deadline = time.monotonic() + KILL_WAIT_S
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
        return not pid_alive(pid)

    def _interrupt_stale(self, running: list[Run]) -> None:
        """Mark runs interrupted whose worker died outside this manager's sight."""
        with self._lock:
            mine = {w.proc.pid for w in self._workers.values()}
        if any(r.worker_pid not in mine and not pid_alive(r.worker_pid) for r in running):
            # Our own workers count as alive here: _reap gives them a message with the exit code.
            self.store.mark_interrupted(alive=lambda pid: pid in mine or pid_alive(pid))

    def _launch(self, running: list[Run]) -> None:
        """Start workers for the oldest queued runs while their kind of slot is free."""
        with self._lock:
            busy = Counter(w.device for w in self._workers.values())
            launched = set(self._workers)
        # Runs other managers (or an earlier server) started take slots here too.
        busy.update(r.device or "cpu" for r in running
                    if r.id not in launched and pid_alive(r.worker_pid))
        for run in self.store.queued():
            if run.id in launched:
                continue  # its worker is starting and has not claimed it yet
            device = choose_device(run.config.get("device", "auto"), busy,
                                   self.cpu_slots, self.gpu_slots, self.num_gpus)
            if device is not None:
                self._start_worker(run.id, device)
                busy[device] += 1

    def _start_worker(self, run_id: str, device: str) -> None:
        """Start `python -m cnnlab.runs.worker` for the run; its output goes to <run dir>/worker.log."""
        log_path = self.store.run_dir(run_id) / "worker.log"
        on_cpu = device == "cpu"
        command = [
            sys.executable, "-m", "cnnlab.runs.worker",
            "--runs-dir", str(self.store.runs_dir.resolve()),
            "--device", device,
            "--threads", str(self.cpu_threads if on_cpu else GPU_WORKER_THREADS),
            "--nice", str(CPU_WORKER_NICE if on_cpu else 0),
            run_id,
        ]
        try:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(log_path, "ab") as out:
                # A session of its own: Ctrl-C in the server's terminal does not reach the
                # worker, and killpg takes the worker and anything it started. (No preexec_fn:
                # it is not safe in a threaded server; the worker lowers its own priority.)
                proc = subprocess.Popen(
                    command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    env=worker_env(device, self.cpu_threads if on_cpu else GPU_WORKER_THREADS),
                    start_new_session=True, close_fds=True,
                )
        except OSError as exc:  # too many processes, a full disk: fail it, do not retry forever
            _finish_quietly(self.store, run_id, Status.FAILED, f"could not start a worker: {exc}")
            return
        with self._lock:
            self._workers[run_id] = _Worker(run_id, proc, device, log_path)
        log.info("started worker %s for run %s on %s", proc.pid, run_id, device)


# -- helpers --------------------------------------------------------------------------------


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


def choose_device(wanted: str, busy: Counter[str], cpu_slots: int, gpu_slots: int,
                  num_gpus: int) -> str | None:
    """Where a run that asks for device `wanted` starts now ("cpu" or "cuda:N"), or None if its
    kind of slot is full. `busy` counts the runs on each device. "auto" and "cuda" go to the
    GPUs when there are GPU slots (the least busy GPU), everything else to the CPU."""
    if wanted in ("auto", "cuda") and gpu_slots > 0 and num_gpus > 0:
        on_gpus = sum(n for device, n in busy.items() if device.startswith("cuda"))
        if on_gpus >= gpu_slots:
            return None
        return min((f"cuda:{i}" for i in range(num_gpus)), key=lambda device: busy[device])
    return "cpu" if busy["cpu"] < cpu_slots else None


def _visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def worker_env(device: str, threads: int) -> dict[str, str]:
    """The server's environment, adjusted for a worker on `device` with `threads` CPU threads."""
    env = dict(os.environ)
    # The worker runs `-m cnnlab.runs.worker` from wherever the server was started.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), env.get("PYTHONPATH")]))
    # OpenMP reads these at start-up; torch.set_num_threads in the worker covers the rest.
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    env["PYTHONUNBUFFERED"] = "1"  # a crash's last words reach worker.log
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # "auto" must mean the CPU in a CPU slot
    else:
        index = int(device.split(":")[1])
        # Index into the server's own visible set, so CUDA_VISIBLE_DEVICES=2,3 is honoured.
        visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
        env["CUDA_VISIBLE_DEVICES"] = visible[index] if index < len(visible) else str(index)
    return env


def _exit_reason(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


def _log_tail(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - LOG_TAIL_CHARS))
            return f.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""


def _finish_quietly(store: RunStore, run_id: str, status: Status, message: str) -> None:
    """finish(), tolerating a run that reached a terminal status meanwhile (or was deleted)."""
    try:
        store.finish(run_id, status, message)
    except (KeyError, ValueError):
        pass


def _killpg(pid: int) -> None:
    # The worker leads its own session, so its pid is also its process group id.
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _is_worker_of(pid: int, run_id: str) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"cnnlab.runs.worker" in argv and run_id.encode() in argv

