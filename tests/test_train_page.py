"""The Train page, run headless through AppTest with a real job manager and worker processes.

AppTest never fires `run_every` timers (seen with streamlit 1.67), so the tests poll: sleep,
`at.run()`.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from cnnlab.arch.presets import PRESETS
from cnnlab.runs.store import RunStore, Status

APP = Path(__file__).resolve().parent.parent / "app.py"
RUN_TIMEOUT_S = 90  # a tiny run takes ~5 s; the worker's first torch import can take more


@pytest.fixture
def store(app_store):
    return app_store  # conftest: a fresh store the app's cached store and job manager use


def train_page(spec=None) -> AppTest:
    """A new session on the Train page; `spec` stands for the Architecture page's model."""
    at = AppTest.from_file(str(APP), default_timeout=60)
    if spec is not None:
        at.session_state["spec"] = spec
    at.run()
    at.switch_page("pages/train.py").run()
    assert not at.exception
    return at


def tiny_run(at: AppTest, epochs: int = 1) -> AppTest:
    """BN-LeNet at 28 px on the 3,000-image sample, logging every 2 steps."""
    at.selectbox(key="train.model").select("bn-lenet").run()
    at.radio(key="train.data").set_value("sample").run()
    at.number_input(key="train.epochs").set_value(epochs)
    at.number_input(key="train.log_every").set_value(2)
    return at.run()


def start(at: AppTest) -> str:
    next(b for b in at.button if b.label == "Start training").click().run()
    assert not at.exception
    return at.session_state["selected_run"]


def poll(at: AppTest, store: RunStore, run_id: str, until) -> AppTest:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not until(store.get(run_id)):
        assert time.monotonic() < deadline, f"run {run_id} is {store.get(run_id).status}"
        time.sleep(0.5)
        at.run()
        assert not at.exception
    return at.run()


def chart_points(at: AppTest) -> dict[str, int]:
    """Points per curve in the page's training-curve chart."""
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    counts = {}
    for trace in spec["data"]:
        y = trace["y"]
        if isinstance(y, dict):  # plotly's base64 arrays
            y = np.frombuffer(base64.b64decode(y["bdata"]), dtype=y["dtype"])
        counts[trace["name"]] = len(y)
    return counts


def table_row(at: AppTest, run_id: str, until=lambda row: True):
    """The run's row in the runs table, once `until(row)` holds (the table is rebuilt at most
    every couple of seconds, shared by all sessions)."""
    deadline = time.monotonic() + 10
    while True:
        # No table yet is "not yet" too: it is cached for a couple of seconds, and a busy
        # store shows a warning in its place for one refresh (once in CI, after a run ended).
        table = at.dataframe[0].value if len(at.dataframe) else None
        rows = table[table["run"] == run_id] if table is not None else []
        if len(rows) and until(rows.iloc[0]):
            return rows.iloc[0]
        shown = rows if table is not None else texts(at.warning) + texts(at.caption)
        assert time.monotonic() < deadline, f"run {run_id} in the table: {shown}"
        time.sleep(0.5)
        at.run()


def watching(at: AppTest):
    return next(box for box in at.selectbox if box.label == "Watching")


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def test_the_page_shows_the_architecture_pages_model_with_the_textbooks_values(store):
    at = train_page(PRESETS["resnet18"])
    assert at.title[0].value == "Train"
    assert at.selectbox(key="train.model").value == "architecture"
    assert "resnet18 (from the Architecture page)" in at.selectbox(key="train.model").options[0]
    values = {w.key: w.value for w in at.number_input}
    recipe = (values["train.epochs"], values["train.batch_size"], values["train.lr"])
    assert recipe == (10, 256, 0.05)
    assert "d2l 7.6.3" in texts(at.caption)
    assert "needs about" in texts(at.info)  # the memory estimate, before launch


