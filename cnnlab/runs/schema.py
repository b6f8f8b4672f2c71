"""The run store's tables in runs.sqlite, and the in-place migration of a file an older cnnlab
wrote (the store opens every file through `create_or_migrate`)."""

from __future__ import annotations

import sqlite3

from cnnlab.runs import metrics as metric_log

SCHEMA_VERSION = 4
# Columns added after version 1, as (name, SQL type): a store made by an older cnnlab gains
# them in place when it is opened (ALTER TABLE ADD COLUMN keeps every row; new columns are NULL).
ADDED_COLUMNS = (("run_group", "TEXT"), ("owner", "TEXT"), ("worker_start", "INTEGER"))

# One row per training run. spec/config/result are JSON text so the schema does not change
# whenever a model family or hyperparameter is added. Queued runs are read oldest first,
# (created_at, rowid) with rowid breaking ties, and start in fair turns (cnnlab.runs.turns).
RUNS_SCHEMA = """
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
    result_json      TEXT NOT NULL DEFAULT '{}',
    run_group        TEXT,
    owner            TEXT,
    worker_start     INTEGER
);
CREATE INDEX IF NOT EXISTS runs_status_created ON runs (status, created_at);
"""
# After the migration, so an old file has the column before it is indexed.
GROUP_INDEX = "CREATE INDEX IF NOT EXISTS runs_group ON runs (run_group, created_at)"


def create_or_migrate(conn: sqlite3.Connection) -> None:
    """Create the runs and metrics tables, or bring an older file's up to SCHEMA_VERSION.

    Runs inside the caller's write transaction; opening a current file again changes nothing."""
    for statement in (RUNS_SCHEMA + metric_log.SCHEMA).split(";"):
        if statement.strip():
            conn.execute(statement)
    _add_missing_columns(conn)
    conn.execute(GROUP_INDEX)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def columns(conn: sqlite3.Connection) -> set[str]:
    """The runs table's column names; empty when the file has no runs table."""
    return {row[1] for row in conn.execute("PRAGMA table_info(runs)")}


def missing_columns(have: set[str]) -> list[str]:
    """The ADDED_COLUMNS a runs table with columns `have` lacks, in the order they were added."""
    return [name for name, _ in ADDED_COLUMNS if name not in have]


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    """Migrate a store written by an older schema: add the columns it lacks (ADDED_COLUMNS)."""
    sql_types = dict(ADDED_COLUMNS)
    for name in missing_columns(columns(conn)):
        conn.execute(f"ALTER TABLE runs ADD COLUMN {name} {sql_types[name]}")
