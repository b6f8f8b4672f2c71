"""A class on one server: who owns a run, what a teacher may set, and the gate every run from a
page passes through.

No accounts: a student picks a display name, and a run records it as its owner. A teacher is
whoever enters the token the server was started with ($CNNLAB_TEACHER_TOKEN); with none set
the lab has one user, who may do everything (`Person.teacher` is then True for everyone).
Only a run's owner or the teacher may cancel, rename or delete it (`check_may_change`).

The teacher's `ClassSettings` (locked fields, per-student limits, runs pinned to Compare) live
in the run store's SQLite file, so they survive a restart and every session reads the same.
`ClassGate` is a JobManager as one person may use it: it stamps the owner, applies the locks
and checks the limits at submit, so a hand-made request cannot get past what a widget shows.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import os
import re
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cnnlab.arch.parse import spec_from_data
from cnnlab.arch.presets import PRESETS
from cnnlab.arch.specs import Spec
from cnnlab.errors import CnnlabError, Problem
from cnnlab.runs.store import BUSY_TIMEOUT_S, Run, RunStore, Status, StoreError

if TYPE_CHECKING:
    from cnnlab.runs.jobs import JobManager
    from cnnlab.training.config import TrainConfig

TOKEN_ENV = "CNNLAB_TEACHER_TOKEN"
MAX_NAME = 40  # a display name fits a table cell and the sidebar
# What a teacher may lock: the model (a preset's name) and the Train form's fields.
LOCKABLE = ("model", "epochs", "batch_size", "lr", "optimizer", "momentum", "weight_decay",
            "label_smoothing", "schedule", "data", "subset", "device", "seed", "max_steps",
            "flip", "bn_recalibration")
LIMITS = ("max_queued", "max_epochs", "max_input_size")

SETTINGS_SCHEMA = "CREATE TABLE IF NOT EXISTS class_settings (key TEXT PRIMARY KEY, value TEXT)"
SETTINGS_KEY = "settings"


class ClassroomError(CnnlabError):
    """A request the class settings refuse (a limit, a lock, a bad name or setting);
    `problems` name the field."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(problems=problems)


class NotAllowed(CnnlabError):
    """Someone tried to change a run that is not theirs."""


# --- people ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Person:
    """Who acts: a display name (None before one is picked) and whether they are the teacher."""

    name: str | None
    teacher: bool = False


def teacher_token() -> str | None:
    """The server's teacher token, or None for a single-user lab."""
    return os.environ.get(TOKEN_ENV) or None


def is_class() -> bool:
    return teacher_token() is not None


def token_matches(given: str) -> bool:
    """Whether `given` is the teacher token; constant time, so timing tells nothing."""
    token = teacher_token()
    return token is not None and hmac.compare_digest(given.encode(), token.encode())


def display_name(text: str) -> str:
    """A typed name as it is kept: spaces collapsed, no control characters. Raises
    ClassroomError naming "name" when nothing is left or it is too long."""
    name = " ".join(re.sub(r"[\x00-\x1f\x7f]", " ", str(text)).split())
    if not name:
        raise ClassroomError([Problem("name", "is empty", "type the name the class knows you by")])
    if len(name) > MAX_NAME:
        raise ClassroomError([Problem("name", f"is longer than {MAX_NAME} characters",
                                      "use a shorter name")])
    return name


def may_change(person: Person, run: Run) -> bool:
    """The teacher may change any run; a student only a run they queued under their name."""
    return person.teacher or (person.name is not None and run.owner == person.name)


def check_may_change(person: Person, run: Run, action: str) -> None:
    """Raises NotAllowed (saying whose run it is) unless `person` may `action` the run."""
    if not may_change(person, run):
        whose = f"{run.owner}'s run" if run.owner else "a run with no owner"
        raise NotAllowed(f"Cannot {action} {run.label}: it is {whose}; only its owner or the "
                         "teacher can.")


# --- the teacher's settings --------------------------------------------------------------------


@dataclass(frozen=True)
class ClassSettings:
    """What the teacher set for everyone. `locked` maps a LOCKABLE field to its fixed value;
    `hidden` are locked fields the Train page does not show at all; a limit of None is no limit.
    `max_queued` counts a student's runs waiting or training at once."""

    locked: Mapping[str, Any] = field(default_factory=dict)
    hidden: frozenset[str] = frozenset()
    max_queued: int | None = None
    max_epochs: int | None = None
    max_input_size: int | None = None
    pinned: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        problems = [Problem(f, "cannot be locked", f"lock one of: {', '.join(LOCKABLE)}")
                    for f in self.locked if f not in LOCKABLE]
        problems += [Problem(f, "is hidden but not locked", "lock it too, with the value to use")
                     for f in sorted(self.hidden) if f not in self.locked]
        for limit in LIMITS:
            value = getattr(self, limit)
            if value is not None and (type(value) is not int or value < 1):
                problems.append(Problem(limit, f"{value!r} is not a whole number of 1 or more",
                                        "leave it empty for no limit"))
        if "model" in self.locked and self.locked["model"] not in PRESETS:
            problems.append(Problem("model", f"{self.locked['model']!r} is not a preset",
                                    "lock one of the presets by name"))
        if problems:
            raise ClassroomError(problems)

    def to_json(self) -> str:
        return json.dumps({**dataclasses.asdict(self), "locked": dict(self.locked),
                           "hidden": sorted(self.hidden), "pinned": list(self.pinned)})

    @classmethod
    def from_json(cls, text: str) -> ClassSettings:
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in data.items() if k in known}  # a newer cnnlab's extra fields
        return cls(**{**data, "hidden": frozenset(data.get("hidden", ())),
                      "pinned": tuple(data.get("pinned", ()))})


