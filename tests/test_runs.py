"""Tests for cnnlab.runs.store and what it fronts: the SQLite run store, its queue, metrics
(cnnlab.runs.metrics) and checkpoints (cnnlab.runs.checkpoints)."""

from __future__ import annotations

import math
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cnnlab.runs import integrity, schema
from cnnlab.runs import store as store_module
from cnnlab.runs.processes import pid_alive
from cnnlab.runs.checkpoints import CheckpointError
from cnnlab.runs.store import RunStore, Status, StoreError

ROOT = Path(__file__).resolve().parents[1]
SPEC = {"family": "vgg", "arch": [[1, 64], [1, 128]], "fc": [4096, 4096], "dropout": 0.5}
CONFIG = {"lr": 0.05, "batch_size": 128, "epochs": 10, "device": "cpu", "subset": None, "seed": 0}


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / "runs")


def make_running(store: RunStore, pid: int = 12345) -> str:
    run_id = store.create("vgg-11", SPEC, CONFIG).id
    store.mark_running(run_id, pid=pid, device="cpu")
    return run_id


# -- runs ------------------------------------------------------------------------------


def test_created_run_round_trips_spec_and_config(store: RunStore) -> None:
    created = store.create("vgg-11", SPEC, CONFIG, name="my vgg")
    run = store.get(created.id)
    assert run == created
    assert run.status is Status.QUEUED
    assert (run.model, run.name, run.spec, run.config) == ("vgg-11", "my vgg", SPEC, CONFIG)
    assert run.started_at is None and run.result == {} and not run.cancel_requested


def test_run_ids_are_short_sortable_and_unique(store: RunStore) -> None:
    ids = [store.create("m", {}, {}).id for _ in range(5)]
    assert len(set(ids)) == 5
    for run_id in ids:
        date, clock, suffix = run_id.split("-")
        assert (len(date), len(clock), len(suffix)) == (8, 6, 6)


def test_get_of_unknown_id_raises_key_error_naming_it(store: RunStore) -> None:
    with pytest.raises(KeyError, match="nope"):
        store.get("nope")


def test_list_is_newest_first_filters_by_status_and_limits(store: RunStore) -> None:
    a, b, c = (store.create(m, {}, {}).id for m in "abc")
    store.mark_running(b, pid=1, device="cpu")
    assert [r.id for r in store.list()] == [c, b, a]
    assert [r.id for r in store.list(status=Status.QUEUED)] == [c, a]
    assert [r.id for r in store.list(status=["running", "queued"], limit=2)] == [c, b]


