"""Lessons: the catalogue covers chapter 7's 35 exercises, every card's configuration is one
cnnlab can run, every predict answer is the library's, and the page works end to end."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from cnnlab.analysis.layers import inspect_spec
from cnnlab.analysis.smallest_input import smallest_input_size
from cnnlab.arch.checks import check
from cnnlab.arch.models import build
from cnnlab.arch.presets import PRESETS
from cnnlab.lessons import answers
from cnnlab.lessons.answers import Question, reveal
from cnnlab.lessons.catalogue import (
    EXERCISES,
    Discussion,
    Experiment,
    Paired,
    Predict,
    Sweep,
    exercise,
)
from cnnlab.lessons.runs import MEMORY_MEASURES, model_name, planned_runs, queue_label
from cnnlab.runs.store import RunStore, Status
from cnnlab.training.config import TrainConfig
from cnnlab.views.train_form import config_from_form, config_values

APP = Path(__file__).resolve().parent.parent / "app.py"
# The exercise lists of sections 7.1-7.7 in the chapter (seed 001): how many each has.
CHAPTER = {"7.1": 5, "7.2": 4, "7.3": 4, "7.4": 4, "7.5": 7, "7.6": 5, "7.7": 6}
RUN_TIMEOUT_S = 120  # two LeNet runs on the sample, one after the other, with worker start-up


def predict_questions() -> list[tuple[str, Question]]:
    return [(e.id, q) for e in EXERCISES if isinstance(e.task, Predict) for q in e.task.questions]


# --- the catalogue ----------------------------------------------------------------------------


def test_the_catalogue_has_every_exercise_of_sections_7_1_to_7_7_once():
    ids = [e.id for e in EXERCISES]
    assert ids == [f"{s}.{n}" for s, count in CHAPTER.items() for n in range(1, count + 1)]
    assert len(ids) == 35


def test_at_least_28_exercises_are_answered_with_the_app_not_discussed():
    assert sum(e.kind != "discussion" for e in EXERCISES) >= 28


def test_every_card_has_its_question_and_what_to_try_in_words():
    for e in EXERCISES:
        assert len(e.question) > 20 and len(e.what_to_try) > 20, e.id


@pytest.mark.parametrize("exercise_id,question", predict_questions())
def test_every_predict_question_is_about_a_network_that_builds(exercise_id, question):
    check(question.spec)
    if question.other is not None:
        check(question.other)


def test_every_experiment_and_discussion_opens_a_network_that_builds():
    for e in EXERCISES:
        if isinstance(e.task, (Experiment, Discussion)) and e.task.spec is not None:
            check(e.task.spec)
        if isinstance(e.task, Experiment) and e.task.page == "train":
            assert TrainConfig.from_dict(e.task.config.to_dict()) == e.task.config


@pytest.mark.parametrize("exercise_id", [e.id for e in EXERCISES
                                         if isinstance(e.task, (Paired, Sweep))])
def test_every_paired_and_sweep_card_plans_runs_that_differ_in_its_field_only(exercise_id):
    e = exercise(exercise_id)
    runs = planned_runs(e)
    across = e.task.across[1] if isinstance(e.task, Sweep) and e.task.across else (None,)
    assert len(runs) == len(e.task.values) * len(across)
    for name, spec, config in runs:
        check(spec)
        assert TrainConfig.from_dict(config.to_dict()) == config
        assert config.data == "sample"  # classroom-sized on a CPU
        assert name.startswith(f"{e.id} · {e.task.field}=")
    first = runs[: len(e.task.values)]
    changed = {f for _, s, c in first for f in _differences(first[0], (None, s, c))}
    assert changed == {e.task.field}
    assert model_name(e) in PRESETS


def _differences(a, b) -> set[str]:
    (_, spec_a, config_a), (_, spec_b, config_b) = a, b
    fields = {k for k, v in spec_a.to_dict().items() if spec_b.to_dict()[k] != v}
    return fields | {k for k, v in config_a.to_dict().items() if config_b.to_dict()[k] != v}


def test_a_cards_button_says_how_many_runs_it_queues():
    assert queue_label(len(planned_runs(exercise("7.5.5")))) == "Queue both runs"  # paired
    assert queue_label(len(planned_runs(exercise("7.1.3")))) == "Queue 3 runs"  # a sweep


def test_every_memory_question_is_one_that_runs_measure_too():
    memory = {q.measure for e in EXERCISES if isinstance(e.task, Predict)
              for q in e.task.questions if "memory" in q.measure}
    assert memory and memory <= set(MEMORY_MEASURES) <= set(answers.MEASURES)


def test_a_card_that_queues_nothing_says_so():
    with pytest.raises(ValueError, match="predict card"):
        planned_runs(exercise("7.3.3"))
    with pytest.raises(KeyError, match="7.1.1"):
        exercise("7.9.1")


# --- the answers are the library's ------------------------------------------------------------


def expected(q: Question) -> float | str:
    """The value each measure stands for, computed here from the layer table directly."""
    table = inspect_spec(q.spec)
    weight_bytes = (table.total_params + table.buffer_elements) * 4
    if q.measure == "smallest_input":
        return smallest_input_size(lambda s: build(q.spec.replace(input_size=s)),
                                   q.spec.in_channels, 1024)
    if q.measure == "params_saved":
        return table.total_params - inspect_spec(q.other).total_params
    if q.measure == "receptive_field":
        return next(b.receptive_field for b in table.blocks if b.name == q.block)
    return {
        "params": lambda: table.total_params,
        "flops": lambda: table.total_flops,
        "macs": lambda: table.total_flops // 2,  # FlopCounterMode counts 2 FLOPs per multiply-add
        "train_memory": lambda: table.memory(q.batch_size, q.optimizer).total / 2**20,
        "inference_memory": lambda: table.inference_memory(q.batch_size) / 2**20,
        "most_params": lambda: max(table.blocks, key=lambda b: b.params).name,
        "most_flops": lambda: max(table.blocks, key=lambda b: b.flops).name,
        "conv_layers": lambda: sum(r.type == "Conv2d" for r in table.rows),
        "dense_share": lambda: 100 * table.conv_fc_split().fc_params / table.total_params,
        "flops_per_byte": lambda: table.total_flops / weight_bytes,
    }[q.measure]()


@pytest.mark.parametrize("exercise_id,question", predict_questions())
def test_every_predict_answer_is_the_librarys_value(exercise_id, question):
    found = answers.answer(question)
    assert found.value == pytest.approx(expected(question))
    assert found.rows, "a reveal shows the rows it comes from"


def test_the_chapters_counts_come_out_of_the_cards():
    values = {(e, q.prompt): answers.answer(q).value for e, q in predict_questions()}
    by_card = {e: [v for (card, _), v in values.items() if card == e] for e, _ in values}
    assert by_card["7.3.3"][0] == 1_992_166  # NiN (seed 000)
    assert by_card["7.4.3"][0] == 5_977_530  # GoogLeNet
    assert by_card["7.2.3"][0] == 44_920_074  # VGG-11 at 96 px
    assert by_card["7.7.2"][0] == 758_226  # DenseNet
    assert by_card["7.2.1"] == [8]  # the three "missing" layers are convs inside blocks
    assert by_card["7.1.4"][:2] == ["fc1", "conv2"]  # parameters vs FLOPs in AlexNet
    assert by_card["7.5.1"] == [6 + 16 + 120 + 84]  # the biases BN-LeNet's norms cancel


def test_a_guess_within_10_percent_is_right_and_one_outside_is_not():
    q = Question("NiN's parameters", PRESETS["nin"], "params")
    near, far = reveal(q, 1_992_166 * 1.09), reveal(q, 1_992_166 * 1.2)
    assert near.right and near.error == pytest.approx(0.09)
    assert not far.right and far.error == pytest.approx(0.2)
    assert "within 10%" in answers.verdict(far, q.tolerance)
    assert "1,992,166" in answers.verdict(far, q.tolerance)


def test_a_which_block_guess_must_name_the_block():
    q = Question("most parameters", PRESETS["alexnet"], "most_params")
    assert "fc1" in answers.choices(q)
    assert reveal(q, "fc1").right and reveal(q, "fc1").error is None
    assert not reveal(q, "conv1").right
    with pytest.raises(ValueError, match="block's name"):
        reveal(q, 3.0)
    with pytest.raises(ValueError, match="number"):
        reveal(Question("p", PRESETS["nin"], "params"), "fc1")


def test_a_receptive_field_question_names_a_block_the_network_has():
    with pytest.raises(ValueError, match="no block 'b9'"):
        answers.answer(Question("rf", PRESETS["googlenet"], "receptive_field", block="b9"))


# --- handing a config to the Train page -------------------------------------------------------


@pytest.mark.parametrize("full_found", [False, True])
def test_the_train_pages_values_make_the_lessons_config_again(full_found):
    config = exercise("7.1.1").task.config
    values = config_values(config, full_found, gpus=[])
    rebuilt, problems = config_from_form(values)
    assert problems == [] or not full_found  # the full set may be missing on this machine
    if rebuilt is not None:
        assert rebuilt == config.replace(device=values["device"])
    assert values["data"] == "sample" and values["subset"] == 3000


# --- the page ---------------------------------------------------------------------------------


@pytest.fixture
def store(app_store):
    return app_store  # conftest: a fresh store the app's cached store and job manager use


def lessons_page() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    at.switch_page("pages/lessons.py").run()
    assert not at.exception
    return at


def button(at: AppTest, key: str):
    return next(b for b in at.button if b.key == key)


def test_the_page_shows_every_card_with_its_controls(store):
    at = lessons_page()
    assert at.title[0].value == "Lessons"
    text = "\n".join(m.value for m in at.markdown)
    keys = {w.key for w in [*at.button, *at.number_input, *at.selectbox]}
    for e in EXERCISES:
        assert f"**{e.id}**" in text, e.id
        if isinstance(e.task, Predict):
            for i in range(len(e.task.questions)):
                assert f"lesson.{e.id}.{i}.guess" in keys and f"lesson.{e.id}.{i}.reveal" in keys
        elif isinstance(e.task, (Paired, Sweep)):
            assert f"lesson.{e.id}.queued.0" in keys, e.id
        elif e.task.page == "architecture" or isinstance(e.task, Experiment):
            assert f"lesson.{e.id}.open" in keys, e.id
    assert len(at.get("page_link")) == 2  # the two discussions that point to Inside, Compare


def test_a_guess_is_revealed_wrong_then_right(store):
    at = lessons_page()
    assert button(at, "lesson.7.3.3.0.reveal").disabled  # guess first
    at.number_input(key="lesson.7.3.3.0.guess").set_value(1_000_000).run()
    button(at, "lesson.7.3.3.0.reveal").click().run()
    assert "Not quite" in at.warning[0].value and "1,992,166" in at.warning[0].value
    assert any("nin_block1" in df.value.to_string() for df in at.dataframe)  # the rows
    at.number_input(key="lesson.7.3.3.0.guess").set_value(2_000_000).run()
    assert not at.warning  # a new guess hides the old answer until it is revealed
    button(at, "lesson.7.3.3.0.reveal").click().run()
    assert "Right" in at.success[0].value and "within 10%" in at.success[0].value


def test_an_experiment_opens_its_spec_on_the_architecture_page(store):
    at = lessons_page()
    button(at, "lesson.7.2.4.open").click().run()
    assert not at.exception
    assert at.title[0].value == "Architecture"
    assert next(m.value for m in at.metric if m.label == "Parameters") == "134,300,362"


def test_an_experiment_opens_its_run_on_the_train_page_and_it_stays(store):
    at = lessons_page()
    button(at, "lesson.7.1.1.open").click().run()
    for _ in range(2):  # and again: the page must not put the textbook's recipe back
        assert not at.exception
        assert at.title[0].value == "Train"
        assert at.selectbox(key="train.model").value == "architecture"
        values = {w.key: w.value for w in at.number_input}
        assert (values["train.epochs"], values["train.batch_size"], values["train.lr"]) == (
            20, 128, 0.01)
        assert at.radio(key="train.data").value == "sample"
        assert "2,839,946 parameters" in "\n".join(c.value for c in at.caption)
        at.switch_page("pages/train.py").run()  # AppTest's run() would rerun the Lessons page


@pytest.mark.slow
def test_a_paired_card_queues_two_real_runs_that_finish(store):
    at = lessons_page()
    button(at, "lesson.7.1.5.queued.0").click().run()
    assert not at.exception
    ids = at.session_state["lesson.7.1.5.queued"]
    runs = [store.get(i) for i in ids]
    assert [r.name for r in runs] == ["7.1.5 · activation=sigmoid", "7.1.5 · activation=relu"]
    assert runs[0].group == runs[1].group and runs[0].group is not None
    assert [r.spec["activation"] for r in runs] == ["sigmoid", "relu"]
    assert at.session_state["compare.runs"] == ids
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not all(store.get(i).status is Status.DONE for i in ids):
        assert time.monotonic() < deadline, [store.get(i).status for i in ids]
        time.sleep(0.5)
    at.run()
    (table,) = [t.value for t in at.dataframe if "memory measured (MiB)" in t.value.columns]
    assert list(table["run"]) == ["7.1.5 · activation=sigmoid", "7.1.5 · activation=relu"]
    assert list(table["status"]) == ["done", "done"]
    assert (table["memory measured (MiB)"] > 0).all()  # beside the estimate made at submit
    assert (table["memory estimated (MiB)"] > 0).all()


def test_a_question_names_its_unit_once():
    assert Question("Memory to predict one image", PRESETS["nin"],
                    "inference_memory").label == "Memory to predict one image (MiB)"
    assert Question("NiN's FLOPs per image", PRESETS["nin"], "flops").label == (
        "NiN's FLOPs per image")
    close = reveal(Question("p", PRESETS["nin"], "params"), 2_000_000)
    assert "off by 0.4%" in answers.verdict(close, 0.10)


def test_a_cards_runs_and_a_memory_reveal_show_estimated_beside_measured(tmp_path) -> None:
    """Exercises 7.1.3, 7.3.3 and 7.7.3 ask about memory: the Lessons page sets the estimate
    made before launch beside the peak measured while training, from the run store."""
    from cnnlab.lessons.runs import measured_runs, run_rows
    from cnnlab.runs.recorded import run_recorded
    from cnnlab.runs.store import Status
    from cnnlab.training.resources import estimate_record
    from tests.conftest import ONE_EPOCH

    store = RunStore(tmp_path / "runs")
    spec = PRESETS["bn-lenet"]
    run = store.create("bn-lenet", spec.to_dict(), ONE_EPOCH.to_dict(), name="7.1.3 · batch",
                       result=estimate_record(spec, ONE_EPOCH))
    store.mark_running(run.id, pid=1, device="cpu")
    assert run_recorded(store, run.id) is Status.DONE
    (row,) = run_rows(store, [run.id])
    assert row["run"] == "7.1.3 · batch" and row["status"] == "done" and row["test acc"] > 0
    assert row["memory estimated (MiB)"] > 100 and row["memory measured (MiB)"] > 100
    assert row["memory measured is"] == "peak resident memory of the training process"
    assert measured_runs(store, spec) == [row]
    assert measured_runs(store, PRESETS["bn-lenet-scratch"]) == []  # another network
