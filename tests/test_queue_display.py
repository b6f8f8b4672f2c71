"""The shared queue as the sidebar and the Class page show it (cnnlab.views.queue_display)."""

from __future__ import annotations

import dataclasses

from cnnlab.runs.live import progress
from cnnlab.runs.store import Run, Status
from cnnlab.views import queue_display


def run(run_id: str, status: Status = Status.QUEUED, **fields) -> Run:
    return Run(**{"id": run_id, "status": status, "model": "bn-lenet", "spec": {},
                  "config": {}, "created_at": 0.0, **fields})


def test_the_queue_splits_into_training_and_waiting_runs_in_its_order():
    active = [run("a", Status.RUNNING), run("b"), run("c", Status.RUNNING), run("d")]
    running, waiting = queue_display.split(active)
    assert [r.id for r in running] == ["a", "c"] and [r.id for r in waiting] == ["b", "d"]


def test_a_training_runs_bar_says_its_model_owner_share_and_time_left():
    training = run("a", Status.RUNNING, owner="*Ada*")
    now = dataclasses.replace(progress(training, []), fraction=0.4, eta_s=130)
    assert queue_display.progress_line(training, now) == (0.4, r"bn-lenet (\*Ada\*): 40%, 2 min 10 s left")
    fresh = progress(run("b", Status.RUNNING), [])  # no step yet: nothing known
    assert queue_display.progress_line(run("b", Status.RUNNING), fresh) == (0.0, "bn-lenet: 0%")


def test_waiting_runs_are_numbered_and_the_rest_counted():
    waiting = [run("a", owner="Ada"), run("b", model="lenet"), run("c"), run("d")]
    assert queue_display.waiting_lines(waiting, shown=2) == [
        "1. bn-lenet (Ada): waiting", "2. lenet: waiting", "... and 2 more waiting"]
    assert queue_display.waiting_lines(waiting[:1], shown=2) == ["1. bn-lenet (Ada): waiting"]


def test_the_class_pages_queue_table_shows_each_runs_label_owner_and_status():
    rows = queue_display.queue_rows([run("a", Status.RUNNING, owner="Ada"), run("b", name="mine")])
    assert rows == {"run": ["bn-lenet a", "mine"], "owner": ["Ada", ""],
                    "status": ["running", "queued"]}
