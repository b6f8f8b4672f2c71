"""The metric log: an append-only list of events per run, in the run store's `metrics` table.

An event is a flat dict: kind ("step" or "epoch"), epoch, step, time, and any values (losses,
accuracies, examples/s). These functions work inside a connection the run store opened, so an
append and the check that its run exists share one write transaction.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from cnnlab.runs.encoding import dumps

Event = dict[str, Any]

# seq counts 1, 2, 3, ... within a run and is assigned inside the write transaction, so pages
# can poll "everything after seq N".
SCHEMA = """
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


def event_rows(events: list[Event]) -> list[tuple[Any, ...]]:
    """Check and encode events before any transaction opens: a bad event writes nothing."""
    return [_event_row(event) for event in events]


def _event_row(event: Event) -> tuple[Any, ...]:
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
        dumps(values),
    )


def append(conn: sqlite3.Connection, run_id: str, rows: list[tuple[Any, ...]]) -> int:
    """Append encoded rows after the run's last seq; returns the last seq written.

    Must run inside a write transaction, or two writers could take the same seq."""
    (last,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM metrics WHERE run_id = ?",
                           (run_id,)).fetchone()
    conn.executemany(
        "INSERT INTO metrics (run_id, seq, kind, epoch, step, time, values_json)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(run_id, last + i, *row) for i, row in enumerate(rows, start=1)],
    )
    return last + len(rows)


def select(
    conn: sqlite3.Connection, run_id: str, kind: str | None = None, after_seq: int = 0
) -> list[Event]:
    """Events with seq > after_seq, in seq order, flattened to {seq, kind, epoch, step, time, **values}."""
    sql = ("SELECT seq, kind, epoch, step, time, values_json FROM metrics"
           " WHERE run_id = ? AND seq > ?")
    params: list[Any] = [run_id, after_seq]
    if kind is not None:
        sql += " AND kind = ?"
        params.append(kind)
    rows = conn.execute(sql + " ORDER BY seq", params).fetchall()
    return [
        {"seq": r["seq"], "kind": r["kind"], "epoch": r["epoch"], "step": r["step"],
         "time": r["time"], **json.loads(r["values_json"])}
        for r in rows
    ]


def delete(conn: sqlite3.Connection, run_id: str) -> None:
    conn.execute("DELETE FROM metrics WHERE run_id = ?", (run_id,))
