"""Tests for cnnlab.runs.classroom: owners, the teacher token, class settings in the run store,
and the gate that applies locks and limits at submit (no run trains: cpu_slots=0)."""

from __future__ import annotations

import pytest

from cnnlab.arch.parse import spec_from_data
from cnnlab.arch.presets import PRESETS
from cnnlab.errors import CnnlabError
from cnnlab.runs import classroom
from cnnlab.runs.classroom import ClassGate, ClassroomError, ClassSettings, NotAllowed, Person
from cnnlab.runs.experiments import duplicate_with_change, sweep
from cnnlab.runs.store import RunStore, Status
from cnnlab.training.config import ConfigError

# ruff: noqa: F811
from tests.test_jobs import store, tiny  # noqa: F401

SPEC = PRESETS["bn-lenet"]
ADA, GRACE, TEACHER = Person("Ada"), Person("Grace"), Person(None, teacher=True)


def fields(exc: pytest.ExceptionInfo) -> list[str]:
    return [p.field for p in exc.value.problems]


# --- owners ------------------------------------------------------------------------------------


def test_only_the_owner_or_the_teacher_may_change_a_run(store: RunStore) -> None:
    run = store.create("bn-lenet", SPEC.to_dict(), tiny().to_dict(), name="mine", owner="Ada")
    assert classroom.may_change(ADA, run) and classroom.may_change(TEACHER, run)
    assert not classroom.may_change(GRACE, run) and not classroom.may_change(Person(None), run)
    with pytest.raises(NotAllowed, match="Cannot cancel mine: it is Ada's run"):
        classroom.check_may_change(GRACE, run, "cancel")


def test_a_run_without_an_owner_is_the_teachers_alone(store: RunStore) -> None:
    run = store.create("bn-lenet", SPEC.to_dict(), tiny().to_dict())
    assert classroom.may_change(TEACHER, run) and not classroom.may_change(ADA, run)


def test_a_student_cannot_cancel_rename_or_delete_anothers_run(managers, store) -> None:
    manager = managers(cpu_slots=0)
    run_id = ClassGate(manager, ADA, ClassSettings()).submit("bn-lenet", SPEC, tiny())
    grace = ClassGate(manager, GRACE, ClassSettings())
    for action in (grace.cancel, grace.delete, lambda i: grace.rename(i, "hers")):
        with pytest.raises(NotAllowed, match="Ada's run"):
            action(run_id)
    assert store.get(run_id).status is Status.QUEUED and store.get(run_id).name is None
    ada = ClassGate(manager, ADA, ClassSettings())
    assert ada.rename(run_id, "renamed").name == "renamed"
    assert ada.cancel(run_id) is Status.CANCELLED
    ClassGate(manager, TEACHER, ClassSettings()).delete(run_id)
    assert store.list() == []


def test_the_teacher_clears_runs_cancelling_the_waiting_and_deleting_the_ended(managers,
                                                                              store) -> None:
    manager = managers(cpu_slots=0)
    waiting = ClassGate(manager, ADA, ClassSettings()).submit("bn-lenet", SPEC, tiny())
    ended = ClassGate(manager, GRACE, ClassSettings()).submit("bn-lenet", SPEC, tiny())
    manager.cancel(ended)
    with pytest.raises(NotAllowed):
        ClassGate(manager, ADA, ClassSettings()).clear([ended])
    cleared = ClassGate(manager, TEACHER, ClassSettings()).clear([waiting, ended, "gone"])
    assert cleared == ([waiting], [ended])
    assert [(r.id, r.status) for r in store.list()] == [(waiting, Status.CANCELLED)]


def test_a_run_still_waiting_is_not_deleted_but_named_for_cancelling(managers, store) -> None:
    gate = ClassGate(managers(cpu_slots=0), ADA, ClassSettings())
    run_id = gate.submit("bn-lenet", SPEC, tiny())
    with pytest.raises(ClassroomError, match="cancel it first"):
        gate.delete(run_id)


