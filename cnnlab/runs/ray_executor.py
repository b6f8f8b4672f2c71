"""Training runs as Ray tasks on a Ray cluster, recorded by this server.

Chosen by `cnnlab.runs.executors.choose_executor` when $CNNLAB_RAY_ADDRESS (or the server's
option) names a cluster; importing this module imports Ray, so nothing else does.

The cluster's machines do not share this server's disk, so the server stays the only writer
of the run store. Each run is one streaming-generator task (`train_remote`): on its node it
loads the data the way a local worker does (`cnnlab.training.data`) and runs the same
recorded training (`cnnlab.runs.recorded.record_run`) into a `StreamSink`, which turns every
write into a message the task yields. A consumer thread per run here reads the messages and
applies them to a `StoreSink`, the sink a local worker writes through: same metrics, same
checkpoints, same final status.

Cancelling: the store's flag is relayed to a small actor (`StopFlags`) that the task polls
where a local worker polls the store, so the run stops between steps and records itself as
cancelled, final checkpoint included. A task that ignores it past the grace period is
cancelled through Ray by force; a task that dies (a killed worker, a lost node) ends its run
with Ray's reason, and the epochs recorded before stay.

Ray Client addresses (ray://) cannot carry a streaming task (Ray 2.60 refuses
num_returns="streaming" through Ray Client), so the server must be a machine of the cluster:
`ray start --address=HEAD:6379 --num-cpus=0` there, then CNNLAB_RAY_ADDRESS=auto.
"""

from __future__ import annotations

import io
import logging
import os
import queue
import re
import socket
import threading
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import RayError, TaskCancelledError

from cnnlab.runs.executors import RAY_ADDRESS_ENV, ExecutorError
from cnnlab.runs.metrics import Event
from cnnlab.runs.store import Run, RunStore, Status

log = logging.getLogger(__name__)

CPUS_PER_RUN = 1  # torch threads and Ray CPUs of a CPU run (one per GPU run, for its launches)
FLAG_TIMEOUT_S = 5.0  # a cancel poll that waits longer counts as "not cancelled"; force follows
KILL_WAIT_S = 5.0  # how long a forced cancel may take to end the consumer
PROBE_TIMEOUT_S = 3.0  # ray.init waits minutes for a head that is not there; a socket says at once
REASON_CHARS = 400  # how much of Ray's error text goes into the run's message
# The writes a recorded run makes (recorded.Sink), the only messages the server applies.
MESSAGES = frozenset({"add_metrics", "save_checkpoint", "update_result", "finish"})
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


# -- the remote side --------------------------------------------------------------------------


@ray.remote(num_cpus=0)
class StopFlags:
    """Runs this server asked to stop. One per executor; remote runs poll it (a task has no
    other way to hear from the server, and ray.cancel ends the stream before the run can
    record itself as cancelled)."""

    def __init__(self) -> None:
        self.runs: set[str] = set()

    def set(self, run_id: str) -> None:
        self.runs.add(run_id)

    def is_set(self, run_id: str) -> bool:
        return run_id in self.runs


class StreamSink:
    """A recorded run's writes as messages for the server (`recorded.Sink`, remote half).

    Training runs in a thread of the task and the task's generator yields what it sends:
    the training loop reports through callbacks, and only the generator's own frame can
    yield."""

    def __init__(self, run_id: str, flags: Any) -> None:
        self.run_id, self.flags = run_id, flags
        self.outbox: queue.Queue[tuple[Any, ...] | None] = queue.Queue()

    def add_metrics(self, events: list[Event]) -> None:
        self.outbox.put(("add_metrics", list(events)))

    def save_checkpoint(self, name: str, state: dict[str, Any], meta: dict[str, Any]) -> None:
        import torch

        # Serialised now: the tensors share memory with the model, which goes on training
        # while the message waits its turn.
        buffer = io.BytesIO()
        torch.save(state, buffer)
        self.outbox.put(("save_checkpoint", name, buffer.getvalue(), meta))

    def update_result(self, result: dict[str, Any]) -> None:
        self.outbox.put(("update_result", result))

    def finish(self, status: Status, message: str, result: dict[str, Any] | None = None) -> None:
        self.outbox.put(("finish", Status(status).value, message, result))

    def cancel_requested(self) -> bool:
        try:
            return bool(ray.get(self.flags.is_set.remote(self.run_id), timeout=FLAG_TIMEOUT_S))
        except RayError:  # the flags are unreachable; the server's forced cancel still works
            return False

    def train(self, run: Run, threads: int) -> None:
        """Record the run into this sink; always ends the stream, with a final status."""
        try:
            import torch

            torch.set_num_threads(threads)
            from cnnlab.runs.recorded import record_run

            node = {"node": ray.util.get_node_ip_address(), "executor": "ray"}
            record_run(self, run, gpus=len(ray.get_gpu_ids()), where=node, own_process=False)
        except BaseException as exc:  # record_run reports training errors; this is the rest
            self.finish(Status.FAILED, f"Ray task error: {type(exc).__name__}: {exc}",
                        {"traceback": traceback.format_exc()})
        finally:
            self.outbox.put(None)

    def messages(self) -> Iterator[tuple[Any, ...]]:
        while (message := self.outbox.get()) is not None:
            yield message


