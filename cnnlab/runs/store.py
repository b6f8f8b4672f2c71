"""Run store: training runs, their metrics and checkpoints in one SQLite file.

Safe for many threads and processes: each operation opens its own connection, writes use BEGIN IMMEDIATE.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from cnnlab.errors import CnnlabError

DB_NAME = "runs.sqlite"
BUSY_TIMEOUT_S = 10.0
SCHEMA_VERSION = 1

# runs:    one row per training run. spec/config/result are JSON text so the schema
#          does not change whenever a model family or hyperparameter is added.
#          Queue order is (created_at, rowid); rowid breaks ties between equal timestamps.
# metrics: an append-only event log per run. seq counts 1, 2, 3, ... within a run and is
#          assigned inside the write transaction, so pages can poll "everything after seq N".
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id               TEXT PRIMARY KEY,
    created_at       REAL NOT NULL,
    started_at       REAL,
    finished_at      REAL,
    status           TEXT NOT NULL,
    name             TEXT,
    model            TEXT NOT NULL,
    spec_json        TEXT NOT NULL,
    config_json      TEXT NOT NULL,
    device           TEXT,
    data_source      TEXT,
    worker_pid       INTEGER,
    message          TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    result_json      TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS runs_status_created ON runs (status, created_at);
CREATE TABLE IF NOT EXISTS metrics (
    run_id      TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('step', 'epoch')),
    epoch       REAL,
    step        INTEGER,
    time        REAL NOT NULL,
    values_json TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
"""

# Keys of a metric event that are stored in columns; everything else goes to values_json.
EVENT_COLUMNS = ("kind", "epoch", "step", "time")
RESERVED_EVENT_KEYS = ("seq", "run_id")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


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

    @property
    def label(self) -> str:
        return self.name or f"{self.model} {self.id}"

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
        )


def default_runs_dir() -> Path:
    return Path(os.environ.get("CNNLAB_RUNS", "runs"))


def new_run_id(now: float | None = None) -> str:
    # UTC so ids sort by creation time regardless of the machine's timezone or DST.
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(time.time() if now is None else now))
    return f"{stamp}-{secrets.token_hex(3)}"


def checkpoint_name(epoch: int) -> str:
    return f"epoch-{epoch:03d}"


def pid_alive(pid: int | None) -> bool:
    # pid 0 / negative would signal a whole process group, never a single worker.
    if pid is None or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    # A killed child that its parent has not reaped yet still answers os.kill(pid, 0).
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False  # no procfs (macOS) or it vanished: trust os.kill
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def _dumps(value: Any) -> str:
    return json.dumps(value, default=_json_default)


def _json_default(value: Any) -> Any:
    # Metrics often arrive as numpy / torch scalars; configs may hold paths.
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _check_name(kind: str, value: str) -> str:
    # Run ids and checkpoint names become path parts; refuse anything that could escape runs_dir.
    if not SAFE_NAME.match(value):
        raise ValueError(f"invalid {kind}: {value!r}")
    return value


class StoreError(CnnlabError):
    """The run store could not be read or written (a locked, full or damaged database)."""


