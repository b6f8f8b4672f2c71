"""Recorded runs: the bridge from the training loop to the run store.

`run_recorded(store, run_id)` trains a run the store has marked running and records it as it
goes: metrics in batches, a checkpoint each epoch and a "final" one, and how it ended. The CLI
runs it in the foreground with a progress bar; the job queue's workers run it in the background.

What to record is decided here once (`record_run`); where it goes is a `Sink`: `StoreSink`
writes to the run store, and a Ray task's sink (`cnnlab.runs.ray_executor`) streams the same
calls back to the server, which is the only writer of the store.
"""

from __future__ import annotations

import math
import os
import sys
import time
import traceback
from typing import Any, Protocol

import torch
from torch import nn

from cnnlab.arch.checks import SpecError
from cnnlab.arch.parse import spec_from_data
from cnnlab.errors import CnnlabError
from cnnlab.runs.checkpoints import checkpoint_name
from cnnlab.runs.metrics import Event
from cnnlab.runs.store import Run, RunStore, Status
from cnnlab.training import resources
from cnnlab.training.config import ConfigError, TrainConfig
from cnnlab.training.loop import train
from cnnlab.training.setup import load_data, resolve_device

WRITE_EVERY_S = 1.0  # metric events are written to the store in batches at most this often
POLL_EVERY_S = 0.5  # how often the store's cancel flag is read


class Sink(Protocol):
    """Where one recorded run's results go: every write a recorded run makes, and its one read."""

    def add_metrics(self, events: list[Event]) -> None: ...

    def save_checkpoint(self, name: str, state: dict[str, Any], meta: dict[str, Any]) -> None: ...

    def update_result(self, result: dict[str, Any]) -> None: ...

    def finish(self, status: Status, message: str, result: dict[str, Any] | None = None) -> None:
        ...

    def cancel_requested(self) -> bool: ...


class StoreSink:
    """A run's results written straight to the run store (the worker, the CLI, the server
    recording what a Ray task streams back)."""

    def __init__(self, store: RunStore, run_id: str) -> None:
        self.store, self.run_id = store, run_id

    def add_metrics(self, events: list[Event]) -> None:
        self.store.add_metrics(self.run_id, events)

    def save_checkpoint(self, name: str, state: dict[str, Any], meta: dict[str, Any]) -> None:
        self.store.save_checkpoint(self.run_id, name, state, meta)

    def update_result(self, result: dict[str, Any]) -> None:
        self.store.update_result(self.run_id, result)

    def finish(self, status: Status, message: str, result: dict[str, Any] | None = None) -> None:
        _finish(self.store, self.run_id, status, message, result)

    def cancel_requested(self) -> bool:
        return self.store.cancel_requested(self.run_id)


