"""Teacher mode in the app, through AppTest: the token in the sidebar, the Class page's
settings reaching a student's Train page, and a student who cannot cancel another's run."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from cnnlab.arch.presets import PRESETS
from cnnlab.runs import classroom
from cnnlab.runs.jobs import JobManager
from cnnlab.runs.store import RunStore, Status
from cnnlab.training.config import TrainConfig

APP = Path(__file__).resolve().parent.parent / "app.py"
TOKEN = "correct horse battery"


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A fresh run store on a server started with a teacher token."""
    runs = tmp_path / "runs"
    monkeypatch.setenv("CNNLAB_RUNS", str(runs))
    monkeypatch.setenv(classroom.TOKEN_ENV, TOKEN)
    monkeypatch.setattr("pages._class.WRONG_TOKEN_DELAY_S", 0.1)
    # No slots: a queued run stays queued, and nothing trains on the test machine's cores.
    monkeypatch.setattr("pages._shared.make_job_manager",
                        lambda store: JobManager(store, cpu_slots=0, gpu_slots=0))
    st.cache_resource.clear()  # shared between AppTest instances (streamlit issue #9139)
    st.cache_data.clear()
    yield RunStore(runs)
    from pages._shared import job_manager

    job_manager().shutdown(wait=True, cancel=True)
    st.cache_resource.clear()


def session(name: str | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    if name is not None:
        at.text_input(key="you.name_input").input(name).run()
    assert not at.exception
    return at


def class_page() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    at.switch_page("pages/teacher.py").run()
    assert not at.exception
    return at


def keys(widgets) -> list[str]:
    return [w.key for w in widgets]


def texts(elements) -> str:
    return " ".join(e.value for e in elements)


def waiting_run(store: RunStore, owner: str) -> str:
    """A run that stays queued (the manager has no slots)."""
    config = TrainConfig(data="sample").to_dict()
    return store.create("bn-lenet", PRESETS["bn-lenet"].to_dict(), config, owner=owner).id


def test_the_teacher_locks_and_limits_and_a_student_meets_them(store) -> None:
    teacher = class_page()
    started = time.monotonic()
    teacher.text_input(key="you.token").input("guess").run()
    assert time.monotonic() - started >= 0.1  # a wrong token is slowed (0.1 s in this test)
    assert "not the teacher token" in texts(teacher.error)
    assert teacher.text_input(key="you.token").value == ""  # cleared, even when wrong
    assert "class.locked" not in keys(teacher.multiselect)
    teacher.text_input(key="you.token").input(TOKEN).run()
    assert "you.token" not in keys(teacher.text_input) and "class.locked" in keys(
        teacher.multiselect)
    assert TOKEN not in str([teacher.session_state[k] for k in ("you.token",)
                             if k in teacher.session_state])
    teacher.multiselect(key="class.locked").set_value(["epochs"]).run()
    teacher.text_input(key="class.lock.epochs").input("2").run()
    teacher.number_input(key="class.max_input_size").set_value(64).run()
    teacher.button(key="class.save").click().run()
    assert not teacher.exception and "Saved" in texts(teacher.success)
    assert classroom.load(RunStore(store.runs_dir)) == classroom.ClassSettings(
        locked={"epochs": 2}, max_input_size=64)

    student = session("Ada")
    student.switch_page("pages/train.py").run()
    epochs = student.number_input(key="train.epochs")
    assert epochs.disabled and epochs.value == 2
    student.selectbox(key="train.model").select("googlenet").run()
    student.button(key="train.start.0").click().run()
    assert "input_size" in texts(student.error) and "96 px is more than" in texts(student.error)
    assert store.list() == []
    student.selectbox(key="train.model").select("bn-lenet").run()
    student.button(key="train.start.0").click().run()
    (run,) = store.list()
    assert (run.owner, run.config["epochs"]) == ("Ada", 2)


def test_a_student_cannot_cancel_anothers_run_but_the_teacher_can(store) -> None:
    run_id = waiting_run(store, "Grace")
    student = session("Ada")
    student.switch_page("pages/train.py").run()
    student.query_params["run"] = run_id
    student.run()
    cancel = student.button(key=f"train.cancel.{run_id}")
    assert cancel.disabled and cancel.help == "Only its owner or the teacher"
    assert store.get(run_id).status is Status.QUEUED  # the core refuses too (test_classroom)

    teacher = class_page()
    teacher.text_input(key="you.token").input(TOKEN).run()
    teacher.switch_page("pages/train.py").run()
    teacher.query_params["run"] = run_id
    teacher.run()
    teacher.button(key=f"train.cancel.{run_id}").click().run()
    assert store.get(run_id).status is Status.CANCELLED


def ended_run(store: RunStore, owner: str) -> str:
    run_id = waiting_run(store, owner)
    store.request_cancel(run_id)  # a queued run cancelled: ended, as a finished one is
    return run_id


def test_the_owner_renames_and_deletes_an_ended_run_and_no_one_else_can(store) -> None:
    mine, theirs = ended_run(store, "Ada"), ended_run(store, "Grace")
    ada = session("Ada")
    ada.switch_page("pages/train.py").run()
    ada.query_params["run"] = theirs
    ada.run()
    assert f"train.rename.{theirs}" not in keys(ada.text_input)  # not offered on Grace's run
    ada.session_state["selected_run"] = mine  # watch another run, as the runs table does
    ada.run()
    ada.text_input(key=f"train.rename.{mine}").input("<b>lr</b> too high").run()
    assert not ada.exception and store.get(mine).name == "<b>lr</b> too high"
    ada.button(key=f"train.delete.{mine}").click().run()
    assert not ada.exception
    with pytest.raises(KeyError):
        store.get(mine)
    assert store.get(theirs).status is Status.CANCELLED  # untouched


def test_a_student_without_a_name_is_told_why_nothing_started(store) -> None:
    nameless = session()
    nameless.switch_page("pages/train.py").run()
    nameless.button(key="train.start.0").click().run()
    assert not nameless.exception
    assert any(e.value.startswith("Not started") for e in nameless.error)
    assert store.list() == []


def test_a_pinned_run_opens_on_every_students_compare_page(store) -> None:
    from tests.conftest import record_tiny_run

    pinned, other = record_tiny_run(store, "bn-lenet", "pinned"), record_tiny_run(store, "lenet")
    classroom.save(store, classroom.ClassSettings(pinned=(pinned,)))
    st.cache_data.clear()  # as save_settings does on the server
    student = session("Ada")
    student.switch_page("pages/compare.py").run()
    assert not student.exception
    assert student.multiselect(key="compare.runs").value == [pinned]
    assert "Pinned by the teacher" in texts(student.caption) and other != pinned
