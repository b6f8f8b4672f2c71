"""Paired runs and sweeps: the same network, data and seed, with one field changed.

The chapter's claims are comparisons (BN against none, lr 0.1 against 1.0, max pooling
against average), so the lab queues them as groups: `duplicate_with_change` pairs a run with
a copy that differs in one field, `sweep` queues one run per value of a field. Every changed
copy goes through the checks a single run does (`cnnlab.arch.checks.check`, `TrainConfig`),
and values typed into a form are parsed as literals (`parse_literal`), never evaluated.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cnnlab.arch.checks import SpecError, check, echo, parse_literal
from cnnlab.arch.parse import freeze, spec_from_data
from cnnlab.arch.specs import Spec
from cnnlab.errors import CnnlabError, Problem
from cnnlab.runs.store import Run, Status

if TYPE_CHECKING:
    from cnnlab.runs.jobs import JobManager
    from cnnlab.training.config import TrainConfig

# TrainConfig fields a pair or a sweep may vary; every field of the run's spec family may vary
# too (`variable_fields`). How often a step is logged changes no result, so it is not one.
VARIABLE_FIELDS = ("lr", "batch_size", "epochs", "optimizer", "momentum", "weight_decay",
                   "label_smoothing", "schedule", "bn_recalibration", "seed", "subset", "data",
                   "flip", "max_steps", "device", "amp", "channels_last", "compile",
                   "cuda_graphs")
MAX_VALUES = 12  # runs in one sweep: a class's queue should not vanish behind one student's
WORDS = {"true": True, "false": False, "none": None, "": None}  # what people type in a form


class ExperimentError(CnnlabError):
    """A pair or sweep that cannot be queued; `problems` name the field and a fix."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(problems=problems)


def spec_fields(spec: Spec) -> tuple[str, ...]:
    """The fields of `spec`'s family, read from its dataclass (new fields count at once)."""
    return tuple(f.name for f in dataclasses.fields(spec))


def variable_fields(spec: Spec) -> tuple[str, ...]:
    """Every field a pair or sweep of `spec` may vary: config fields, then the spec's."""
    return VARIABLE_FIELDS + spec_fields(spec)


def _config_cls() -> type[TrainConfig]:
    from cnnlab.training.config import TrainConfig  # lazy: it imports torch

    return TrainConfig


# --- one change ----------------------------------------------------------------------------


def _read(field: str, value: Any, current: Any) -> Any:
    """A form's text as the field's value: words for text fields, literals for the rest."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if isinstance(current, str):
        return text.strip("'\"")
    if text.lower() in WORDS:
        return WORDS[text.lower()]
    try:
        return parse_literal(text, field)
    except SpecError:
        raise ExperimentError([Problem(field, f"could not read {echo(text)}",
                                       f"write a value like the run's {current!r}")]) from None


def _as_field_type(value: Any, current: Any) -> Any:
    """1 for a float field is 1.0, as JSON and the config's from_dict take it."""
    if type(current) is float and type(value) is int:
        return float(value)
    return value


def apply_change(spec: Spec, config: TrainConfig, field: str,
                 value: Any) -> tuple[Spec, TrainConfig]:
    """`spec` and `config` with `field` set to `value` (text from a form is parsed), checked
    as any run's are. Raises ExperimentError for a field that may not vary, SpecError or
    ConfigError (both CnnlabErrors naming the field and a fix) for a bad value."""
    if field in VARIABLE_FIELDS:
        current = getattr(config, field)
        changed = _as_field_type(_read(field, value, current), current)
        return spec, config.replace(**{field: changed})
    if field in spec_fields(spec):
        current = getattr(spec, field)
        changed = _as_field_type(freeze(field, _read(field, value, current)), current)
        new = spec.replace(**{field: changed})
        check(new)
        return new, config
    raise ExperimentError([Problem(field, "is not a field a pair or sweep can change",
                                   f"choose one of: {', '.join(variable_fields(spec))}")])


def value_of(spec: Spec, config: TrainConfig, field: str) -> Any:
    """The field's value in this spec or config."""
    return getattr(config if field in VARIABLE_FIELDS else spec, field)


def value_text(value: Any) -> str:
    """A value as a run's name shows it: 0.1, 1e-05, sgd, True, (6, 16)."""
    return f"{value:g}" if type(value) is float else str(value)


