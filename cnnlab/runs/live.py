"""Following runs while they train: metric events read incrementally, and a run's progress.

`RunEvents` keeps each run's events in memory and asks the store only for those after the
last one it has (`RunStore.metrics(after_seq=...)`), so a page that polls every second reads a
few new rows, not the whole history. `progress(run, events)` sums a run up for a progress bar,
a queue entry or a row of the runs table (`cnnlab.views.text.progress_text` words it). No
Streamlit in here.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from cnnlab.arch.checks import is_number
from cnnlab.runs.metrics import Event
from cnnlab.runs.store import Run, RunStore, Status


class RunEvents:
    """Every run's metric events, fetched once and then only what is new. Thread-safe.

    Holds at most `max_runs` runs (least recently read dropped first); a dropped run is read
    again in full when asked for.
    """

    def __init__(self, store: RunStore, max_runs: int = 512) -> None:
        self.store = store
        self.max_runs = max_runs
        self._events: OrderedDict[str, list[Event]] = OrderedDict()
        self._final: set[str] = set()  # runs read in full after they ended: nothing more comes
        self._lock = threading.Lock()

    def get(self, run: Run | str) -> list[Event]:
        """All events of the run so far, in seq order (a new list: the caller may keep it).

        Pass the `Run` (read before this call) rather than its id where you have it: once a
        run has ended and been read, its events come from memory without asking the store.
        Raises cnnlab.runs.store.StoreError when the store is unreadable.
        """
        run_id = run if isinstance(run, str) else run.id
        ended = not isinstance(run, str) and run.status.terminal
        with self._lock:
            known = self._events.pop(run_id, [])
            try:
                if run_id not in self._final:
                    after = known[-1]["seq"] if known else 0
                    known.extend(self.store.metrics(run_id, after_seq=after))
                    if ended:  # a worker writes its last metrics before it finishes the run
                        self._final.add(run_id)
            finally:
                self._events[run_id] = known  # most recently used goes last
            while len(self._events) > self.max_runs:
                dropped, _ = self._events.popitem(last=False)
                self._final.discard(dropped)
            return list(known)


@dataclass(frozen=True)
class Progress:
    """Where a run stands, from its latest events. None where not known yet."""

    status: Status
    fraction: float | None  # of the run's steps, 0..1
    step: int | None
    total_steps: int | None
    epoch: float | None  # epochs done, fractional
    epochs: int | None  # epochs asked for
    planned_epochs: float | None  # epochs the run will cover (fewer than `epochs` with max_steps)
    examples_per_s: float | None  # over the latest logging interval
    eta_s: float | None  # seconds left, counted from now
    train_loss: float | None
    train_acc: float | None
    test_acc: float | None  # at the latest evaluation
    best_test_acc: float | None


def progress(run: Run, events: list[Event], now: float | None = None) -> Progress:
    """The run's progress from its events (all of them, in seq order)."""
    now = time.time() if now is None else now
    steps = [e for e in events if e.get("kind") == "step"]
    epochs = [e for e in events if e.get("kind") == "epoch"]
    last = steps[-1] if steps else None
    last_eval = epochs[-1] if epochs else None
    total = _int(last.get("total_steps")) if last else None
    step = max((_int(e.get("step")) or 0 for e in events), default=None)
    fraction = None
    if run.status is Status.DONE:
        fraction = 1.0
    elif total and step is not None:
        fraction = min(1.0, step / total)
    elif run.status is Status.QUEUED:
        fraction = 0.0
    eta = None
    if last is not None and is_number(last.get("eta_s")):
        # The estimate was made when the event was written; count down from then.
        eta = max(0.0, last["eta_s"] - max(0.0, now - last.get("time", now)))
    epoch = max((e["epoch"] for e in events if is_number(e.get("epoch"))), default=None)
    planned = None
    if total and last is not None and is_number(last.get("epoch")) and last.get("step"):
        planned = total * last["epoch"] / last["step"]
    tests = [e["test_acc"] for e in epochs if is_number(e.get("test_acc"))]
    best = run.result.get("best_test_acc")
    return Progress(
        status=run.status, fraction=fraction, step=step, total_steps=total, epoch=epoch,
        epochs=_int(run.config.get("epochs")), planned_epochs=planned,
        examples_per_s=_number(last, "examples_per_s"), eta_s=eta,
        train_loss=_number(last, "train_loss"), train_acc=_number(last, "train_acc"),
        test_acc=_number(last_eval, "test_acc"),
        best_test_acc=max(tests) if tests else (best if is_number(best) else None),
    )


def _number(event: Event | None, key: str) -> float | None:
    value = None if event is None else event.get(key)
    return float(value) if is_number(value) else None


def _int(value: Any) -> int | None:
    return int(value) if is_number(value) else None