def test_the_owner_is_the_persons_name_whatever_the_caller_passes(managers, store) -> None:
    gate = ClassGate(managers(cpu_slots=0), ADA, ClassSettings())
    assert store.get(gate.submit("bn-lenet", SPEC, tiny(), owner="Grace")).owner == "Ada"
    teacher = ClassGate(gate.manager, TEACHER, ClassSettings())
    assert store.get(teacher.submit("bn-lenet", SPEC, tiny())).owner is None


@pytest.mark.parametrize("typed, kept", [("  Ada   Lovelace ", "Ada Lovelace"),
                                         ("a\x00b\nc", "a b c")])
def test_a_display_name_is_tidied(typed: str, kept: str) -> None:
    assert classroom.display_name(typed) == kept


@pytest.mark.parametrize("typed", ["", "   ", "x" * (classroom.MAX_NAME + 1)])
def test_an_empty_or_long_name_is_refused_naming_the_field(typed: str) -> None:
    with pytest.raises(ClassroomError) as exc:
        classroom.display_name(typed)
    assert fields(exc) == ["name"]


def test_the_token_is_compared_only_when_the_server_has_one(monkeypatch) -> None:
    monkeypatch.delenv(classroom.TOKEN_ENV, raising=False)
    assert not classroom.is_class() and not classroom.token_matches("")
    monkeypatch.setenv(classroom.TOKEN_ENV, "s3cret")
    assert classroom.is_class() and classroom.token_matches("s3cret")
    assert not classroom.token_matches("s3cre") and not classroom.token_matches("S3CRET")


# --- settings ----------------------------------------------------------------------------------


def test_settings_round_trip_through_json_and_survive_a_new_store(store: RunStore) -> None:
    settings = ClassSettings(locked={"model": "bn-lenet", "epochs": 2}, hidden=frozenset({"epochs"}),
                             max_queued=2, max_epochs=5, max_input_size=64, pinned=("a", "b"))
    assert ClassSettings.from_json(settings.to_json()) == settings
    assert classroom.load(store) == ClassSettings()
    classroom.save(store, settings)
    assert classroom.load(RunStore(store.runs_dir)) == settings


@pytest.mark.parametrize("settings, field", [
    (dict(locked={"name": "x"}), "name"),
    (dict(locked={"lr": 0.1}, hidden=frozenset({"epochs"})), "epochs"),
    (dict(max_queued=0), "max_queued"),
    (dict(max_epochs=2.5), "max_epochs"),
    (dict(locked={"model": "lenet-9000"}), "model"),
])
def test_bad_settings_are_refused_naming_the_field(settings: dict, field: str) -> None:
    with pytest.raises(ClassroomError) as exc:
        ClassSettings(**settings)
    assert fields(exc) == [field]


def test_a_locked_value_no_run_could_use_is_not_saved(store: RunStore) -> None:
    with pytest.raises(ConfigError) as exc:
        classroom.save(store, ClassSettings(locked={"lr": -1.0}))
    assert fields(exc) == ["lr"]
    assert classroom.load(store) == ClassSettings()


def test_lock_values_are_read_from_text_and_checked_naming_the_field() -> None:
    assert classroom.lock_value("lr", "0.5") == 0.5 and classroom.lock_value("epochs", "3") == 3
    assert classroom.lock_value("model", " bn-lenet ") == "bn-lenet"
    for field, text in (("model", "lenet-9000"), ("epochs", "-1"), ("lr", "__import__('os')")):
        with pytest.raises(CnnlabError) as exc:
            classroom.lock_value(field, text)
        assert fields(exc) == [field]


def test_settings_from_the_form_list_every_bad_field() -> None:
    settings = classroom.settings_from_form({"epochs": "2", "lr": "0.5"}, hidden=["lr", "seed"],
                                            pinned=["r1"], max_queued=2, max_epochs=None,
                                            max_input_size=96)
    assert settings == ClassSettings(locked={"epochs": 2, "lr": 0.5}, hidden=frozenset({"lr"}),
                                     pinned=("r1",), max_queued=2, max_input_size=96)
    with pytest.raises(ClassroomError) as exc:
        classroom.settings_from_form({"epochs": "many", "model": "nope", "lr": "0.1"})
    assert fields(exc) == ["epochs", "model"]


