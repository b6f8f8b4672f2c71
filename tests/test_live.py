"""Following runs: incremental metric reads and progress summaries (cnnlab.runs.live)."""

from __future__ import annotations

import time

import pytest

from cnnlab.runs.live import RunEvents, progress
from cnnlab.runs.store import RunStore, Status
from cnnlab.views.text import progress_text


@pytest.fixture
def store(tmp_path):
    return RunStore(tmp_path / "runs")


def step(step: int, total: int = 100, per_epoch: int = 50, **values) -> dict:
    return {"kind": "step", "step": step, "epoch": step / per_epoch, "total_steps": total,
            "train_loss": 1.0, "train_acc": 0.5, "examples_per_s": 1000.0, "eta_s": 60.0,
            **values}


def epoch(step: int, test_acc: float, per_epoch: int = 50) -> dict:
    return {"kind": "epoch", "step": step, "epoch": step / per_epoch, "train_loss": 0.9,
            "train_acc": 0.6, "test_loss": 1.0, "test_acc": test_acc}


def test_events_are_read_incrementally_after_the_last_seq(store, monkeypatch):
    run = store.create("bn-lenet", {}, {"epochs": 2})
    store.add_metrics(run.id, [step(1), step(10)])
    events = RunEvents(store)
    asked = []
    real = store.metrics
    monkeypatch.setattr(store, "metrics",
                        lambda run_id, **kw: asked.append(kw) or real(run_id, **kw))
    assert [e["step"] for e in events.get(run.id)] == [1, 10]
    store.add_metrics(run.id, [step(20)])
    assert [e["step"] for e in events.get(run.id)] == [1, 10, 20]
    assert [kw["after_seq"] for kw in asked] == [0, 2]


def test_an_ended_run_is_read_once_more_and_then_from_memory(store, monkeypatch):
    run = store.create("bn-lenet", {}, {"epochs": 1})
    store.mark_running(run.id, pid=1)
    store.add_metrics(run.id, [step(1)])
    store.finish(run.id, Status.DONE, "trained")
    events = RunEvents(store)
    ended = store.get(run.id)
    assert len(events.get(ended)) == 1
    monkeypatch.setattr(store, "metrics", lambda *a, **k: pytest.fail("asked the store again"))
    assert len(events.get(ended)) == 1


def test_the_cache_forgets_the_least_recently_read_runs(store):
    events = RunEvents(store, max_runs=2)
    ids = [store.create("m", {}, {}).id for _ in range(3)]
    for run_id in ids:
        events.get(run_id)
    assert list(events._events) == ids[1:]


def test_callers_get_their_own_copy(store):
    run = store.create("m", {}, {})
    store.add_metrics(run.id, [step(1)])
    events = RunEvents(store)
    events.get(run.id).clear()
    assert len(events.get(run.id)) == 1


def test_progress_of_a_running_run(store):
    run = store.create("bn-lenet", {}, {"epochs": 2})
    store.mark_running(run.id, pid=1)
    now = time.time()
    events = [step(1, time=now - 10), epoch(50, 0.7), step(60, time=now - 5, eta_s=30.0)]
    p = progress(store.get(run.id), events, now=now)
    assert p.fraction == pytest.approx(0.6)
    assert p.epoch == pytest.approx(1.2)
    assert p.planned_epochs == pytest.approx(2.0)
    assert p.eta_s == pytest.approx(25.0)  # counted down since the event was written
    assert p.test_acc == p.best_test_acc == 0.7
    assert progress_text(p) == "epoch 1.2 of 2 · 1,000 examples/s · 25 s left"


def test_progress_before_any_event_and_when_done(store):
    run = store.create("bn-lenet", {}, {"epochs": 1})
    queued = progress(store.get(run.id), [])
    assert queued.fraction == 0.0 and queued.step is None and progress_text(queued) == ""
    store.mark_running(run.id, pid=1)
    store.finish(run.id, Status.DONE, "trained", {"best_test_acc": 0.8})
    done = progress(store.get(run.id), [])
    assert done.fraction == 1.0 and done.best_test_acc == 0.8


def test_max_steps_shortens_the_planned_epochs(store):
    run = store.create("bn-lenet", {}, {"epochs": 10, "max_steps": 25})
    store.mark_running(run.id, pid=1)
    p = progress(store.get(run.id), [step(10, total=25)])
    assert p.planned_epochs == pytest.approx(0.5)
    assert "of 0.5" in progress_text(p)


def test_the_best_test_accuracy_is_the_best_epoch():
    from cnnlab.runs.store import Run

    run = Run(id="r", status=Status.CANCELLED, model="m", spec={}, config={}, created_at=0.0)
    p = progress(run, [epoch(50, 0.8), epoch(100, 0.75)])
    assert (p.test_acc, p.best_test_acc) == (0.75, 0.8)
