"""What a runs folder's files allow before the run store opens them: a runs.sqlite lost or
emptied beside run folders, a folder this process may only read.

Each check returns what is wrong, in words with the fix, or None; the store raises it as its
StoreError, so callers see one error type."""

from __future__ import annotations

import os
import re
from pathlib import Path

RUN_DIR_NAME = re.compile(r"\d{8}-\d{6}-[0-9a-f]{6}")  # store.new_run_id's shape


def writable(runs_dir: Path, db_path: Path) -> bool:
    """Whether this process may write the store (a folder not there yet will be created)."""
    if not runs_dir.exists():
        return True
    return os.access(runs_dir, os.W_OK) and (not db_path.exists() or os.access(db_path, os.W_OK))


def lost_records(runs_dir: Path, db_path: Path) -> str | None:
    """A runs.sqlite that is missing or empty (0 bytes) beside run folders: the records were
    lost (a full disk, a copy cut short), and a fresh schema over it would silently show an
    empty store and bury the evidence."""
    size = db_path.stat().st_size if db_path.exists() else None
    if size not in (None, 0) or not runs_dir.is_dir():
        return None
    folders = sorted(p.name for p in runs_dir.iterdir()
                     if p.is_dir() and RUN_DIR_NAME.fullmatch(p.name))
    if not folders:
        return None  # a new store
    state = "missing" if size is None else "empty (0 bytes)"
    return (
        f"the run store {db_path} is {state}, but {runs_dir} holds {len(folders)}"
        f" run folder(s) ({', '.join(folders[:3])}{', ...' if len(folders) > 3 else ''}):"
        " the run records were lost, and nothing was changed. Fix: restore runs.sqlite"
        " (and runs.sqlite-wal, if there was one) from a backup; or, to start over, move"
        " runs.sqlite and the run folders aside (the folders keep checkpoints and worker"
        " logs) or point $CNNLAB_RUNS at a new folder.")


def read_only_uri(db_path: Path) -> str:
    """The URI that opens `db_path` for reading only (sqlite3.connect(..., uri=True))."""
    uri = f"{db_path.resolve().as_uri()}?mode=ro"
    # Without a -wal file every write is in the main file, and immutable=1 lets SQLite read
    # it from a folder where it cannot create the -shm file WAL mode otherwise needs.
    if not Path(f"{db_path}-wal").exists():
        uri += "&immutable=1"
    return uri


def read_only(runs_dir: Path) -> str:
    """What a write to a read-only store is told."""
    return (f"The run store {runs_dir} is read-only: runs, metrics and checkpoints can"
            " be browsed, but nothing can be recorded. Fix: make the folder and runs.sqlite"
            " writable for this user, or copy the folder somewhere writable and set"
            " $CNNLAB_RUNS to the copy")


def not_browsable(runs_dir: Path, db_path: Path, missing: list[str] | None) -> str | None:
    """A read-only store must already exist (`missing` None: no file) with the current
    columns (`missing`: those it lacks), since nothing can create or add them."""
    if missing is None:
        return f"no run store at {db_path}, and {runs_dir} is read-only"
    if not missing:
        return None
    return (f"the run store {db_path} is read-only and was written by an older cnnlab"
            f" (it lacks {', '.join(missing)}). Fix: open it once where it"
            " is writable, so cnnlab adds the columns, or browse a writable copy.")