def check_locks(settings: ClassSettings) -> None:
    """Raises ConfigError (naming the field) when a locked config value is not a valid one."""
    from cnnlab.training.config import TrainConfig  # lazy: it imports torch

    TrainConfig().replace(**{f: v for f, v in settings.locked.items() if f != "model"})


def lock_value(field: str, text: str) -> Any:
    """A value typed for a lock, read as a pair's change is (never evaluated) and checked.
    Raises ClassroomError, ExperimentError or ConfigError naming the field."""
    from cnnlab.runs.experiments import apply_change, value_of
    from cnnlab.training.config import TrainConfig  # lazy: it imports torch

    if field == "model":
        name = text.strip()
        if name not in PRESETS:
            raise ClassroomError([Problem("model", f"{name!r} is not a preset",
                                          f"choose one of: {', '.join(PRESETS)}")])
        return name
    if field not in LOCKABLE:
        raise ClassroomError([Problem(field, "cannot be locked",
                                      f"lock one of: {', '.join(LOCKABLE)}")])
    spec, config = apply_change(PRESETS["bn-lenet"], TrainConfig(), field, text)
    return value_of(spec, config, field)


def _whole(value: float | None) -> int | float | None:
    """A limit as the form's number input gives it, as a whole number: 3.0 is 3. Anything else
    stays as it is, for ClassSettings to refuse by name (2.5, a bool, 0)."""
    if type(value) is float and value.is_integer():
        return int(value)
    return value


def settings_from_form(lock_texts: Mapping[str, str], hidden: Iterable[str] = (),
                       pinned: Iterable[str] = (), **limits: float | None) -> ClassSettings:
    """Class settings from the teacher's form: each locked field's value as typed (read by
    `lock_value`), the limits (LIMITS, None for none) as its number inputs give them, whole
    numbers as ints. Raises ClassroomError listing every field that is wrong, not only the
    first."""
    limits = {name: _whole(value) for name, value in limits.items()}
    locked, problems = {}, []
    for field_name, text in lock_texts.items():
        try:
            locked[field_name] = lock_value(field_name, text)
        except CnnlabError as exc:
            problems += exc.problems or [Problem(field_name, str(exc), "type another value")]
    if problems:
        raise ClassroomError(problems)
    return ClassSettings(locked=locked, hidden=frozenset(hidden) & set(locked),
                         pinned=tuple(pinned), **limits)


