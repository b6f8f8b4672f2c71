"""Run store: training runs, their metrics and checkpoints under one runs directory.

This module keeps the runs themselves (one SQLite file, `runs.sqlite`) and their lifecycle:
create, queue, status transitions, cancel, delete. `RunStore` also fronts the metric log
(`cnnlab.runs.metrics`, a table in the same file) and the checkpoint files
(`cnnlab.runs.checkpoints`), so callers hold one object per runs directory. The tables and
their migration are `cnnlab.runs.schema`; what the files allow (records lost, a read-only
folder) is `cnnlab.runs.integrity`.

Safe for many threads and processes: each operation opens its own connection, writes use BEGIN IMMEDIATE.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sqlite3
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from cnnlab.errors import CnnlabError
from cnnlab.runs import integrity, schema
from cnnlab.runs import metrics as metric_log
from cnnlab.runs.checkpoints import Checkpoints
from cnnlab.runs.encoding import dumps
from cnnlab.runs.metrics import Event
from cnnlab.runs.processes import process_start, same_process
from cnnlab.runs.turns import fair_order

DB_NAME = "runs.sqlite"
BUSY_TIMEOUT_S = 10.0


class Status(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    CANCELLED = "cancelled"
    DIVERGED = "diverged"
    FAILED = "failed"
    INTERRUPTED = "interrupted"

    @property
    def terminal(self) -> bool:
        return self not in (Status.QUEUED, Status.RUNNING)


# Terminal statuses have no way out: a finished run is never restarted in place.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.QUEUED: frozenset({Status.RUNNING, Status.CANCELLED, Status.FAILED}),
    Status.RUNNING: frozenset(
        {Status.DONE, Status.CANCELLED, Status.DIVERGED, Status.FAILED, Status.INTERRUPTED}
    ),
}


@dataclass(frozen=True)
class Run:
    id: str
    status: Status
    model: str
    spec: dict[str, Any]
    config: dict[str, Any]
    created_at: float
    name: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    device: str | None = None
    data_source: str | None = None
    worker_pid: int | None = None
    message: str | None = None
    cancel_requested: bool = False
    result: dict[str, Any] = field(default_factory=dict)
    # Runs queued together to compare (a pair or a sweep, cnnlab.runs.experiments) share one.
    group: str | None = None
    # The display name of whoever queued it (cnnlab.runs.owners); None for runs queued
    # without one (the CLI, a single-user lab, a store older than schema 3).
    owner: str | None = None
    # When the worker process started (processes.process_start): with worker_pid, it tells
    # the worker from an unrelated process that was given the same pid after the worker died.
    worker_start: int | None = None

    def worker_alive(self) -> bool:
        return same_process(self.worker_pid, self.worker_start)

    @property
    def label(self) -> str:
        return self.name or f"{self.model} {self.id}"

    @property
    def test_acc(self) -> float | None:
        """The final test accuracy, as the worker reported it when the run ended; None before
        (a running run's latest is its last epoch event's)."""
        return (self.result.get("metrics") or {}).get("test_acc")

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Run:
        return cls(
            id=row["id"],
            status=Status(row["status"]),
            model=row["model"],
            spec=json.loads(row["spec_json"]),
            config=json.loads(row["config_json"]),
            created_at=row["created_at"],
            name=row["name"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            device=row["device"],
            data_source=row["data_source"],
            worker_pid=row["worker_pid"],
            message=row["message"],
            cancel_requested=bool(row["cancel_requested"]),
            result=json.loads(row["result_json"]),
            group=row["run_group"],
            owner=row["owner"],
            worker_start=row["worker_start"],
        )


def default_runs_dir() -> Path:
    return Path(os.environ.get("CNNLAB_RUNS", "runs"))


def new_run_id(now: float | None = None) -> str:
    # UTC so ids sort by creation time regardless of the machine's timezone or DST.
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(time.time() if now is None else now))
    return f"{stamp}-{secrets.token_hex(3)}"


def groups(runs: Iterable[Run]) -> dict[str, list[Run]]:
    """The groups among `runs`, each with its runs in the order given."""
    found: dict[str, list[Run]] = {}
    for run in runs:
        if run.group is not None:
            found.setdefault(run.group, []).append(run)
    return found


class StoreError(CnnlabError):
    """The run store could not be read or written (a locked, full or damaged database)."""


def _refuse(problem: str | None) -> None:
    """Raise an integrity check's problem (cnnlab.runs.integrity) as a StoreError."""
    if problem is not None:
        raise StoreError(problem)