def test_database_is_in_wal_mode(store: RunStore) -> None:
    with sqlite3.connect(store.db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_runs_dir_defaults_to_the_cnnlab_runs_env_var(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CNNLAB_RUNS", str(tmp_path / "elsewhere"))
    assert RunStore().db_path == tmp_path / "elsewhere" / "runs.sqlite"


# -- queue -----------------------------------------------------------------------------


def test_queue_is_oldest_first_with_positions_from_one(store: RunStore) -> None:
    ids = [store.create("m", {}, {}).id for _ in range(3)]
    assert [r.id for r in store.queued()] == ids
    assert [store.queue_position(i) for i in ids] == [1, 2, 3]
    store.mark_running(ids[0], pid=1, device="cpu")
    assert [store.queue_position(i) for i in ids] == [None, 1, 2]


def test_claim_next_takes_the_oldest_queued_run_until_none_is_left(store: RunStore) -> None:
    first, second = store.create("m", {}, {}).id, store.create("m", {}, {}).id
    claimed = store.claim_next(pid=42, device="cuda:0")
    assert claimed is not None and claimed.id == first
    assert (claimed.status, claimed.worker_pid, claimed.device) == (Status.RUNNING, 42, "cuda:0")
    assert claimed.started_at is not None
    assert store.claim_next(pid=42).id == second
    assert store.claim_next(pid=42) is None


def test_eight_threads_claiming_twenty_runs_claim_each_exactly_once(store: RunStore) -> None:
    ids = {store.create("m", {}, {}).id for _ in range(20)}
    claimed: list[str] = []
    start = threading.Barrier(8)

    def worker(n: int) -> None:
        start.wait()
        while (run := store.claim_next(pid=n)) is not None:
            claimed.append(run.id)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(ids)
    assert store.queued() == []


def test_concurrent_creates_from_eight_threads_lose_nothing(store: RunStore) -> None:
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        start.wait()
        try:
            for i in range(10):
                store.create("m", {"thread": n, "i": i}, {})
        except BaseException as e:  # surfaced below; a thread's exception is otherwise lost
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    runs = store.list()
    assert len(runs) == len({r.id for r in runs}) == 80
    assert {(r.spec["thread"], r.spec["i"]) for r in runs} == {(n, i) for n in range(8) for i in range(10)}


# -- transitions and cancel ------------------------------------------------------------


def test_finished_run_cannot_be_started_or_finished_again(store: RunStore) -> None:
    run_id = make_running(store)
    store.finish(run_id, Status.DONE)
    with pytest.raises(ValueError, match="done to running"):
        store.mark_running(run_id, pid=1, device="cpu")
    with pytest.raises(ValueError, match="done to failed"):
        store.finish(run_id, Status.FAILED)


def test_queued_run_cannot_be_marked_done_without_running(store: RunStore) -> None:
    run_id = store.create("m", {}, {}).id
    with pytest.raises(ValueError, match="queued to done"):
        store.finish(run_id, "done")


def test_finish_only_accepts_terminal_statuses(store: RunStore) -> None:
    run_id = make_running(store)
    with pytest.raises(ValueError, match="terminal"):
        store.finish(run_id, Status.QUEUED)
    with pytest.raises(ValueError):
        store.finish(run_id, "bogus")


def test_finish_records_message_time_and_merges_result(store: RunStore) -> None:
    run_id = make_running(store)
    store.update_result(run_id, {"params": 1000, "flops": 5e6})
    run = store.finish(run_id, Status.DIVERGED, message="loss is nan", result={"test_acc": 0.1})
    assert run.status is Status.DIVERGED and run.message == "loss is nan"
    assert run.finished_at is not None and run.finished_at >= run.started_at
    assert run.result == {"params": 1000, "flops": 5e6, "test_acc": 0.1}


def test_cancelling_a_queued_run_cancels_it_at_once(store: RunStore) -> None:
    run_id = store.create("m", {}, {}).id
    assert store.request_cancel(run_id) is Status.CANCELLED
    run = store.get(run_id)
    assert run.status is Status.CANCELLED and run.finished_at is not None
    assert store.queued() == [] and store.claim_next(pid=1) is None


def test_cancelling_a_running_run_only_flags_it_for_the_worker(store: RunStore) -> None:
    run_id = make_running(store)
    assert not store.cancel_requested(run_id)
    assert store.request_cancel(run_id) is Status.RUNNING
    assert store.cancel_requested(run_id)
    assert store.get(run_id).status is Status.RUNNING
    assert store.finish(run_id, Status.CANCELLED).status is Status.CANCELLED


def test_delete_removes_rows_metrics_and_checkpoint_folder(store: RunStore) -> None:
    run_id = make_running(store)
    store.add_metrics(run_id, [{"kind": "step", "epoch": 0.1, "step": 1, "time": 1.0}])
    store.run_dir(run_id).mkdir()
    with pytest.raises(ValueError, match="running"):
        store.delete(run_id)
    store.finish(run_id, Status.DONE)
    store.delete(run_id)
    with pytest.raises(KeyError):
        store.get(run_id)
    assert store.metrics(run_id) == [] and not store.run_dir(run_id).exists()


# Each entry point that changes a status, with the move it makes: (from, to, call).
STATUS_WRITERS = {
    "claim_next": (Status.QUEUED, Status.RUNNING, lambda store, run_id: store.claim_next(pid=1)),
    "mark_running": (Status.QUEUED, Status.RUNNING,
                     lambda store, run_id: store.mark_running(run_id, pid=1)),
    "request_cancel": (Status.QUEUED, Status.CANCELLED,
                       lambda store, run_id: store.request_cancel(run_id)),
    "mark_interrupted": (Status.RUNNING, Status.INTERRUPTED,
                         lambda store, run_id: store.mark_interrupted(alive=lambda pid: False)),
    "finish": (Status.RUNNING, Status.DONE, lambda store, run_id: store.finish(run_id, "done")),
    "finish_unless_final": (Status.RUNNING, Status.FAILED,
                            lambda store, run_id: store.finish_unless_final(run_id, "failed")),
}


@pytest.mark.parametrize("entry", STATUS_WRITERS)
def test_every_status_change_is_refused_when_the_transition_table_does_not_allow_it(
        store: RunStore, monkeypatch, entry: str) -> None:
    current, new, call = STATUS_WRITERS[entry]
    run_id = store.create("m", {}, {}).id if current is Status.QUEUED else make_running(store)
    before = store.get(run_id)
    allowed = store_module.TRANSITIONS[current] - {new}
    monkeypatch.setitem(store_module.TRANSITIONS, current, allowed)
    with pytest.raises(ValueError, match=f"{current} to {new}"):
        call(store, run_id)
    assert store.get(run_id) == before  # refused as a whole: no other column changed either


def test_finish_unless_final_finishes_a_running_or_queued_run(store: RunStore) -> None:
    running, queued = make_running(store), store.create("m", {}, {}).id
    assert store.finish_unless_final(running, Status.FAILED, "crashed", {"code": 1})
    run = store.get(running)
    assert (run.status, run.message, run.result) == (Status.FAILED, "crashed", {"code": 1})
    assert run.finished_at is not None
    assert store.finish_unless_final(queued, Status.FAILED, "no worker")  # died before claiming
    assert store.get(queued).status is Status.FAILED


def test_finish_unless_final_keeps_the_first_final_status(store: RunStore) -> None:
    run_id = make_running(store)
    store.finish(run_id, Status.DONE, "trained")
    assert not store.finish_unless_final(run_id, Status.FAILED, "late")
    run = store.get(run_id)
    assert (run.status, run.message) == (Status.DONE, "trained")


def test_finish_unless_final_leaves_gone_runs_and_other_workers_runs_alone(store: RunStore) -> None:
    assert not store.finish_unless_final("20990101-000000-000000", Status.FAILED, "gone")
    run_id = make_running(store, pid=111)
    assert not store.finish_unless_final(run_id, Status.INTERRUPTED, "not mine", pid=222)
    assert store.get(run_id).status is Status.RUNNING
    assert store.finish_unless_final(run_id, Status.INTERRUPTED, "mine", pid=111)
    assert store.get(run_id).status is Status.INTERRUPTED


def test_finish_unless_final_only_accepts_terminal_statuses(store: RunStore) -> None:
    with pytest.raises(ValueError, match="terminal"):
        store.finish_unless_final(make_running(store), Status.RUNNING)


# -- metrics ---------------------------------------------------------------------------


def test_metrics_polling_after_seq_returns_only_new_points(store: RunStore) -> None:
    run_id = make_running(store)
    store.add_metrics(run_id, [
        {"kind": "step", "epoch": 0.5, "step": 10, "time": 1.0, "train_loss": 2.0},
        {"kind": "step", "epoch": 1.0, "step": 20, "time": 2.0, "train_loss": 1.5},
        {"kind": "epoch", "epoch": 1, "step": 20, "time": 2.1, "test_acc": 0.6},
    ])
    first = store.metrics(run_id)
    assert [m["seq"] for m in first] == [1, 2, 3]
    assert first[0] == {"seq": 1, "kind": "step", "epoch": 0.5, "step": 10, "time": 1.0, "train_loss": 2.0}
    assert store.metrics(run_id, after_seq=first[-1]["seq"]) == []

    new = {"kind": "step", "epoch": 1.5, "step": 30, "time": 3.0, "train_loss": 1.0}
    last = store.add_metrics(run_id, [new])
    assert last == 4
    assert [m["train_loss"] for m in store.metrics(run_id, after_seq=3)] == [1.0]
    assert [m["seq"] for m in store.metrics(run_id, kind="epoch")] == [3]


def test_metric_values_keep_nan_and_numpy_like_scalars(store: RunStore) -> None:
    torch = pytest.importorskip("torch")
    run_id = make_running(store)
    store.add_metrics(run_id, [{"kind": "step", "epoch": 0.1, "step": 1, "train_loss": float("nan"),
                                "train_acc": torch.tensor(0.25)}])
    (point,) = store.metrics(run_id)
    assert math.isnan(point["train_loss"]) and point["train_acc"] == 0.25 and point["time"] > 0


def test_metric_events_with_bad_kind_or_unknown_run_are_rejected(store: RunStore) -> None:
    run_id = make_running(store)
    with pytest.raises(ValueError, match="kind"):
        store.add_metrics(run_id, [{"kind": "batch", "epoch": 0, "step": 0, "time": 0}])
    with pytest.raises(ValueError, match="seq"):
        store.add_metrics(run_id, [{"kind": "step", "seq": 7}])
    with pytest.raises(KeyError):
        store.add_metrics("20990101-000000-000000", [{"kind": "step", "epoch": 0, "step": 0, "time": 0}])
    assert store.metrics(run_id) == []


def write_metrics(runs_dir: str, run_id: str, writer: int, batches: int) -> None:
    """Child process body: append small batches, as a training loop does."""
    store = RunStore(runs_dir)
    for b in range(batches):
        events = [{"kind": "step", "epoch": b, "step": i, "time": float(b), "writer": writer, "batch": b}
                  for i in range(5)]
        store.add_metrics(run_id, events)


def test_metrics_from_two_processes_all_land_with_monotonic_seq(store: RunStore) -> None:
    shared, own_a, own_b = make_running(store), make_running(store), make_running(store)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=write_metrics, args=(str(store.runs_dir), run_id, n, 30))
             for n, run_id in enumerate([shared, shared, own_a, own_b])]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]

    points = store.metrics(shared)
    assert [m["seq"] for m in points] == list(range(1, 301))
    for writer in (0, 1):  # each writer's own events stay in the order it wrote them
        batches = [m["batch"] for m in points if m["writer"] == writer]
        assert batches == sorted(batches) and len(batches) == 150
    for run_id in (own_a, own_b):
        assert [m["seq"] for m in store.metrics(run_id)] == list(range(1, 151))


