"""The runs a paired or sweep card queues: the card's spec and config with one field changed
per run (`cnnlab.runs.experiments.apply_change`, checked as any run), queued as one group."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cnnlab.arch.presets import preset_name
from cnnlab.arch.specs import Spec
from cnnlab.lessons.catalogue import Exercise, Paired, Sweep
from cnnlab.runs.experiments import apply_change, new_group_id, queue_group, value_text
from cnnlab.training.config import TrainConfig

if TYPE_CHECKING:
    from cnnlab.runs.classroom import ClassGate
    from cnnlab.runs.jobs import JobManager

Run = tuple[str, Spec, TrainConfig]  # (name, spec, config), as queue_group takes them


def model_name(exercise: Exercise) -> str:
    """The model the card's runs are filed under: its preset's name, or the family's."""
    task = exercise.task
    if not isinstance(task, (Paired, Sweep)):
        raise ValueError(f"exercise {exercise.id} queues no runs (it is a {exercise.kind} card)")
    return preset_name(task.spec, any_input_size=True) or f"{task.spec.family}-custom"


def planned_runs(exercise: Exercise) -> list[Run]:
    """The card's runs in order, each named "7.5.5 · field=value". Raises ValueError for a card
    that queues none; SpecError, ConfigError or ExperimentError for a change that cannot run."""
    model_name(exercise)  # refuses cards that are not paired or sweep
    task = exercise.task
    bases: list[tuple[str, Spec, TrainConfig]] = [("", task.spec, task.config)]
    if isinstance(task, Sweep) and task.across is not None:
        outer, outer_values = task.across
        bases = [(f" · {outer}={value_text(v)}", *apply_change(task.spec, task.config, outer, v))
                 for v in outer_values]
    runs = []
    for suffix, spec, config in bases:
        for value in task.values:
            new_spec, new_config = apply_change(spec, config, task.field, value)
            runs.append((f"{exercise.id} · {task.field}={value_text(value)}{suffix}",
                         new_spec, new_config))
    return runs


def queue(manager: JobManager | ClassGate, exercise: Exercise, owner: str | None = None
          ) -> tuple[str, list[str]]:
    """Queue the card's runs as one group (all or none), owned by `owner` (a ClassGate stamps
    its person instead, and applies the class's locks and limits); (group, run ids in order)."""
    runs = planned_runs(exercise)
    group = new_group_id(f"lesson {exercise.id}")
    return group, queue_group(manager, model_name(exercise), runs, group, owner)
