"""An executor for the app's JobManager that trains each run in a thread of this process, on a
CUDA stream of its own: `bench/gpu.py --in-process`.

The app's executors give every run a process (a local worker, a Ray task). Processes sharing a
GPU take turns on it: the 2026-11-29 table packed 270 s of solo work into 228 s, 1.18x.
Kernels from one process's streams can run side by side, and `--streams-probe` measures how
much that packs; this executor trains the whole table that way, through the same JobManager
and run store, so its rows compare with the processes' table line for line.

Bench only. In the app's server a run's crash, or its share of the interpreter lock, would
reach every page; its runs stay in worker processes. Eager only: a CUDA-graph capture in one
thread breaks the others' work on the GPU, and concurrent compiles are not safe either.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

import torch

from cnnlab.runs.recorded import StoreSink, record_run
from cnnlab.runs.store import Run, RunStore, Status
from cnnlab.training.setup import visible_gpus


@contextlib.contextmanager
def own_stream(device: str) -> Iterator[None]:
    """Make a new CUDA stream on `device` ("cuda:N") this thread's current one, and the device
    its current device; on "cpu", nothing."""
    if not device.startswith("cuda"):
        yield
        return
    with torch.cuda.device(torch.device(device)), torch.cuda.stream(torch.cuda.Stream(device)):
        yield


class InProcessThreads:
    """Each run the JobManager starts trains in a thread here, recording into the store as a
    worker process would; the store's worker pid of each is this process's."""

    def __init__(self) -> None:
        self.num_gpus = visible_gpus()
        self._pid = os.getpid()
        self._runs: dict[str, tuple[threading.Thread, str]] = {}

    def default_cpu_slots(self) -> int:
        return 1

    def start(self, store: RunStore, run_id: str, device: str) -> None:
        try:
            run = store.mark_running(run_id, self._pid, device=device)
        except (KeyError, ValueError):
            return  # cancelled or deleted a moment ago
        thread = threading.Thread(target=self._train, args=(store, run, device),
                                  name=f"cnnlab-run-{run_id}", daemon=True)
        self._runs[run_id] = (thread, device)
        thread.start()

    @staticmethod
    def _train(store: RunStore, run: Run, device: str) -> None:
        try:
            with own_stream(device):
                # gpus: what "auto" may use, as a worker on this slot would see it
                record_run(StoreSink(store, run.id), run, own_process=False,
                           gpus=1 if device.startswith("cuda") else 0)
        except BaseException as exc:  # record_run reports training errors; this is the rest
            store.finish_unless_final(run.id, Status.FAILED,
                                      f"training thread error: {type(exc).__name__}: {exc}")

    def poll(self, store: RunStore) -> None:
        """Drop the runs whose thread has ended; one that ended without a final status failed."""
        for run_id, (thread, _) in list(self._runs.items()):
            if not thread.is_alive():
                del self._runs[run_id]
                store.finish_unless_final(run_id, Status.FAILED,
                                          "its training thread ended without finishing it")

    def running(self) -> dict[str, str]:
        return {run_id: device for run_id, (thread, device) in list(self._runs.items())
                if thread.is_alive()}

    def pids(self) -> set[int]:
        return {self._pid} if self.running() else set()

    def kill(self, store: RunStore, run: Run) -> bool:
        """A thread cannot be killed: it stops at the cancel flag, which record_run reads
        every half second. True once it has."""
        entry = self._runs.get(run.id)
        return entry is None or not entry[0].is_alive()

    def close(self) -> None:
        pass  # the threads end with their runs, or with this process