# max_retries=0: a retried run would train again from scratch and record its epochs twice.
@ray.remote(num_returns="streaming", max_retries=0)
def train_remote(run: Run, flags: Any, threads: int) -> Iterator[tuple[Any, ...]]:
    """One run on a cluster node: yields the messages of `StreamSink`, the last a "finish"."""
    sink = StreamSink(run.id, flags)
    trainer = threading.Thread(target=sink.train, args=(run, threads), name="cnnlab-train",
                               daemon=True)
    trainer.start()
    yield from sink.messages()


# -- the server side ----------------------------------------------------------------------------


def record_message(sink: Any, message: tuple[Any, ...]) -> None:
    """Apply one message of a remote run to `sink` (a recorded.StoreSink)."""
    method, *args = message
    if method not in MESSAGES:
        raise ValueError(f"not a message of a recorded run: {method!r}")
    if method == "save_checkpoint":
        import torch

        name, payload, meta = args
        args = [name, torch.load(io.BytesIO(payload), weights_only=True), meta]
    elif method == "finish":
        args[0] = Status(args[0])
    getattr(sink, method)(*args)


def ray_reason(exc: BaseException) -> str:
    """Ray's error as one line for a run's message: its type and the last line of its text
    (the first names only the task and its pid)."""
    lines = [line.strip() for line in _ANSI.sub("", str(exc)).splitlines() if line.strip()]
    text = lines[-1] if lines else ""
    return f"{type(exc).__name__}: {text}"[:REASON_CHARS]


@dataclass
class _RemoteRun:
    """A run this server submitted to Ray, and what the server has asked of it."""

    run_id: str
    device: str  # the slot it holds: "cpu" or "cuda:N"
    stream: Any  # the task's ray.ObjectRefGenerator
    thread: threading.Thread | None = None  # the consumer, recording what the stream brings
    stop_sent: bool = False
    forced: bool = False