class _Recorder:
    """Bridges the loop and a sink: buffered metrics, rate-limited cancel polls,
    checkpoints, and an optional tqdm bar."""

    def __init__(self, sink: Sink, meta: dict[str, Any], progress: bool) -> None:
        self.sink, self.meta = sink, meta
        self.buffer: list[Event] = []
        self.last_write = time.monotonic()
        self.last_poll = -math.inf
        self.cancelled = False
        self.bar: Any = None
        self.progress = progress

    def on_event(self, event: Event) -> None:
        self.buffer.append(event)
        if event["kind"] == "epoch" or time.monotonic() - self.last_write >= WRITE_EVERY_S:
            self.flush()
        if self.progress:
            self._show(event)

    def flush(self) -> None:
        if self.buffer:
            self.sink.add_metrics(self.buffer)
            self.buffer = []
        self.last_write = time.monotonic()

    def should_stop(self) -> bool:
        # Polled every step: reading the store each time would cost more than a small step.
        now = time.monotonic()
        if not self.cancelled and now - self.last_poll >= POLL_EVERY_S:
            self.last_poll = now
            self.cancelled = self.sink.cancel_requested()
        return self.cancelled

    def on_epoch_end(self, epoch: int, model: nn.Module, event: Event) -> None:
        self.save(checkpoint_name(epoch), model, {"epoch": epoch, "metrics": event})

    def save(self, name: str, model: nn.Module, meta: dict[str, Any]) -> None:
        # Plain contiguous CPU tensors: the checkpoint loads anywhere, with weights_only=True.
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        self.sink.save_checkpoint(name, state, {**self.meta, **meta})

    def _show(self, event: Event) -> None:
        from tqdm import tqdm  # the CLI's bar; workers never pay for the import

        if self.bar is None and event["kind"] == "step":
            self.bar = tqdm(total=event["total_steps"], unit="step", dynamic_ncols=True,
                            file=sys.stderr)
        if event["kind"] == "step":
            self.bar.update(event["step"] - self.bar.n)
            self.bar.set_postfix(loss=f"{event['train_loss']:.3f}", acc=f"{event['train_acc']:.3f}",
                                 ex_s=f"{event['examples_per_s']:,.0f}")
        elif self.bar is not None:
            self.bar.write(f"epoch {event['epoch']:g}: loss {event['train_loss']:.3f}, "
                           f"train acc {event['train_acc']:.3f}, test acc {event['test_acc']:.3f}, "
                           f"{event['examples_per_s']:,.0f} examples/s", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def describe_error(exc: BaseException) -> str:
    """One clear line for a run's message: the problems of a bad spec or config, the data
    finder's explanation, advice for out-of-memory, else the exception's type and text."""
    prefix = {ConfigError: "invalid training config: ", SpecError: "invalid spec: "}
    if isinstance(exc, CnnlabError):  # a spec, config, data or store problem the user can fix
        text = "; ".join(str(p) for p in exc.problems) if exc.problems else str(exc)
        return prefix.get(type(exc), "") + text
    if isinstance(exc, torch.OutOfMemoryError):
        return f"out of memory: {exc}. Fix: lower the batch size, the input size or the width."
    return f"{type(exc).__name__}: {exc}"


def run_recorded(store: RunStore, run_id: str, *, progress: bool = False) -> Status:
    """Execute a run already marked running in `store`: read its spec and config, train, write
    metrics (batched), checkpoints each epoch and "final", and finish it as done, cancelled,
    diverged or failed. Any exception becomes a failed run with a clear message (the traceback
    goes to the result's "traceback"); Ctrl-C or SystemExit cancels the run and re-raises.
    Raises ValueError only if the run is not running."""
    run = store.get(run_id)
    if run.status is not Status.RUNNING:
        raise ValueError(f"run {run_id} is {run.status}, not running; mark it running first")
    return record_run(StoreSink(store, run_id), run, progress=progress)


def record_run(sink: Sink, run: Run, *, progress: bool = False, gpus: int | None = None,
               where: dict[str, Any] | None = None, own_process: bool = True) -> Status:
    """Train `run` (its spec and config) and send everything run_recorded records to `sink`.

    `gpus` is what resolve_device may use ("auto" on a CPU slot must mean the CPU); `where`
    adds to the result what the caller knows about the machine (a Ray node's address);
    `own_process` is False where the process outlives the run (a Ray worker), which the
    measured memory peak then says."""
    recorder = _Recorder(sink, {"run_id": run.id, "model": run.model, "spec": run.spec,
                                "config": run.config}, progress)
    try:
        spec = spec_from_data(run.spec)
        config = TrainConfig.from_dict(run.config)
        device = resolve_device(config.device, gpus=gpus)
        data = load_data(config)
        sink.update_result({"data": data.describe(), "data_source": str(data.source),
                            "device": str(device), "pid": os.getpid(), **(where or {})})
        if progress:
            print(f"data: {data.describe()}", file=sys.stderr)
        resources.reset_peak_memory(device)
        result = train(spec, config, on_event=recorder.on_event, should_stop=recorder.should_stop,
                       on_epoch_end=recorder.on_epoch_end, data=data)
        recorder.flush()
        if result.status in (Status.DONE, Status.CANCELLED) and result.model is not None:
            recorder.save("final", result.model, {"epoch": result.epochs_done, "step": result.steps,
                                                  "status": result.status.value,
                                                  "metrics": result.metrics})
        sink.finish(result.status, result.message,
                    {**result.to_dict(),
                     **resources.measured_peak(device, own_process=own_process)})
        return result.status
    except (KeyboardInterrupt, SystemExit) as exc:
        _flush_quietly(recorder)
        sink.finish(Status.CANCELLED, f"interrupted ({type(exc).__name__})")
        raise
    except Exception as exc:
        _flush_quietly(recorder)
        sink.finish(Status.FAILED, describe_error(exc), {"traceback": traceback.format_exc()})
        return Status.FAILED
    finally:
        recorder.close()


def _finish(store: RunStore, run_id: str, status: Status, message: str,
            result: dict[str, Any] | None = None) -> None:
    """Finish the run unless someone else already did (e.g. marked it interrupted): the
    first final status stays."""
    if not store.finish_unless_final(run_id, status, message, result):
        print(f"run {run_id}: could not record {status}: it already ended or is gone",
              file=sys.stderr)


def _flush_quietly(recorder: _Recorder) -> None:
    # Keep the metrics gathered so far; the store may be the thing that failed.
    try:
        recorder.flush()
    except Exception as exc:
        print(f"could not write the last metrics: {exc}", file=sys.stderr)
