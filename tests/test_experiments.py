"""Tests for cnnlab.runs.experiments: one change to a run, sweep values from text, and groups
queued through the job manager (real worker processes train the sweep at the end)."""

from __future__ import annotations

import dataclasses

import pytest

from cnnlab.arch.checks import SpecError
from cnnlab.arch.presets import PRESETS
from cnnlab.errors import CnnlabError
from cnnlab.runs import experiments
from cnnlab.runs.experiments import (
    ExperimentError,
    apply_change,
    duplicate_with_change,
    parse_values,
    queue_group,
    sweep,
)
from cnnlab.runs.store import Status
from cnnlab.training.config import ConfigError, TrainConfig
# The job tests' fixtures (`managers`, `store`): tests name them as parameters, which ruff
# reads as redefinitions.
# ruff: noqa: F811
from tests.test_jobs import finished, store, tiny, wait_for  # noqa: F401

SPEC = PRESETS["bn-lenet"]


def problem_fields(exc: CnnlabError) -> list[str]:
    return [p.field for p in exc.problems]


# --- one change ----------------------------------------------------------------------------


def test_a_config_field_changes_from_form_text_and_nothing_else_does() -> None:
    spec, config = apply_change(SPEC, tiny(), "lr", "0.5")
    assert spec == SPEC and config == tiny(lr=0.5)
    assert type(apply_change(SPEC, tiny(), "lr", "2")[1].lr) is float  # 2 reads as 2.0


def test_text_fields_take_words_and_optional_ones_take_none() -> None:
    assert apply_change(SPEC, tiny(), "optimizer", "adam")[1].optimizer == "adam"
    assert apply_change(SPEC, tiny(), "subset", "none")[1].subset is None
    assert apply_change(SPEC, tiny(), "flip", "true")[1].flip is True


def test_a_spec_field_is_found_through_the_family_dataclass_and_checked() -> None:
    spec, _ = apply_change(SPEC, tiny(), "batch_norm", "none")
    assert spec == SPEC.replace(batch_norm="none")
    spec, _ = apply_change(SPEC, tiny(), "conv_channels", "(12, 32)")
    assert spec.conv_channels == (12, 32)
    with pytest.raises(SpecError) as caught:
        apply_change(SPEC, tiny(), "pool", "median")
    assert problem_fields(caught.value) == ["pool"]


def test_a_bad_config_value_is_refused_naming_the_field() -> None:
    with pytest.raises(ConfigError) as caught:
        apply_change(SPEC, tiny(), "lr", "-1")
    assert problem_fields(caught.value) == ["lr"]


def test_unreadable_text_is_refused_naming_the_field_and_never_evaluated() -> None:
    with pytest.raises(ExperimentError) as caught:
        apply_change(SPEC, tiny(), "lr", "__import__('os').getcwd()")
    assert problem_fields(caught.value) == ["lr"] and "0.1" in caught.value.problems[0].fix


def test_an_unknown_field_is_refused_with_the_fields_that_may_vary() -> None:
    with pytest.raises(ExperimentError) as caught:
        apply_change(SPEC, tiny(), "colour", "1")
    (problem,) = caught.value.problems
    assert problem.field == "colour" and "lr" in problem.fix and "batch_norm" in problem.fix


# --- sweep values --------------------------------------------------------------------------


def test_sweep_values_are_read_from_a_comma_list() -> None:
    assert parse_values("lr", "0.01, 0.1, 1, 10, 50") == [0.01, 0.1, 1, 10, 50]
    assert parse_values("optimizer", "sgd, adam") == ["sgd", "adam"]
    assert parse_values("conv_channels", "(6, 16), (12, 32)") == [(6, 16), (12, 32)]


@pytest.mark.parametrize("text, why", [("", "no values"), ("1, 1", "more than once"),
                                       (", ".join(map(str, range(13))), "too many")])
def test_bad_sweep_lists_are_refused_naming_the_field(text: str, why: str) -> None:
    with pytest.raises(ExperimentError, match=why) as caught:
        parse_values("lr", text)
    assert problem_fields(caught.value) == ["lr"]


# --- groups --------------------------------------------------------------------------------


def test_a_group_is_queued_together_with_a_readable_id(managers, store) -> None:
    manager = managers(cpu_slots=0)
    ids = queue_group(manager, "bn-lenet", [("a", SPEC, tiny()), ("b", SPEC, tiny(lr=0.5))],
                      owner="Ada")
    runs = [store.get(i) for i in ids]
    assert [r.name for r in runs] == ["a", "b"] and [r.owner for r in runs] == ["Ada", "Ada"]
    assert runs[0].group == runs[1].group and runs[0].group.startswith("group of bn-lenet")
    assert runs[0].result["memory_estimated"] > 0  # the estimate is kept at submit


def test_a_group_refused_half_way_leaves_nothing_queued(managers, store) -> None:
    manager = managers(cpu_slots=0)
    bad = SPEC.replace(conv_channels=(0, 16))
    with pytest.raises(SpecError):
        queue_group(manager, "bn-lenet", [("a", SPEC, tiny()), ("b", bad, tiny())])
    assert [r.status for r in store.list()] == [Status.CANCELLED]


def test_a_duplicate_pairs_the_run_with_a_copy_that_differs_in_one_field(managers,
                                                                          store) -> None:
    manager = managers(cpu_slots=0)
    first = manager.submit("bn-lenet", SPEC, tiny(), name="mine", owner="Ada")
    group, ids = duplicate_with_change(manager, first, "batch_norm", "none", owner="Grace")
    assert ids[0] == first and len(ids) == 2
    original, copy = store.get(first), store.get(ids[1])
    assert (original.owner, copy.owner) == ("Ada", "Grace")  # the reused run keeps its owner
    assert original.group == copy.group == group and "batch_norm" in group
    assert copy.name == "mine · batch_norm=none"
    assert copy.spec == {**original.spec, "batch_norm": "none"} and copy.config == original.config
    with pytest.raises(ExperimentError, match="already"):
        duplicate_with_change(manager, first, "lr", "0.1")


def test_a_duplicate_of_a_run_in_a_group_queues_a_fresh_pair(managers, store) -> None:
    manager = managers(cpu_slots=0)
    _, (first, _) = duplicate_with_change(manager, manager.submit("bn-lenet", SPEC, tiny()),
                                          "lr", "0.5")
    group, ids = duplicate_with_change(manager, first, "seed", "1")
    assert first not in ids and len(ids) == 2
    assert [store.get(i).group for i in ids] == [group, group]


def test_a_sweep_trains_one_run_per_value_in_one_group(managers, store) -> None:
    manager = managers(cpu_slots=2)
    group, ids = sweep(manager, "bn-lenet", SPEC, tiny(max_steps=3), "lr", "0.1, 1", owner="Ada")
    assert {store.get(i).owner for i in ids} == {"Ada"}
    for run_id in ids:
        wait_for(finished(store, run_id))
    runs = store.list(group=group)[::-1]
    assert [r.id for r in runs] == ids
    assert [r.config["lr"] for r in runs] == [0.1, 1.0]
    assert [r.status for r in runs] == [Status.DONE, Status.DONE]
    assert all(r.result["memory_measured"] > 0 for r in runs)
    assert experiments.MAX_VALUES == 12


def test_every_training_knob_but_the_log_interval_may_vary() -> None:
    # a field added to TrainConfig is one a pair or sweep may vary unless said otherwise
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(experiments.VARIABLE_FIELDS) == fields - {"log_every"}