class RayExecutor:
    """Runs as Ray tasks on the cluster at `address` ("auto", "HEAD:6379").

    A CPU run asks Ray for `cpus_per_run` CPUs, a GPU run (a "cuda:N" slot: device "cuda",
    or "auto" on a cluster with GPUs) for one GPU and one CPU. Raises ExecutorError naming
    the fix when the cluster cannot be used.
    """

    def __init__(self, address: str, *, cpus_per_run: int = CPUS_PER_RUN) -> None:
        self.address, self.cpus_per_run = address, cpus_per_run
        self._connected_here = connect(address)
        resources = ray.cluster_resources()
        self.num_gpus = int(resources.get("GPU", 0))
        self.num_cpus = int(resources.get("CPU", 0))
        self._flags = StopFlags.remote()
        self._runs: dict[str, _RemoteRun] = {}
        self._pid = os.getpid()  # the store's worker_pid of every run: the process recording it

    def default_cpu_slots(self) -> int:
        # Slots are fixed at start: the store keeps the queue, so cancel-before-start and the
        # queue position work as locally; Ray queues nothing. GPU runs take a CPU each.
        return max(1, (self.num_cpus - self.num_gpus) // self.cpus_per_run)

    def start(self, store: RunStore, run_id: str, device: str) -> None:
        # The task cannot claim its run (it has no store): this server marks it running.
        try:
            run = store.mark_running(run_id, self._pid, device=device)
        except (KeyError, ValueError):
            return  # cancelled or deleted a moment ago
        on_gpu = device.startswith("cuda")
        try:
            stream = train_remote.options(
                num_cpus=1 if on_gpu else self.cpus_per_run, num_gpus=1 if on_gpu else 0,
                name=f"cnnlab-run-{run_id}",
            ).remote(run, self._flags, 1 if on_gpu else self.cpus_per_run)
        except Exception as exc:  # the cluster went away since start-up
            store.finish_unless_final(run_id, Status.FAILED, f"could not submit the run to the"
                                      f" Ray cluster at {self.address}: {ray_reason(exc)}")
            return
        remote = _RemoteRun(run_id, device, stream)
        remote.thread = threading.Thread(target=self._consume, args=(store, remote),
                                         name=f"cnnlab-ray-{run_id}", daemon=True)
        self._runs[run_id] = remote
        remote.thread.start()
        log.info("submitted run %s to Ray (%s)", run_id, device)

    def poll(self, store: RunStore) -> None:
        """Drop runs whose stream has ended; relay cancel flags to the runs still training."""
        for remote in list(self._runs.values()):
            if not _streaming(remote):
                del self._runs[remote.run_id]
            elif not remote.stop_sent:
                self._relay_cancel(store, remote)

    def _relay_cancel(self, store: RunStore, remote: _RemoteRun) -> None:
        try:
            wanted = store.cancel_requested(remote.run_id)
        except KeyError:  # deleted while it trained: nothing will read what it sends
            wanted = True
        if wanted:
            self._flags.set.remote(remote.run_id)
            remote.stop_sent = True

    def running(self) -> dict[str, str]:
        return {run_id: remote.device for run_id, remote in list(self._runs.items())}

    def pids(self) -> set[int]:
        return {self._pid} if self._runs else set()

    def kill(self, store: RunStore, run: Run) -> bool:
        """ray.cancel(force=True) the run's task; True once its stream has ended here."""
        remote = self._runs.get(run.id)
        if remote is None:
            return False  # another server's run: only that server holds its task
        remote.forced = True
        ray.cancel(remote.stream, force=True)
        if remote.thread is not None:
            remote.thread.join(KILL_WAIT_S)
        return not _streaming(remote)

    def close(self) -> None:
        """Disconnect from Ray if this executor connected and no run still streams to it."""
        if self._connected_here and not any(map(_streaming, self._runs.values())):
            ray.shutdown()

    # -- a consumer thread per run ----------------------------------------------------------

    def _consume(self, store: RunStore, remote: _RemoteRun) -> None:
        """Record everything the run's task sends, then how its stream ended."""
        from cnnlab.runs.recorded import StoreSink

        run_id = remote.run_id
        try:
            for ref in remote.stream:
                record_message(StoreSink(store, run_id), ray.get(ref))
        except RayError as exc:
            status, message = self._loss(remote, exc)
            store.finish_unless_final(run_id, status, message)
        except Exception as exc:  # the store failed: stop the task, whose events are lost
            log.exception("could not record run %s", run_id)
            ray.cancel(remote.stream, force=True)
            _finish_quietly(store, run_id, f"the server could not record the run: "
                                           f"{type(exc).__name__}: {exc}")
        else:  # the task always sends "finish"; this is for one that could not
            store.finish_unless_final(run_id, Status.FAILED, "the Ray task ended without"
                                      " reporting how the run ended; metrics up to then are kept")

    def _loss(self, remote: _RemoteRun, exc: RayError) -> tuple[Status, str]:
        """The status and message of a run whose task Ray ended."""
        reason = ray_reason(exc)
        kept = "; metrics up to that point are kept"
        if remote.forced:
            return Status.CANCELLED, (f"stopped by force: the run did not stop after the cancel,"
                                      f" so its Ray task was cancelled ({reason})")
        if isinstance(exc, TaskCancelledError):  # someone cancelled it in Ray, not here
            return Status.INTERRUPTED, f"the Ray task was cancelled outside cnnlab ({reason}){kept}"
        return Status.FAILED, f"the run's Ray task failed ({reason}){kept}"


def connect(address: str) -> bool:
    """Connect this process to the Ray cluster at `address`; True if this call connected,
    False if the process already was (a test or a host program), whose connection is reused.
    Raises ExecutorError naming the fix."""
    if address.startswith("ray://"):
        raise ExecutorError(
            f"{RAY_ADDRESS_ENV} is {address!r}, a Ray Client address, but Ray Client cannot"
            " stream a run's metrics back (Ray refuses streaming tasks through it). Fix: make"
            " this server a node of the cluster (`ray start --address=HEAD:6379 --num-cpus=0"
            f" --num-gpus=0` here) and set {RAY_ADDRESS_ENV}=auto.")
    if ray.is_initialized():
        return False
    try:
        _probe(address)
        ray.init(address=address, log_to_driver=False)
    except Exception as exc:  # ConnectionError, or a version mismatch's RuntimeError
        raise ExecutorError(
            f"cannot use the Ray cluster at {address!r} ({ray_reason(exc)}). Fix: start it"
            " (`ray start --head` on the head machine, and `ray start --address=HEAD:6379` on"
            f" this one), check {RAY_ADDRESS_ENV}, or unset it to train in local worker"
            " processes.") from None
    return True


def _probe(address: str) -> None:
    """Raise OSError at once when a HOST:PORT address has nothing listening ("auto" finds
    the local cluster itself and fails fast on its own)."""
    host, colon, port = address.rpartition(":")
    if colon and port.isdigit():
        socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT_S).close()


def _streaming(remote: _RemoteRun) -> bool:
    return remote.thread is not None and remote.thread.is_alive()


def _finish_quietly(store: RunStore, run_id: str, message: str) -> None:
    try:
        store.finish_unless_final(run_id, Status.FAILED, message)
    except Exception:  # the store is what failed; the log has the first error
        log.exception("could not mark run %s failed", run_id)