# -- checkpoints -----------------------------------------------------------------------


def test_checkpoint_round_trips_with_weights_only(store: RunStore) -> None:
    torch = pytest.importorskip("torch")
    run_id = make_running(store)
    layer = torch.nn.Linear(4, 3)
    path = store.save_checkpoint(run_id, "epoch-003", layer.state_dict(), {"epoch": 3, "test_acc": 0.8})
    store.save_checkpoint(run_id, "final.pt", layer.state_dict(), {"epoch": 10})
    assert path == store.runs_dir / run_id / "epoch-003.pt"
    assert store.checkpoints(run_id) == ["epoch-003", "final"]

    loaded = store.load_checkpoint(run_id, "epoch-003")
    assert loaded["meta"] == {"epoch": 3, "test_acc": 0.8}
    fresh = torch.nn.Linear(4, 3)
    fresh.load_state_dict(loaded["state_dict"])
    assert torch.equal(fresh.weight, layer.weight) and torch.equal(fresh.bias, layer.bias)


def _touch(path: str) -> None:
    Path(path).touch()


class Payload:
    """Unpickling this runs _touch: the kind of object weights_only must refuse."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (_touch, (str(self.marker),))


def test_loading_a_checkpoint_holding_a_pickled_object_is_refused(store: RunStore, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    run_id = make_running(store)
    marker = tmp_path / "code-ran"
    path = store.checkpoint_path(run_id, "final")
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": {}, "meta": Payload(marker)}, path)
    with pytest.raises(CheckpointError, match="UnpicklingError"):  # weights_only refused it
        store.load_checkpoint(run_id, "final")
    assert not marker.exists()


def test_checkpoint_names_cannot_escape_the_run_folder(store: RunStore) -> None:
    run_id = store.create("m", {}, {}).id
    for bad in ("../x", "a/b", ".hidden", ""):
        with pytest.raises(ValueError):
            store.checkpoint_path(run_id, bad)
    with pytest.raises(ValueError):
        store.checkpoint_path("../..", "final")


def test_runs_without_checkpoints_list_none(store: RunStore) -> None:
    assert store.checkpoints(store.create("m", {}, {}).id) == []


# -- interrupted workers ---------------------------------------------------------------

WORKER = """
import os, sys, time
from cnnlab.runs.store import RunStore
store = RunStore(sys.argv[1])
run = store.claim_next(os.getpid(), device="cpu")
store.add_metrics(run.id, [{"kind": "step", "epoch": 0.1 * i, "step": i, "time": time.time(), "loss": 1.0}
                           for i in range(3)])