def _connect(store: RunStore) -> sqlite3.Connection:
    # The settings share the store's file (one thing to back up, the same WAL) but not its
    # tables: a table of their own that an older store simply lacks until the first save.
    conn = sqlite3.connect(store.db_path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    conn.execute(SETTINGS_SCHEMA)
    return conn


def load(store: RunStore) -> ClassSettings:
    """The saved class settings; defaults (nothing locked, no limits) before the first save."""
    try:
        conn = _connect(store)
        try:
            row = conn.execute("SELECT value FROM class_settings WHERE key = ?",
                               (SETTINGS_KEY,)).fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StoreError(f"class settings in {store.db_path}: {exc}") from exc
    return ClassSettings.from_json(row[0]) if row else ClassSettings()


def save(store: RunStore, settings: ClassSettings) -> None:
    """Keep `settings` for every session and the next server start. Raises ConfigError for a
    locked value no run could use."""
    check_locks(settings)
    try:
        conn = _connect(store)
        try:
            conn.execute("INSERT OR REPLACE INTO class_settings (key, value) VALUES (?, ?)",
                         (SETTINGS_KEY, settings.to_json()))
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StoreError(f"class settings in {store.db_path}: {exc}") from exc


# --- locks and limits at submit ----------------------------------------------------------------


def locks_for(settings: ClassSettings, person: Person) -> dict[str, Any]:
    """The fields `person`'s Train form shows fixed, with their values: the teacher's locks for
    a student, none for the teacher (whose runs `ClassGate.submit` does not lock either)."""
    return {} if person.teacher else dict(settings.locked)


def apply_locks(settings: ClassSettings, model: str, spec: Spec, config: TrainConfig
                ) -> tuple[str, Spec, TrainConfig]:
    """The run as the locks make it: a locked model's preset, locked config fields' values."""
    locked = dict(settings.locked)
    if "model" in locked:
        model = locked.pop("model")
        spec = PRESETS[model]
    return model, spec, config.replace(**locked) if locked else config


def changed_by_locks(settings: ClassSettings, spec: Spec, config: TrainConfig,
                     model: str) -> list[Problem]:
    """The locked fields this run would change: a pair or sweep may not vary them."""
    values = {"model": model, **config.to_dict()}
    return [Problem(f, f"is locked by the teacher at {v!r}", f"leave it at {v!r}")
            for f, v in settings.locked.items() if values.get(f) != v
            and not (f == "model" and PRESETS[v] == spec)]


def limit_problems(settings: ClassSettings, spec: Spec, config: TrainConfig,
                   active: int) -> list[Problem]:
    """What in this run goes past the class's limits, given the student's `active` runs."""
    problems = []
    if settings.max_epochs is not None and config.epochs > settings.max_epochs:
        problems.append(Problem("epochs", f"{config.epochs} is more than the class limit of "
                                f"{settings.max_epochs}", f"train at most {settings.max_epochs}"))
    if settings.max_input_size is not None and spec.input_size > settings.max_input_size:
        problems.append(Problem("input_size", f"{spec.input_size} px is more than the class "
                                f"limit of {settings.max_input_size} px",
                                f"use an input of at most {settings.max_input_size} px"))
    if settings.max_queued is not None and active >= settings.max_queued:
        problems.append(Problem("runs", f"you have {active} runs waiting or training, the class "
                                f"limit is {settings.max_queued}",
                                "wait for one to finish, or cancel one"))
    return problems


class ClassGate:
    """A JobManager as `person` may use it under `settings`: submit stamps the owner and, for a
    student, applies the locks and checks the limits; cancel, rename and delete check the
    owner. Takes the manager's place in cnnlab.runs.experiments (pairs, sweeps, groups)."""

    def __init__(self, manager: JobManager, person: Person, settings: ClassSettings) -> None:
        self.manager, self.person, self.settings = manager, person, settings
        self.store = manager.store

    def get(self, run_id: str) -> Run:
        return self.manager.get(run_id)

    def status(self, run_id: str) -> Status:
        return self.manager.status(run_id)

    def active_runs(self) -> int:
        """The person's runs waiting or training now."""
        return sum(run.owner == self.person.name
                   for run in self.store.list((Status.QUEUED, Status.RUNNING)))

    def submit(self, model: str, spec: Spec | dict[str, Any], config: TrainConfig | dict[str, Any],
               name: str | None = None, group: str | None = None, owner: str | None = None
               ) -> str:
        """Queue a run owned by the person (`owner` is ignored: nobody queues as someone else;
        a teacher with no name queues runs that only the teacher may change).
        Raises ClassroomError naming the field for a limit passed, or for a pair or sweep
        (`group`) that would vary a locked field; SpecError or ConfigError as submit does."""
        if self.person.name is None and not self.person.teacher:  # its student could not cancel it
            raise ClassroomError([Problem("name", "pick a display name first",
                                          "type it under You in the sidebar")])
        if not self.person.teacher:
            model, spec, config = self._as_allowed(model, spec, config, group)
        return self.manager.submit(model, spec, config, name=name, group=group,
                                   owner=self.person.name)

    def _as_allowed(self, model: str, spec: Spec | dict[str, Any],
                    config: TrainConfig | dict[str, Any], group: str | None
                    ) -> tuple[str, Spec, TrainConfig]:
        from cnnlab.training.config import TrainConfig  # lazy: it imports torch

        spec = spec if isinstance(spec, Spec) else spec_from_data(spec)
        config = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
        if group is not None:  # locks applied silently would queue copies of one run
            problems = changed_by_locks(self.settings, spec, config, model)
            if problems:
                raise ClassroomError(problems)
        model, spec, config = apply_locks(self.settings, model, spec, config)
        problems = limit_problems(self.settings, spec, config, self.active_runs())
        if problems:
            raise ClassroomError(problems)
        return model, spec, config

    def cancel(self, run_id: str) -> Status:
        check_may_change(self.person, self.get(run_id), "cancel")
        return self.manager.cancel(run_id)

    def rename(self, run_id: str, name: str | None) -> Run:
        check_may_change(self.person, self.get(run_id), "rename")
        return self.store.rename(run_id, name)

    def clear(self, run_ids: Iterable[str]) -> tuple[list[str], list[str]]:
        """Cancel the runs still waiting or training and delete those that ended: the
        teacher's way to empty the queue. Returns (cancelled ids, deleted ids); a run gone
        meanwhile is skipped. Raises NotAllowed at the first run that is not the person's."""
        cancelled, deleted = [], []
        for run_id in run_ids:
            try:
                if self.get(run_id).status.terminal:
                    self.delete(run_id)
                    deleted.append(run_id)
                else:
                    self.cancel(run_id)
                    cancelled.append(run_id)
            except KeyError:
                continue
        return cancelled, deleted

    def delete(self, run_id: str) -> None:
        """Delete a run that has ended. Raises ClassroomError for one still waiting or training
        (cancel it first), NotAllowed for someone else's."""
        run = self.get(run_id)
        check_may_change(self.person, run, "delete")
        if not run.status.terminal:
            raise ClassroomError([Problem("run", f"{run.label} is {run.status}",
                                          "cancel it first, then delete it")])
        self.store.delete(run_id)