def parse_values(field: str, text: str) -> list[Any]:
    """A sweep's values from text, e.g. "0.01, 0.1, 1, 10, 50" or "sgd, adam". Raises
    ExperimentError naming `field`: none given, more than MAX_VALUES, or a repeat. Each value
    is checked when the sweep applies it."""
    text = text.strip()
    if not text:
        raise ExperimentError([Problem(field, "no values given",
                                       "write values separated by commas, like 0.01, 0.1, 1")])
    try:
        values = list(parse_literal(f"[{text}]", field))
    except SpecError:  # words: sgd, adam; true, false; none, 1000
        values = [item.strip() for item in text.split(",")]
        values = [WORDS.get(v.lower(), v) for v in values]
    if len(values) > MAX_VALUES:
        raise ExperimentError([Problem(field, f"{len(values)} values is too many for one sweep",
                                       f"sweep at most {MAX_VALUES} values")])
    repeats = sorted({value_text(v) for v in values if values.count(v) > 1})
    if repeats:
        raise ExperimentError([Problem(field, f"{', '.join(repeats)} appears more than once",
                                       "give each value once")])
    return values


# --- queueing groups -----------------------------------------------------------------------


def new_group_id(what: str) -> str:
    """A readable group id: 'lr sweep of bn-lenet, 11-30 14:05:09 a1b2' (UTC)."""
    return f"{what}, {time.strftime('%m-%d %H:%M:%S', time.gmtime())} {secrets.token_hex(2)}"


def queue_group(manager: JobManager, model: str,
                runs: Sequence[tuple[str, Spec, TrainConfig]],
                group: str | None = None, owner: str | None = None) -> list[str]:
    """Queue (name, spec, config) runs as one group, owned by `owner`; their ids, in order. All or none: a run
    refused at submit cancels those queued before it, and its error is raised."""
    group = group or new_group_id(f"group of {model}")
    ids: list[str] = []
    try:
        for name, spec, config in runs:
            ids.append(manager.submit(model, spec, config, name=name, group=group,
                                       owner=owner))
    except BaseException:
        for run_id in ids:
            manager.cancel(run_id)
        raise
    return ids


def _recreate(run: Run) -> tuple[Spec, TrainConfig]:
    return spec_from_data(run.spec), _config_cls().from_dict(run.config)


# A run that already ended well (or may still) is the pair's first half as it is.
REUSABLE = (Status.DONE, Status.DIVERGED, Status.RUNNING, Status.QUEUED)


def duplicate_with_change(manager: JobManager, run_id: str, field: str, value: Any,
                          name: str | None = None, owner: str | None = None
                          ) -> tuple[str, list[str]]:
    """Pair run `run_id` with a copy that differs in `field` only (same seed, same data).

    Returns (group, [first id, new id]). The first is the run itself when it is in no group
    and ended done or diverged (or is still queued or training); else a fresh copy of it is
    queued too, so a pair never leans on a cancelled run or splits another group. Raises
    ExperimentError, SpecError or ConfigError (naming the field) before anything is queued;
    KeyError for an unknown run. The runs queued are `owner`'s; a reused first run keeps its own."""
    original = manager.get(run_id)
    spec, config = _recreate(original)
    new_spec, new_config = apply_change(spec, config, field, value)
    before, after = value_of(spec, config, field), value_of(new_spec, new_config, field)
    if before == after:
        raise ExperimentError([Problem(field, f"is already {value_text(before)} in this run",
                                       "choose a different value")])
    label = name or original.label
    group = new_group_id(f"{field} {value_text(before)} vs {value_text(after)} of {label}")
    changed = (f"{label} · {field}={value_text(after)}", new_spec, new_config)
    copy = (f"{label} · {field}={value_text(before)}", spec, config)
    if original.status in REUSABLE and original.group is None:
        new_id = queue_group(manager, original.model, [changed], group, owner)[0]
        if manager.store.set_group(run_id, group):  # False if it joined a group meanwhile
            return group, [run_id, new_id]
        return group, queue_group(manager, original.model, [copy], group, owner) + [new_id]
    return group, queue_group(manager, original.model, [copy, changed], group, owner)


def sweep(manager: JobManager, model: str, spec: Spec, config: TrainConfig, field: str,
          values: Sequence[Any] | str, name: str | None = None, owner: str | None = None
          ) -> tuple[str, list[str]]:
    """Queue one run per value of `field` (a list, or text for `parse_values`), as one group
    owned by `owner`.
    Returns (group, ids in the order of the values). Every value is checked before anything
    is queued: ExperimentError, SpecError or ConfigError, naming the field."""
    if isinstance(values, str):
        values = parse_values(field, values)
    if not values:
        raise ExperimentError([Problem(field, "no values given", "give at least one value")])
    label = name or model
    runs = []
    for value in values:
        new_spec, new_config = apply_change(spec, config, field, value)
        shown = value_text(value_of(new_spec, new_config, field))
        runs.append((f"{label} · {field}={shown}", new_spec, new_config))
    group = new_group_id(f"{field} sweep of {label}")
    return group, queue_group(manager, model, runs, group, owner)