print(run.id, flush=True)
time.sleep(60)
"""


def test_sigkilled_worker_run_is_marked_interrupted_and_keeps_metrics(store: RunStore) -> None:
    queued_id = store.create("m", {}, {}).id
    pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": pythonpath}
    proc = subprocess.Popen([sys.executable, "-c", WORKER, str(store.runs_dir)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip()
        assert line == queued_id, proc.stderr.read() if not line else line
        assert store.mark_interrupted() == []  # worker still alive: leave it alone
        assert store.get(queued_id).status is Status.RUNNING
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()

    assert store.mark_interrupted() == [queued_id]
    run = store.get(queued_id)
    assert run.status is Status.INTERRUPTED and str(proc.pid) in run.message
    assert [m["step"] for m in store.metrics(queued_id)] == [0, 1, 2]


def test_mark_interrupted_only_touches_running_runs_with_dead_workers(store: RunStore) -> None:
    alive_id, dead_id = make_running(store, pid=111), make_running(store, pid=222)
    queued_id = store.create("m", {}, {}).id
    assert store.mark_interrupted(alive=lambda pid: pid == 111) == [dead_id]
    assert [store.get(i).status for i in (alive_id, dead_id, queued_id)] == [
        Status.RUNNING, Status.INTERRUPTED, Status.QUEUED]
    with pytest.raises(ValueError):  # a late finish from the lost worker cannot revive it
        store.finish(dead_id, Status.DONE)


def test_pid_alive_sees_self_as_alive_and_zombie_or_reaped_children_as_dead() -> None:
    assert pid_alive(os.getpid())
    assert not pid_alive(0) and not pid_alive(-1)
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    stat = Path(f"/proc/{proc.pid}/stat")
    deadline = time.monotonic() + 10
    # No poll() here: it would reap the child before we can see it as a zombie.
    while stat.exists() and stat.read_text().rpartition(")")[2].split()[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    if stat.exists():  # Linux: exited, not yet reaped
        assert not pid_alive(proc.pid)
    proc.wait()
    assert not pid_alive(proc.pid)


def test_a_damaged_database_raises_the_stores_own_error(tmp_path):
    from cnnlab.runs.store import StoreError

    store = RunStore(tmp_path)
    store.db_path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="run store"):
        store.list()


# -- groups and the schema's migration ------------------------------------------------------

# The runs table as cnnlab's schema version 1 wrote it: no run_group column.
VERSION_1_RUNS = """
CREATE TABLE runs (
    id TEXT PRIMARY KEY, created_at REAL NOT NULL, started_at REAL, finished_at REAL,
    status TEXT NOT NULL, name TEXT, model TEXT NOT NULL, spec_json TEXT NOT NULL,
    config_json TEXT NOT NULL, device TEXT, data_source TEXT, worker_pid INTEGER, message TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0, result_json TEXT NOT NULL DEFAULT '{}');