def test_the_forms_limits_are_whole_numbers_and_a_fraction_is_refused_by_name() -> None:
    settings = classroom.settings_from_form({}, max_queued=3.0, max_epochs=None)
    assert settings.max_queued == 3 and type(settings.max_queued) is int
    with pytest.raises(ClassroomError) as exc:
        classroom.settings_from_form({}, max_epochs=2.5)
    assert fields(exc) == ["max_epochs"]


def test_someone_without_a_name_cannot_queue_a_run(managers, store) -> None:
    with pytest.raises(ClassroomError) as exc:
        ClassGate(managers(cpu_slots=0), Person(None), ClassSettings()).submit("m", SPEC, tiny())
    assert fields(exc) == ["name"] and store.list() == []


# --- locks and limits at submit ----------------------------------------------------------------


def test_locks_are_applied_at_submit_for_a_student_not_the_teacher(managers, store) -> None:
    settings = ClassSettings(locked={"model": "bn-lenet", "epochs": 2})
    manager = managers(cpu_slots=0)
    student = store.get(ClassGate(manager, ADA, settings).submit(
        "nin-small", PRESETS["nin-small"], tiny(epochs=9, lr=0.5)))
    assert (student.model, student.config["epochs"], student.config["lr"]) == ("bn-lenet", 2, 0.5)
    assert spec_from_data(student.spec) == SPEC
    teacher = store.get(ClassGate(manager, TEACHER, settings).submit(
        "nin-small", PRESETS["nin-small"], tiny(epochs=9)))
    assert (teacher.model, teacher.config["epochs"]) == ("nin-small", 9)


def test_a_sweep_of_a_locked_field_is_refused_naming_it(managers, store) -> None:
    gate = ClassGate(managers(cpu_slots=0), ADA, ClassSettings(locked={"lr": 0.1}))
    with pytest.raises(ClassroomError) as exc:
        sweep(gate, "bn-lenet", SPEC, tiny(lr=0.1), "lr", "0.1, 1")
    assert fields(exc) == ["lr"]
    assert [r.status for r in store.list()] == [Status.CANCELLED]  # all or none, as groups are


@pytest.mark.parametrize("limits, spec, config, field", [
    (dict(max_epochs=3), SPEC, tiny(epochs=4), "epochs"),
    (dict(max_input_size=64), PRESETS["googlenet"], tiny(), "input_size"),
])
def test_a_run_past_a_limit_is_refused_at_submit_naming_the_field(managers, store, limits, spec,
                                                                   config, field) -> None:
    gate = ClassGate(managers(cpu_slots=0), ADA, ClassSettings(**limits))
    with pytest.raises(ClassroomError) as exc:
        gate.submit("m", spec, config)
    assert fields(exc) == [field] and store.list() == []


def test_a_student_may_have_only_so_many_runs_waiting(managers, store) -> None:
    manager = managers(cpu_slots=0)
    ada = ClassGate(manager, ADA, ClassSettings(max_queued=2))
    first = ada.submit("bn-lenet", SPEC, tiny())
    ada.submit("bn-lenet", SPEC, tiny())
    ClassGate(manager, GRACE, ClassSettings(max_queued=2)).submit("bn-lenet", SPEC, tiny())
    with pytest.raises(ClassroomError, match="you have 2 runs waiting or training") as exc:
        ada.submit("bn-lenet", SPEC, tiny())
    assert fields(exc) == ["runs"]
    ada.cancel(first)  # a cancelled run no longer counts
    ada.submit("bn-lenet", SPEC, tiny())
    with pytest.raises(ClassroomError):  # at the limit, a pair is refused as well
        duplicate_with_change(ada, first, "lr", "0.5")


def test_a_students_form_shows_the_teachers_locks_and_the_teachers_shows_none() -> None:
    settings = ClassSettings(locked={"epochs": 2, "model": "bn-lenet"})
    assert classroom.locks_for(settings, Person("ada")) == {"epochs": 2, "model": "bn-lenet"}
    assert classroom.locks_for(settings, Person(None)) == {"epochs": 2, "model": "bn-lenet"}
    assert classroom.locks_for(settings, Person("teach", teacher=True)) == {}
    assert classroom.locks_for(ClassSettings(), Person("ada")) == {}