class RunStore:
    """All run bookkeeping for one runs directory. Cheap to construct; holds no connection."""

    def __init__(self, runs_dir: str | os.PathLike[str] | None = None) -> None:
        self.runs_dir = Path(runs_dir) if runs_dir is not None else default_runs_dir()
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.db_path = self.runs_dir / DB_NAME
        self._init_db()

    # -- connections -------------------------------------------------------------------

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # A fresh connection per operation: sqlite3 connections must not be shared across
        # threads, and short-lived ones never hold a stale read snapshot.
        try:
            conn = sqlite3.connect(self.db_path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the run store {self.db_path}: {exc}") from exc
        try:
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            conn.execute("PRAGMA synchronous = NORMAL")  # durable enough in WAL, much faster
            yield conn
        except sqlite3.Error as exc:  # callers see one error type, not the storage engine's
            raise StoreError(f"run store {self.db_path}: {exc}") from exc
        finally:
            conn.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        # IMMEDIATE takes the write lock up front, so a read-then-write never fails with
        # SQLITE_BUSY half-way (a deferred transaction cannot wait to upgrade its lock).
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _init_db(self) -> None:
        with self._connect() as conn:
            # WAL is a property of the file, so setting it once here covers every later connection.
            conn.execute("PRAGMA journal_mode = WAL")
        with self._write() as conn:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @staticmethod
    def _fetch(conn: sqlite3.Connection, run_id: str) -> sqlite3.Row:
        row = conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise KeyError(f"unknown run id: {run_id!r}")
        return row

    def _transition(self, run_id: str, new: Status, **columns: Any) -> Run:
        with self._write() as conn:
            current = Status(self._fetch(conn, run_id)["status"])
            if new not in TRANSITIONS.get(current, ()):
                raise ValueError(f"run {run_id}: cannot go from {current} to {new}")
            columns["status"] = new.value
            assignments = ", ".join(f"{column} = ?" for column in columns)
            conn.execute(f"UPDATE runs SET {assignments} WHERE id = ?", (*columns.values(), run_id))
            return Run.from_row(self._fetch(conn, run_id))

    # -- runs ----------------------------------------------------------------------------

    def create(
        self,
        model: str,
        spec: dict[str, Any],
        config: dict[str, Any],
        name: str | None = None,
        data_source: str | None = None,
    ) -> Run:
        spec_json, config_json = _dumps(spec), _dumps(config)
        for _ in range(5):  # a random suffix can collide within one second; just draw again
            now = time.time()
            run_id = new_run_id(now)
            try:
                with self._write() as conn:
                    conn.execute(
                        "INSERT INTO runs (id, created_at, status, name, model, spec_json,"
                        " config_json, data_source) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (run_id, now, Status.QUEUED.value, name, model, spec_json, config_json,
                         data_source),
                    )
                    return Run.from_row(self._fetch(conn, run_id))
            except sqlite3.IntegrityError:
                continue
        raise RuntimeError("could not allocate a unique run id")

    def get(self, run_id: str) -> Run:
        with self._connect() as conn:
            return Run.from_row(self._fetch(conn, run_id))

    def list(
        self, status: Status | str | Iterable[Status | str] | None = None, limit: int | None = None
    ) -> list[Run]:
        """Runs newest first, optionally only those with the given status(es)."""
        sql, params = "SELECT * FROM runs", []
        if status is not None:
            wanted = [status] if isinstance(status, str) else list(status)
            params = [Status(s).value for s in wanted]
            sql += f" WHERE status IN ({', '.join('?' * len(params))})"
        sql += " ORDER BY created_at DESC, rowid DESC LIMIT ?"
        with self._connect() as conn:
            rows = conn.execute(sql, (*params, -1 if limit is None else limit)).fetchall()
        return [Run.from_row(row) for row in rows]

    def queued(self) -> list[Run]:
        """Queued runs in the order workers will claim them (oldest first)."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT * FROM runs WHERE status = ? ORDER BY created_at, rowid",
                (Status.QUEUED.value,),
            ).fetchall()
        return [Run.from_row(row) for row in rows]

    def queue_position(self, run_id: str) -> int | None:
        """1 for the run that will be claimed next; None if the run is not queued."""
        with self._connect() as conn:
            row = conn.execute("SELECT status, created_at, rowid FROM runs WHERE id = ?",
                               (run_id,)).fetchone()
            if row is None:
                raise KeyError(f"unknown run id: {run_id!r}")
            if row["status"] != Status.QUEUED.value:
                return None
            (ahead,) = conn.execute(
                "SELECT COUNT(*) FROM runs WHERE status = ?"
                " AND (created_at < ? OR (created_at = ? AND rowid < ?))",
                (Status.QUEUED.value, row["created_at"], row["created_at"], row["rowid"]),
            ).fetchone()
        return ahead + 1

    def mark_running(
        self, run_id: str, pid: int, device: str | None = None, data_source: str | None = None
    ) -> Run:
        columns: dict[str, Any] = {"started_at": time.time(), "worker_pid": pid}
        if device is not None:
            columns["device"] = device
        if data_source is not None:
            columns["data_source"] = data_source
        return self._transition(run_id, Status.RUNNING, **columns)

    def claim_next(self, pid: int, device: str | None = None) -> Run | None:
        """Atomically take the oldest queued run and mark it running; None if the queue is empty."""
        with self._write() as conn:
            # Select and update inside one write transaction, so two workers never get the same run.
            row = conn.execute(
                "SELECT id FROM runs WHERE status = ? ORDER BY created_at, rowid LIMIT 1",
                (Status.QUEUED.value,),
            ).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE runs SET status = ?, started_at = ?, worker_pid = ?,"
                " device = COALESCE(?, device) WHERE id = ?",
                (Status.RUNNING.value, time.time(), pid, device, row["id"]),
            )
            return Run.from_row(self._fetch(conn, row["id"]))

    def finish(
        self,
        run_id: str,
        status: Status | str,
        message: str | None = None,
        result: dict[str, Any] | None = None,
    ) -> Run:
        """Move a run to a terminal status; `result` is merged into the stored result."""
        status = Status(status)
        if not status.terminal:
            raise ValueError(f"finish needs a terminal status, got {status}")
        with self._write() as conn:
            row = self._fetch(conn, run_id)
            current = Status(row["status"])
            if status not in TRANSITIONS.get(current, ()):
                raise ValueError(f"run {run_id}: cannot go from {current} to {status}")
            merged = {**json.loads(row["result_json"]), **(result or {})}
            conn.execute(
                "UPDATE runs SET status = ?, finished_at = ?, message = COALESCE(?, message),"
                " result_json = ? WHERE id = ?",
                (status.value, time.time(), message, _dumps(merged), run_id),
            )
            return Run.from_row(self._fetch(conn, run_id))

    def update_result(self, run_id: str, result: dict[str, Any]) -> Run:
        """Merge fields into a run's result (e.g. params and FLOPs, known before training ends)."""
        with self._write() as conn:
            row = self._fetch(conn, run_id)
            merged = {**json.loads(row["result_json"]), **result}
            conn.execute("UPDATE runs SET result_json = ? WHERE id = ?", (_dumps(merged), run_id))
            return Run.from_row(self._fetch(conn, run_id))

    def request_cancel(self, run_id: str) -> Status:
        """Cancel a queued run now, or flag a running one for its worker; returns the new status."""
        with self._write() as conn:
            current = Status(self._fetch(conn, run_id)["status"])
            if current is Status.QUEUED:
                conn.execute(
                    "UPDATE runs SET status = ?, finished_at = ?, message = ? WHERE id = ?",
                    (Status.CANCELLED.value, time.time(), "cancelled before it started", run_id),
                )
                return Status.CANCELLED
            if current is Status.RUNNING:
                # The worker polls cancel_requested between steps and finishes the run itself.
                conn.execute("UPDATE runs SET cancel_requested = 1 WHERE id = ?", (run_id,))
            return current

    def cancel_requested(self, run_id: str) -> bool:
        with self._connect() as conn:
            return bool(self._fetch(conn, run_id)["cancel_requested"])

    def mark_interrupted(self, alive: Callable[[int], bool] = pid_alive) -> list[str]:
        """Mark running runs whose worker process is gone as interrupted; returns their ids."""
        interrupted = []
        with self._write() as conn:
            rows = conn.execute("SELECT id, worker_pid FROM runs WHERE status = ?",
                                (Status.RUNNING.value,)).fetchall()
            for row in rows:
                pid = row["worker_pid"]
                if pid is not None and alive(pid):
                    continue
                conn.execute(
                    "UPDATE runs SET status = ?, finished_at = ?, message = ? WHERE id = ?",
                    (Status.INTERRUPTED.value, time.time(),
                     f"worker process {pid} is gone; metrics up to that point are kept", row["id"]),
                )
                interrupted.append(row["id"])
        return interrupted

    def delete(self, run_id: str, force: bool = False) -> None:
        """Remove a run, its metrics and its checkpoints. A running run needs force=True."""
        with self._write() as conn:
            status = Status(self._fetch(conn, run_id)["status"])
            if status is Status.RUNNING and not force:
                raise ValueError(f"run {run_id} is running; cancel it first (or pass force=True)")
            conn.execute("DELETE FROM metrics WHERE run_id = ?", (run_id,))
            conn.execute("DELETE FROM runs WHERE id = ?", (run_id,))
        shutil.rmtree(self.run_dir(run_id), ignore_errors=True)

    # -- metrics -------------------------------------------------------------------------

    def add_metrics(self, run_id: str, events: list[dict[str, Any]]) -> int:
        """Append events (kind, epoch, step, time + any values); returns the last seq written."""
        rows = [self._event_row(event) for event in events]
        with self._write() as conn:
            self._fetch(conn, run_id)
            (last,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM metrics WHERE run_id = ?",
                                   (run_id,)).fetchone()
            conn.executemany(
                "INSERT INTO metrics (run_id, seq, kind, epoch, step, time, values_json)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(run_id, last + i, *row) for i, row in enumerate(rows, start=1)],
            )
        return last + len(rows)

    @staticmethod
    def _event_row(event: dict[str, Any]) -> tuple[Any, ...]:
        kind = event.get("kind")
        if kind not in ("step", "epoch"):
            raise ValueError(f"metric kind must be 'step' or 'epoch', got {kind!r}")
        clash = [key for key in RESERVED_EVENT_KEYS if key in event]
        if clash:
            raise ValueError(f"metric event may not set {clash}; the store assigns them")
        values = {key: value for key, value in event.items() if key not in EVENT_COLUMNS}
        epoch, step = event.get("epoch"), event.get("step")
        return (
            kind,
            None if epoch is None else float(epoch),
            None if step is None else int(step),
            float(event.get("time", time.time())),
            _dumps(values),
        )

    def metrics(
        self, run_id: str, kind: str | None = None, after_seq: int = 0
    ) -> list[dict[str, Any]]:
        """Events with seq > after_seq, in seq order, flattened to {seq, kind, epoch, step, time, **values}.

        Pages poll with after_seq = the last seq they have, so each refresh fetches only new points.
        """
        sql = ("SELECT seq, kind, epoch, step, time, values_json FROM metrics"
               " WHERE run_id = ? AND seq > ?")
        params: list[Any] = [run_id, after_seq]
        if kind is not None:
            sql += " AND kind = ?"
            params.append(kind)
        with self._connect() as conn:
            rows = conn.execute(sql + " ORDER BY seq", params).fetchall()
        return [
            {"seq": r["seq"], "kind": r["kind"], "epoch": r["epoch"], "step": r["step"],
             "time": r["time"], **json.loads(r["values_json"])}
            for r in rows
        ]

    # -- checkpoints ---------------------------------------------------------------------

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / _check_name("run id", run_id)

    def checkpoint_path(self, run_id: str, name: str) -> Path:
        """<runs_dir>/<run_id>/<name>.pt, e.g. name 'epoch-003' or 'final'."""
        name = name.removesuffix(".pt")
        return self.run_dir(run_id) / f"{_check_name('checkpoint name', name)}.pt"

    def save_checkpoint(
        self, run_id: str, name: str, state_dict: dict[str, Any], meta: dict[str, Any]
    ) -> Path:
        import torch  # lazy: the UI can list runs without paying for a torch import

        path = self.checkpoint_path(run_id, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        # JSON round trip: meta must hold only plain types, or weights_only loading would refuse it.
        payload = {"state_dict": state_dict, "meta": json.loads(_dumps(meta))}
        # Write beside the target then rename: a reader never sees a half-written checkpoint.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(payload, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def load_checkpoint(self, run_id: str, name: str) -> dict[str, Any]:
        """Returns {"state_dict": ..., "meta": ...}; weights_only refuses arbitrary pickled objects."""
        import torch

        return torch.load(self.checkpoint_path(run_id, name), weights_only=True, map_location="cpu")

    def checkpoints(self, run_id: str) -> list[str]:
        """Checkpoint names of a run, sorted (epoch-001, epoch-002, ..., final)."""
        folder = self.run_dir(run_id)
        if not folder.is_dir():
            return []
        return sorted(p.stem for p in folder.glob("*.pt") if not p.name.startswith("."))