class RunStore:
    """All run bookkeeping for one runs directory. Cheap to construct; holds no connection.

    `read_only` (default: when the folder or runs.sqlite cannot be written) opens the store for
    browsing only: listing runs, metrics and checkpoints works; anything that would record
    something raises StoreError saying the store is read-only."""

    def __init__(self, runs_dir: str | os.PathLike[str] | None = None, *,
                 read_only: bool | None = None) -> None:
        self.runs_dir = Path(runs_dir) if runs_dir is not None else default_runs_dir()
        self.db_path = self.runs_dir / DB_NAME
        self.read_only = (not integrity.writable(self.runs_dir, self.db_path)
                          if read_only is None else read_only)
        self._checkpoints = Checkpoints(self.runs_dir)
        _refuse(integrity.lost_records(self.runs_dir, self.db_path))
        if self.read_only:
            _refuse(integrity.not_browsable(self.runs_dir, self.db_path, self._missing_columns()))
        else:
            self.runs_dir.mkdir(parents=True, exist_ok=True)
            self._init_db()

    # -- connections -------------------------------------------------------------------

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # A fresh connection per operation: sqlite3 connections must not be shared across
        # threads, and short-lived ones never hold a stale read snapshot.
        database = integrity.read_only_uri(self.db_path) if self.read_only else self.db_path
        try:
            conn = sqlite3.connect(database, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                   uri=self.read_only)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the run store {self.db_path}: {exc}") from exc
        try:
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            conn.execute("PRAGMA synchronous = NORMAL")  # durable enough in WAL, much faster
            yield conn
        except sqlite3.Error as exc:  # callers see one error type, not the storage engine's
            hint = f". {integrity.read_only(self.runs_dir)}" if "readonly" in str(exc) else ""
            raise StoreError(f"run store {self.db_path}: {exc}{hint}") from exc
        finally:
            conn.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        # IMMEDIATE takes the write lock up front, so a read-then-write never fails with
        # SQLITE_BUSY half-way (a deferred transaction cannot wait to upgrade its lock).
        if self.read_only:
            raise StoreError(integrity.read_only(self.runs_dir))
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _missing_columns(self) -> list[str] | None:
        """The columns runs.sqlite lacks (schema.ADDED_COLUMNS); None when there is no file."""
        if not self.db_path.exists():
            return None
        with self._connect() as conn:
            return schema.missing_columns(schema.columns(conn))

    def _init_db(self) -> None:
        with self._connect() as conn:
            # WAL is a property of the file, so setting it once here covers every later connection.
            conn.execute("PRAGMA journal_mode = WAL")
        with self._write() as conn:
            schema.create_or_migrate(conn)

    @staticmethod
    def _fetch(conn: sqlite3.Connection, run_id: str) -> sqlite3.Row:
        row = conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise KeyError(f"unknown run id: {run_id!r}")
        return row

    # -- status transitions ----------------------------------------------------------------

    def _transition(self, conn: sqlite3.Connection, run_id: str, new: Status,
                    **columns: Any) -> Run:
        """The one place a run's status is written: refuses any move TRANSITIONS does not list.

        Runs inside the caller's write transaction, so the check and the write see the same row.
        A final status also records when the run finished."""
        current = Status(self._fetch(conn, run_id)["status"])
        if new not in TRANSITIONS.get(current, ()):
            raise ValueError(f"run {run_id}: cannot go from {current} to {new}")
        if new.terminal:
            columns["finished_at"] = time.time()
        columns["status"] = new.value
        assignments = ", ".join(f"{column} = ?" for column in columns)
        conn.execute(f"UPDATE runs SET {assignments} WHERE id = ?", (*columns.values(), run_id))
        return Run.from_row(self._fetch(conn, run_id))

    @staticmethod
    def _start_columns(pid: int, device: str | None, data_source: str | None = None
                       ) -> dict[str, Any]:
        # A device or data source not given keeps what the run already has.
        columns: dict[str, Any] = {"started_at": time.time(), "worker_pid": pid,
                                   "worker_start": process_start(pid)}
        if device is not None:
            columns["device"] = device
        if data_source is not None:
            columns["data_source"] = data_source
        return columns

    def _finish_in(self, conn: sqlite3.Connection, run_id: str, status: Status,
                   message: str | None, result: dict[str, Any] | None) -> Run:
        stored = json.loads(self._fetch(conn, run_id)["result_json"])
        columns: dict[str, Any] = {"result_json": dumps({**stored, **(result or {})})}
        if message is not None:  # no new message keeps the one the run has
            columns["message"] = message
        return self._transition(conn, run_id, status, **columns)

    @staticmethod
    def _final_status(status: Status | str) -> Status:
        status = Status(status)
        if not status.terminal:
            raise ValueError(f"finish needs a terminal status, got {status}")
        return status

    # -- runs ----------------------------------------------------------------------------

    def create(
        self,
        model: str,
        spec: dict[str, Any],
        config: dict[str, Any],
        name: str | None = None,
        data_source: str | None = None,
        group: str | None = None,
        result: dict[str, Any] | None = None,
        owner: str | None = None,
    ) -> Run:
        """Record a queued run. `group` ties runs queued to be compared; `result` starts the
        run's result (e.g. the memory estimate made before launch); `owner` names who queued it."""
        spec_json, config_json = dumps(spec), dumps(config)
        result_json = dumps(result or {})
        for _ in range(5):  # a random suffix can collide within one second; just draw again
            now = time.time()
            run_id = new_run_id(now)
            try:
                with self._write() as conn:
                    conn.execute(
                        "INSERT INTO runs (id, created_at, status, name, model, spec_json,"
                        " config_json, data_source, run_group, result_json, owner)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (run_id, now, Status.QUEUED.value, name, model, spec_json, config_json,
                         data_source, group, result_json, owner),
                    )
                    return Run.from_row(self._fetch(conn, run_id))
            except sqlite3.IntegrityError:
                continue
        raise RuntimeError("could not allocate a unique run id")

    def get(self, run_id: str) -> Run:
        with self._connect() as conn:
            return Run.from_row(self._fetch(conn, run_id))

    def list(self, status: Status | str | Iterable[Status | str] | None = None,
             limit: int | None = None, group: str | None = None) -> list[Run]:
        """Runs newest first, optionally only those with the given status(es) or in `group`."""
        where, params = [], []
        if status is not None:
            wanted = [Status(s).value for s in ([status] if isinstance(status, str) else status)]
            where.append(f"status IN ({', '.join('?' * len(wanted))})")
            params += wanted
        if group is not None:
            where.append("run_group = ?")
            params.append(group)
        sql = "SELECT * FROM runs" + (f" WHERE {' AND '.join(where)}" if where else "")
        sql += " ORDER BY created_at DESC, rowid DESC LIMIT ?"
        with self._connect() as conn:
            rows = conn.execute(sql, (*params, -1 if limit is None else limit)).fetchall()
        return [Run.from_row(row) for row in rows]

    def queued(self) -> list[Run]:
        """Queued runs in the order they will start: fair turns across owners (turns.fair_order)."""
        with self._connect() as conn:
            return self._queued_in(conn)

    @staticmethod
    def _queued_in(conn: sqlite3.Connection) -> list[Run]:
        rows = conn.execute("SELECT * FROM runs WHERE status = ? ORDER BY created_at, rowid",
                            (Status.QUEUED.value,)).fetchall()
        # Each owner's latest start, over every run that ever started (running or finished).
        last_starts = dict(conn.execute(
            "SELECT owner, MAX(started_at) FROM runs WHERE started_at IS NOT NULL GROUP BY owner"
        ).fetchall())
        return fair_order([Run.from_row(row) for row in rows], last_starts)

    def queue_position(self, run_id: str) -> int | None:
        """1 for the run that will be claimed next; None if the run is not queued."""
        with self._connect() as conn:
            status = Status(self._fetch(conn, run_id)["status"])  # KeyError for an unknown id
            if status is not Status.QUEUED:
                return None
            ids = [run.id for run in self._queued_in(conn)]
        return ids.index(run_id) + 1

    def mark_running(self, run_id: str, pid: int, device: str | None = None,
                     data_source: str | None = None) -> Run:
        with self._write() as conn:
            return self._transition(conn, run_id, Status.RUNNING,
                                    **self._start_columns(pid, device, data_source))

    def claim_next(self, pid: int, device: str | None = None) -> Run | None:
        """Atomically take the next queued run (fair turns) and mark it running; None if the
        queue is empty."""
        with self._write() as conn:
            # Select and update inside one write transaction, so two workers never get the same run.
            queue = self._queued_in(conn)
            if not queue:
                return None
            return self._transition(conn, queue[0].id, Status.RUNNING,
                                    **self._start_columns(pid, device))

    def finish(self, run_id: str, status: Status | str, message: str | None = None,
               result: dict[str, Any] | None = None) -> Run:
        """Move a run to a terminal status; `result` is merged into the stored result."""
        status = self._final_status(status)
        with self._write() as conn:
            return self._finish_in(conn, run_id, status, message, result)

    def finish_unless_final(self, run_id: str, status: Status | str, message: str | None = None,
                            result: dict[str, Any] | None = None, pid: int | None = None) -> bool:
        """finish(), unless the run already has a final status, is gone, or (given `pid`) is
        not that worker process's run; True if this call finished it.

        For whoever ends a run from outside the happy path (a crashed worker, a forced cancel)
        while another party may have finished it a moment earlier: the first final status stays.
        """
        status = self._final_status(status)
        with self._write() as conn:
            row = conn.execute("SELECT status, worker_pid FROM runs WHERE id = ?",
                               (run_id,)).fetchone()
            if row is None or Status(row["status"]).terminal:
                return False
            if pid is not None and row["worker_pid"] != pid:
                return False
            self._finish_in(conn, run_id, status, message, result)
        return True

    def update_result(self, run_id: str, result: dict[str, Any]) -> Run:
        """Merge fields into a run's result (e.g. params and FLOPs, known before training ends)."""
        with self._write() as conn:
            row = self._fetch(conn, run_id)
            merged = {**json.loads(row["result_json"]), **result}
            conn.execute("UPDATE runs SET result_json = ? WHERE id = ?", (dumps(merged), run_id))
            return Run.from_row(self._fetch(conn, run_id))

    def set_group(self, run_id: str, group: str) -> bool:
        """Put a run that is in no group into `group`; False if it already is in one."""
        with self._write() as conn:
            self._fetch(conn, run_id)  # KeyError for an unknown run
            changed = conn.execute("UPDATE runs SET run_group = ? WHERE id = ? AND run_group IS"
                                   " NULL", (group, run_id)).rowcount
        return changed == 1

    def rename(self, run_id: str, name: str | None) -> Run:
        """Give a run a new name (None: no name, so it shows as model and id)."""
        with self._write() as conn:
            self._fetch(conn, run_id)  # KeyError for an unknown run
            conn.execute("UPDATE runs SET name = ? WHERE id = ?", (name, run_id))
            return Run.from_row(self._fetch(conn, run_id))

    def request_cancel(self, run_id: str) -> Status:
        """Cancel a queued run now, or flag a running one for its worker; returns the new status."""
        with self._write() as conn:
            current = Status(self._fetch(conn, run_id)["status"])
            if current is Status.QUEUED:
                return self._transition(conn, run_id, Status.CANCELLED,
                                        message="cancelled before it started").status
            if current is Status.RUNNING:
                # The worker polls cancel_requested between steps and finishes the run itself.
                conn.execute("UPDATE runs SET cancel_requested = 1 WHERE id = ?", (run_id,))
            return current

    def cancel_requested(self, run_id: str) -> bool:
        with self._connect() as conn:
            return bool(self._fetch(conn, run_id)["cancel_requested"])

    def mark_interrupted(self, alive: Callable[[int], bool] | None = None,
                         ours: Collection[int] = ()) -> list[str]:
        """Mark running runs whose worker process is gone as interrupted; returns their ids.

        A worker is alive when `alive(pid)` says so, by default when its pid still names the
        process that started then (a reused pid does not keep a dead worker's run running).
        `ours` are pids the caller knows are its live workers (unreaped children included)."""
        interrupted = []
        with self._write() as conn:
            rows = conn.execute("SELECT id, worker_pid, worker_start FROM runs WHERE status = ?",
                                (Status.RUNNING.value,)).fetchall()
            for row in rows:
                pid = row["worker_pid"]
                if pid is not None and (pid in ours or (
                        alive(pid) if alive else same_process(pid, row["worker_start"]))):
                    continue
                self._transition(conn, row["id"], Status.INTERRUPTED, message=(
                    f"worker process {pid} is gone; metrics up to that point are kept"))
                interrupted.append(row["id"])
        return interrupted

    def delete(self, run_id: str, force: bool = False) -> None:
        """Remove a run, its metrics and its checkpoints. A running run needs force=True."""
        with self._write() as conn:
            status = Status(self._fetch(conn, run_id)["status"])
            if status is Status.RUNNING and not force:
                raise ValueError(f"run {run_id} is running; cancel it first (or pass force=True)")
            metric_log.delete(conn, run_id)
            conn.execute("DELETE FROM runs WHERE id = ?", (run_id,))
        shutil.rmtree(self.run_dir(run_id), ignore_errors=True)

    # -- metrics (cnnlab.runs.metrics) ---------------------------------------------------

    def add_metrics(self, run_id: str, events: list[Event]) -> int:
        """Append events (kind, epoch, step, time + any values); returns the last seq written."""
        rows = metric_log.event_rows(events)
        with self._write() as conn:
            self._fetch(conn, run_id)  # KeyError for an unknown run, and nothing written
            return metric_log.append(conn, run_id, rows)

    def metrics(self, run_id: str, kind: str | None = None, after_seq: int = 0) -> list[Event]:
        """Events with seq > after_seq, in seq order, flattened to {seq, kind, epoch, step, time, **values}.

        Pages poll with after_seq = the last seq they have, so each refresh fetches only new points.
        """
        with self._connect() as conn:
            return metric_log.select(conn, run_id, kind, after_seq)

    # -- checkpoints (cnnlab.runs.checkpoints) -------------------------------------------

    def run_dir(self, run_id: str) -> Path:
        return self._checkpoints.run_dir(run_id)

    def checkpoint_path(self, run_id: str, name: str) -> Path:
        """<runs_dir>/<run_id>/<name>.pt, e.g. name 'epoch-003' or 'final'."""
        return self._checkpoints.path(run_id, name)

    def save_checkpoint(self, run_id: str, name: str, state_dict: dict[str, Any],
                        meta: dict[str, Any]) -> Path:
        return self._checkpoints.save(run_id, name, state_dict, meta)

    def load_checkpoint(self, run_id: str, name: str) -> dict[str, Any]:
        """Returns {"state_dict": ..., "meta": ...}; weights_only refuses arbitrary pickled objects."""
        return self._checkpoints.load(run_id, name)

    def checkpoints(self, run_id: str) -> list[str]:
        """Checkpoint names of a run, sorted (epoch-001, epoch-002, ..., final)."""
        return self._checkpoints.names(run_id)