def test_the_sidebar_shows_the_device_the_data_and_the_queue(store):
    # AppTest keeps the sidebar of a session's first run only (seen with streamlit 1.67 and
    # st.navigation; browsers show it on every page), so each check is a new session.
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    sidebar = texts(at.sidebar.caption)
    assert "Trains on: CPU" in sidebar or "Trains on: NVIDIA" in sidebar
    assert "Fashion-MNIST" in sidebar
    assert "Nothing is training" in sidebar
    from pages._shared import job_manager

    first = job_manager().submit("bn-lenet", PRESETS["bn-lenet"], {"data": "sample", "epochs": 50})
    second = job_manager().submit("lenet", PRESETS["lenet"], {"data": "sample", "epochs": 1})
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while store.get(first).status is Status.QUEUED:  # the worker claims its run
        assert time.monotonic() < deadline
        time.sleep(0.2)
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    assert "bn-lenet: " in at.sidebar.get("progress")[0].proto.text
    assert "1. lenet: waiting" in texts(at.sidebar.caption)
    job_manager().cancel(second)
    job_manager().cancel(first)


def test_without_an_architecture_model_the_page_offers_presets(store):
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.switch_page("pages/train.py").run()
    assert not at.exception
    assert at.selectbox(key="train.model").value == "bn-lenet"
    assert "architecture" not in at.selectbox(key="train.model").options


def test_a_new_model_brings_its_textbook_recipe(store):
    at = train_page(PRESETS["bn-lenet"])
    at.number_input(key="train.lr").set_value(0.3).run()
    at.selectbox(key="train.model").select("alexnet").run()
    values = {w.key: w.value for w in at.number_input}
    assert (values["train.batch_size"], values["train.lr"]) == (128, 0.01)
    at.number_input(key="train.momentum").set_value(0.9).run()
    next(b for b in at.button if b.label == "Textbook values").click().run()
    assert at.number_input(key="train.momentum").value == 0.0


def test_the_settings_survive_a_visit_to_another_page(store):
    at = tiny_run(train_page(), epochs=3)
    at.switch_page("pages/architecture.py").run()
    at.switch_page("pages/train.py").run()
    assert not at.exception
    assert at.number_input(key="train.epochs").value == 3
    assert at.radio(key="train.data").value == "sample"


def test_a_tiny_run_started_from_the_page_shows_its_progress_and_curves(store):
    at = tiny_run(train_page())
    run_id = start(at)
    assert store.get(run_id).model == "bn-lenet"
    assert store.get(run_id).config["data"] == "sample"
    seen_progress = False
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not store.get(run_id).status.terminal:
        assert time.monotonic() < deadline
        time.sleep(0.5)
        at.run()
        assert not at.exception
        seen_progress |= bool(at.get("progress"))
    at.run()
    assert store.get(run_id).status is Status.DONE, store.get(run_id).message
    assert seen_progress
    assert "Done." in texts(at.success)
    points = chart_points(at)
    assert points["train loss"] >= 3 and points["train acc"] >= 3
    assert points["test acc"] == 1
    row = table_row(at, run_id, until=lambda row: row["status"] == "done")
    assert row["progress"] == 1.0
    assert 0.1 < row["best test acc"] <= 1.0


def test_start_pressed_again_at_once_queues_a_second_run(store):
    # The page's next full rerun may be a long way off (the run's end, behind a class's
    # queue): the second press must not land on a button that the page has already re-keyed.
    at = tiny_run(train_page(), epochs=200)
    first = start(at)
    assert "Queued bn-lenet" in [toast.value for toast in at.toast]
    second = start(at)
    assert second != first
    assert [run.id for run in store.list()] == [second, first]


def test_queued_and_running_runs_can_be_cancelled(store):
    at = tiny_run(train_page(), epochs=200)
    first = start(at)
    poll(at, store, first, lambda run: run.status is Status.RUNNING)
    second = start(at)  # one CPU slot: this one waits
    assert store.get(second).status is Status.QUEUED
    assert "Waiting in the queue: **number 1**" in texts(at.info)
    at.button(key=f"train.cancel.{second}").click().run()
    assert store.get(second).status is Status.CANCELLED
    assert not at.exception  # a run that never started has no curves to draw
    assert "Cancelled before it started." in texts(at.warning)

    watching(at).select(first).run()  # pick the first run again
    assert at.session_state["selected_run"] == first
    poll(at, store, first, lambda run: bool(store.metrics(run.id)))
    at.button(key=f"train.cancel.{first}").click().run()
    poll(at, store, first, lambda run: run.status.terminal)
    assert store.get(first).status is Status.CANCELLED
    assert "Cancelled." in texts(at.warning)