INSERT INTO runs (id, created_at, status, name, model, spec_json, config_json)
    VALUES ('20260101-000000-abcdef', 1.0, 'done', 'old run', 'bn-lenet', '{}', '{}');
PRAGMA user_version = 1;
"""


def test_a_run_store_of_schema_1_gains_groups_in_place_and_keeps_its_runs(tmp_path: Path) -> None:
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    with sqlite3.connect(runs_dir / store_module.DB_NAME) as conn:
        conn.executescript(VERSION_1_RUNS)
    store = RunStore(runs_dir)
    (old,) = store.list()
    assert old.name == "old run" and old.status is Status.DONE and old.group is None
    assert old.owner is None
    new = store.create("vgg-11", SPEC, CONFIG, group="lr sweep", owner="Ada")
    assert store.get(new.id).group == "lr sweep" and store.get(new.id).owner == "Ada"
    with sqlite3.connect(runs_dir / store_module.DB_NAME) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION == 4
    RunStore(runs_dir)  # opening a migrated store again changes nothing
    assert [r.id for r in store.list()] == [new.id, old.id]


def test_a_run_store_of_schema_2_gains_owners_in_place(tmp_path: Path) -> None:
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    with sqlite3.connect(runs_dir / store_module.DB_NAME) as conn:
        conn.executescript(VERSION_1_RUNS)
        conn.execute("ALTER TABLE runs ADD COLUMN run_group TEXT")
        conn.execute("UPDATE runs SET run_group = 'g'")
        conn.execute("PRAGMA user_version = 2")
    store = RunStore(runs_dir)
    (old,) = store.list()
    assert (old.group, old.owner) == ("g", None)
    mine = store.create("vgg-11", SPEC, CONFIG, owner="Grace")
    assert [r.owner for r in RunStore(runs_dir).list()] == ["Grace", None]
    assert store.create("vgg-11", SPEC, CONFIG).owner is None and mine.owner == "Grace"


def test_list_filters_by_group_and_groups_gathers_them(store: RunStore) -> None:
    a = store.create("vgg-11", SPEC, CONFIG, name="a", group="g1")
    store.create("vgg-11", SPEC, CONFIG, name="alone")
    b = store.create("vgg-11", SPEC, CONFIG, name="b", group="g1")
    c = store.create("vgg-11", SPEC, CONFIG, name="c", group="g2")
    assert [r.id for r in store.list(group="g1")] == [b.id, a.id]
    assert [r.id for r in store.list(Status.QUEUED, group="g2")] == [c.id]
    assert {g: [r.name for r in runs] for g, runs in store_module.groups(store.list()).items()} \
        == {"g2": ["c"], "g1": ["b", "a"]}


def test_create_starts_the_result_with_what_is_known_before_launch(store: RunStore) -> None:
    run = store.create("vgg-11", SPEC, CONFIG, result={"memory_estimated": 123})
    assert run.result == {"memory_estimated": 123}
    store.mark_running(run.id, pid=1)
    assert store.finish(run.id, Status.DONE, result={"memory_measured": 99}).result == {
        "memory_estimated": 123, "memory_measured": 99}


# -- integrity: a lost database, a read-only folder ----------------------------------------------


def test_an_emptied_database_beside_run_folders_is_refused_not_replaced(tmp_path: Path) -> None:
    runs_dir = tmp_path / "runs"
    store = RunStore(runs_dir)
    run_id = store.create("vgg-11", SPEC, CONFIG).id
    store.run_dir(run_id).mkdir(parents=True)  # as a worker's log or a checkpoint makes it
    (runs_dir / store_module.DB_NAME).write_bytes(b"")  # truncated: a full disk, a cut copy
    for wal in runs_dir.glob(f"{store_module.DB_NAME}-*"):
        wal.unlink()
    with pytest.raises(StoreError, match=r"empty \(0 bytes\).*1 run folder.*restore runs.sqlite"):
        RunStore(runs_dir)
    assert (runs_dir / store_module.DB_NAME).stat().st_size == 0  # nothing written over it
    (runs_dir / store_module.DB_NAME).unlink()
    with pytest.raises(StoreError, match="missing"):
        RunStore(runs_dir)


def test_a_new_store_and_a_store_without_run_folders_open_as_before(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / store_module.DB_NAME).write_bytes(b"")
    (tmp_path / "empty" / "notes").mkdir()  # not a run folder
    assert RunStore(tmp_path / "empty").list() == []
    assert RunStore(tmp_path / "new").list() == []


def test_a_read_only_store_can_be_browsed_and_refuses_writes_clearly(tmp_path: Path,
                                                                      monkeypatch) -> None:
    runs_dir = tmp_path / "runs"
    writable = RunStore(runs_dir)
    run_id = writable.create("vgg-11", SPEC, CONFIG, name="kept").id
    writable.mark_running(run_id, pid=1)
    writable.add_metrics(run_id, [{"kind": "step", "epoch": 0, "step": 1, "time": 0.0,
                                   "train_loss": 2.0}])
    # Tests run as root, for whom chmod -w changes nothing: pretend the folder is read-only.
    real_access = os.access
    monkeypatch.setattr(integrity.os, "access",
                        lambda path, mode: mode != os.W_OK and real_access(path, mode))
    store = RunStore(runs_dir)
    assert store.read_only
    assert [r.name for r in store.list()] == ["kept"] and store.get(run_id).name == "kept"
    assert [e["train_loss"] for e in store.metrics(run_id, "step")] == [2.0]
    with pytest.raises(StoreError, match="read-only: runs, metrics and checkpoints can be browsed"):
        store.create("vgg-11", SPEC, CONFIG)
    with pytest.raises(StoreError, match="read-only"):
        store.request_cancel(run_id)
    assert RunStore(runs_dir, read_only=False).get(run_id).status is Status.RUNNING


def test_a_read_only_store_must_exist_with_the_current_columns(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no run store at .* is read-only"):
        RunStore(tmp_path / "none", read_only=True)
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    with sqlite3.connect(runs_dir / store_module.DB_NAME) as conn:
        conn.executescript(VERSION_1_RUNS)
    with pytest.raises(StoreError, match="older cnnlab .*lacks run_group, owner, worker_start"):
        RunStore(runs_dir, read_only=True)
    assert [r.name for r in RunStore(runs_dir, read_only=False).list()] == ["old run"]
    assert [r.name for r in RunStore(runs_dir, read_only=True).list()] == ["old run"]
