"""The runs a paired or sweep card queues: the card's spec and config with one field changed
per run (`cnnlab.runs.experiments.apply_change`, checked as any run), queued as one group."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from cnnlab.arch.presets import preset_name
from cnnlab.arch.specs import Spec
from cnnlab.lessons.catalogue import Exercise, Paired, Sweep
from cnnlab.runs.experiments import apply_change, new_group_id, queue_group, value_text
from cnnlab.runs.store import RunStore
from cnnlab.training.config import TrainConfig
from cnnlab.views.text import mib

if TYPE_CHECKING:
    from cnnlab.runs.classroom import ClassGate
    from cnnlab.runs.jobs import JobManager

Run = tuple[str, Spec, TrainConfig]  # (name, spec, config), as queue_group takes them
# The predict questions whose reveal also shows this server's runs of the network
# (`measured_runs`): a memory count is an estimate, and a run measures the real thing.
MEMORY_MEASURES = ("train_memory", "inference_memory")


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


def queue_label(count: int) -> str:
    """The button that queues a card's `count` runs: 'Queue both runs', 'Queue 4 runs'."""
    return "Queue both runs" if count == 2 else f"Queue {count} runs"


def queue(manager: JobManager | ClassGate, exercise: Exercise, owner: str | None = None
          ) -> tuple[str, list[str]]:
    """Queue the card's runs as one group (all or none), owned by `owner` (a ClassGate stamps
    its person instead, and applies the class's locks and limits); (group, run ids in order)."""
    runs = planned_runs(exercise)
    group = new_group_id(f"lesson {exercise.id}")
    return group, queue_group(manager, model_name(exercise), runs, group, owner)


def run_rows(store: RunStore, run_ids: list[str]) -> list[dict[str, object]]:
    """How a card's queued runs are doing: name, status, final test accuracy, and the memory
    estimated before launch beside the peak measured while training (exercises 7.1.3, 7.3.3,
    7.7.3 ask about memory; the estimate is the Train page's, the measurement the worker's)."""
    rows = []
    for run_id in run_ids:
        run = store.get(run_id)
        rows.append({"run": run.label, "status": str(run.status),
                     "test acc": run.test_acc,
                     "memory estimated (MiB)": mib(run.result.get("memory_estimated")),
                     "memory measured (MiB)": mib(run.result.get("memory_measured")),
                     "memory measured is": run.result.get("memory_measured_what")})
    return rows


def measured_runs(store: RunStore, spec: Spec, limit: int = 5) -> list[dict[str, object]]:
    """The newest finished runs of exactly this network (any input size is a different one),
    with estimated and measured memory: what a memory question's reveal sets beside the
    layer table's count."""
    wanted = json.loads(spec.to_json())  # as the store keeps it: tuples become lists
    same = [run.id for run in store.list(limit=500)
            if run.spec == wanted and run.result.get("memory_measured")]
    return run_rows(store, same[:limit])