def test_a_config_too_big_for_the_device_is_refused_and_nothing_is_queued(store):
    at = train_page(PRESETS["vgg16"].replace(input_size=512))
    at.number_input(key="train.batch_size").set_value(4096).run()
    message = texts(at.error)
    assert "Too big" in message and "batch size (now 4,096)" in message
    assert next(b for b in at.button if b.label == "Start training").disabled
    assert store.list() == []


def test_a_model_that_cannot_be_built_shows_its_problems_not_a_traceback(store):
    at = train_page(PRESETS["vgg11"].replace(input_size=16))
    assert "cannot be built" in texts(at.error)
    assert "input_size" in texts(at.error)
    assert next(b for b in at.button if b.label == "Start training").disabled


def test_bad_values_are_reported_next_to_their_fields(store):
    at = train_page(PRESETS["bn-lenet"])
    at.number_input(key="train.lr").set_value(0.0).run()
    assert "`lr`: must be a positive number" in texts(at.error)
    at.number_input(key="train.lr").set_value(0.1)
    at.radio(key="train.data").set_value("sample").run()
    at.number_input(key="train.subset.sample").set_value(5000).run()
    assert "`subset`: 5,000 is more than the 3,000 training images" in texts(at.error)
    assert next(b for b in at.button if b.label == "Start training").disabled


def test_another_session_finds_the_run_in_the_table_and_can_watch_it(store):
    at = tiny_run(train_page())
    run_id = start(at)
    poll(at, store, run_id, lambda run: run.status.terminal)

    other = train_page()  # a reload, or another student's browser
    table_row(other, run_id, until=lambda row: row["status"] == "done")
    assert other.session_state["selected_run"] is None
    watching(other).select(run_id).run()
    assert not other.exception
    assert other.get("plotly_chart")

    reloaded = AppTest.from_file(str(APP), default_timeout=60)
    reloaded.query_params["run"] = run_id  # the URL the page left in the address bar
    reloaded.run()
    reloaded.switch_page("pages/train.py").run()
    assert reloaded.session_state["selected_run"] == run_id


def test_a_named_run_shows_its_escaped_name_and_offers_its_metrics_and_report(store):
    at = tiny_run(train_page())
    at.text_input(key="train.name").set_value("*my* run").run()
    run_id = start(at)
    assert store.get(run_id).name == "*my* run"
    poll(at, store, run_id, lambda run: run.status.terminal)
    assert any(r"\*my\* run" in m.value for m in at.markdown)  # escaped, not italics
    labels = [b.label for b in at.get("download_button")]
    assert labels == ["Metrics per epoch (CSV)", "Run report (HTML)"]
    row = table_row(at, run_id, until=lambda row: row["status"] == "done")
    assert row["name"] == "*my* run"


def test_a_sweep_with_a_bad_value_says_which_field_then_queues_a_group(store):
    at = tiny_run(train_page())
    at.number_input(key="train.max_steps").set_value(2).run()
    at.selectbox(key="train.sweep.field").set_value("lr")
    at.text_input(key="train.sweep.values").set_value("0.1, -1").run()
    next(b for b in at.button if b.label == "Sweep").click().run()
    assert not at.exception
    assert "`lr`: must be a positive number" in texts(at.error)
    assert store.list() == []
    at.text_input(key="train.sweep.values").set_value("0.1, 0.5").run()
    next(b for b in at.button if b.label == "Sweep").click().run()
    runs = store.list()
    assert [r.config["lr"] for r in runs] == [0.5, 0.1] and runs[0].group == runs[1].group
    assert at.session_state["selected_run"] == runs[0].id


def test_the_watched_run_is_duplicated_with_one_change(store):
    at = tiny_run(train_page())
    at.number_input(key="train.max_steps").set_value(2).run()
    run_id = start(at)
    at.selectbox(key="train.pair.field").set_value("batch_norm")
    at.text_input(key="train.pair.value").set_value("none").run()
    next(b for b in at.button if b.label == "Duplicate").click().run()
    assert not at.exception
    copy = store.get(at.session_state["selected_run"])
    assert copy.id != run_id and copy.spec["batch_norm"] == "none"
    assert copy.group == store.get(run_id).group is not None
