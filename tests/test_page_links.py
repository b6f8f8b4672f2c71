"""Every page keeps its view in the URL: a link pasted into another browser (a fresh AppTest
with the same query parameters) shows the same view, and a hand-edited one names what it
could not read and shows the default, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import streamlit as st
from streamlit.proto.WidgetStates_pb2 import WidgetStates
from streamlit.testing.v1 import AppTest

from cnnlab.arch.presets import PRESETS
from cnnlab.runs.store import RunStore
from cnnlab.training.recipes import default_config
from tests.conftest import record_tiny_run

APP = Path(__file__).resolve().parent.parent / "app.py"


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A fresh run store; the app's cached store and job manager are created on it."""
    monkeypatch.setenv("CNNLAB_RUNS", str(tmp_path / "runs"))
    st.cache_resource.clear()  # shared between AppTest instances (streamlit issue #9139)
    st.cache_data.clear()
    yield RunStore(tmp_path / "runs")
    from pages._shared import job_manager

    job_manager().shutdown(wait=True, cancel=True)
    st.cache_resource.clear()


def open_link(query: dict[str, str | list[str]], page: str | None = None) -> AppTest:
    """A new browser session opening the app with `query` in its URL, then `page`."""
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.query_params.update(query)
    at.run()
    if page is not None:
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(elements) -> str:
    return " ".join(e.value for e in elements)


# --- Architecture ---------------------------------------------------------------------------


def test_an_architecture_link_opens_its_spec_and_view(store):
    at = open_link({"model": "vgg11", "width": "0.5", "view": "Memory"})
    assert at.session_state["spec"] == PRESETS["vgg11"].replace(width=0.5)
    assert at.number_input(key="edit.vgg.width").value == 0.5
    assert at.number_input(key="batch_size")  # the Memory tab is the open one
    assert dict(at.query_params) == {"model": "vgg11", "width": "0.5", "view": "Memory"}


def test_an_edit_on_the_architecture_page_goes_into_the_url_and_back(store):
    at = open_link({})
    assert dict(at.query_params) == {}  # the default preset: a plain URL
    at.segmented_control(key="family").set_value("resnet").run()
    at.number_input(key="edit.resnet.stem_channels").set_value(32).run()
    query = dict(at.query_params)
    assert query == {"model": "resnet18", "stem_channels": "32"}
    again = open_link(query)
    assert again.session_state["spec"] == PRESETS["resnet18"].replace(stem_channels=32)


def test_a_hand_edited_architecture_link_names_the_parameter_and_shows_the_default(store):
    at = open_link({"model": "vgg11", "conv_arch": "((1,<b>64</b>))", "view": "Nope"})
    assert "could not be read" in texts(at.warning)
    assert "`conv_arch`: could not read '((1,\\<b\\>64" in texts(at.error)  # escaped
    assert at.session_state["spec"] == PRESETS["alexnet"]
    assert dict(at.query_params) == {}  # the bad parameters are gone


# --- Train ----------------------------------------------------------------------------------


def test_a_train_link_opens_its_model_and_settings(store):
    at = open_link({"model": "vgg11", "lr": "0.02", "epochs": "2"}, "pages/train.py")
    # AppTest opens the Architecture page first, which takes the link's spec too; the Train
    # page then offers it as that page's (the browser test opens /train alone: "vgg11").
    model = at.selectbox(key="train.model").value
    assert model == "vgg11" or (model == "architecture"
                                and at.session_state["spec"] == PRESETS["vgg11"])
    assert at.number_input(key="train.lr").value == 0.02
    assert at.number_input(key="train.epochs").value == 2
    at.number_input(key="train.batch_size").set_value(64).run()
    assert dict(at.query_params) == {"model": "vgg11", "lr": "0.02", "epochs": "2",
                                     "batch_size": "64"}


def test_a_train_link_to_an_edited_model_opens_it(store):
    at = open_link({"model": "resnet18", "input_size": "48", "data": "sample"},
                   "pages/train.py")
    assert at.selectbox(key="train.model").value == "architecture"
    assert at.session_state["spec"] == PRESETS["resnet18"].replace(input_size=48)
    assert at.radio(key="train.data").value == "sample"
    assert at.number_input(key="train.subset.sample").value == 3000


def test_a_hand_edited_train_link_names_the_parameter_and_keeps_the_recipe(store):
    at = open_link({"model": "bn-lenet", "lr": "fast<script>"}, "pages/train.py")
    assert "`lr`" in texts(at.error) and "<script>" not in texts(at.error)
    assert at.number_input(key="train.lr").value == default_config(PRESETS["bn-lenet"]).lr
    assert "lr" not in at.query_params


# --- Compare and Lessons --------------------------------------------------------------------


def test_a_compare_link_opens_the_same_runs(store):
    ids = [record_tiny_run(store, "lenet", name=f"run {i}") for i in range(3)]
    at = open_link({"compare.runs": [ids[0], ids[2]]}, "pages/compare.py")
    assert at.multiselect(key="compare.runs").value == [ids[0], ids[2]]
    at = open_link({"compare.runs": [ids[1], "gone<i>"]}, "pages/compare.py")
    assert at.multiselect(key="compare.runs").value == [ids[1]]
    assert "compare.runs" in texts(at.warning) and "gone\\<i\\>" in texts(at.warning)


def test_a_lessons_link_opens_its_section(store):
    at = open_link({"lessons.7.3": "true"}, "pages/lessons.py")
    opened = [e.label for e in at.expander if e.proto.expanded]
    assert opened and all(label.startswith("7.3") for label in opened)


# --- the subset follows the data --------------------------------------------------------------


def test_a_stale_subset_sent_after_choosing_the_sample_does_not_block_start(store):
    """Under load a browser sends an edit before it has drawn the rerun that chose "sample":
    its request still holds the subset widget as it showed it (60,000)."""
    at = open_link({}, "pages/train.py")
    if at.radio(key="train.data").options == ["sample"]:
        pytest.skip("needs the full Fashion-MNIST installed (two data sets to choose from)")
    at.selectbox(key="train.model").select("bn-lenet").run()
    before = at._tree.get_widget_states()  # the browser's widgets before the data change
    at.radio(key="train.data").set_value("sample").run()
    at.number_input(key="train.lr").set_value(0.5)
    sent = {w.id: w for w in before.widgets}
    sent.update({w.id: w for w in at._tree.get_widget_states().widgets
                 if w.id not in sent or "train.lr" in w.id or "train.data" in w.id})
    states = WidgetStates()
    states.widgets.extend(sent.values())
    at._run(states)
    assert not at.exception
    assert at.radio(key="train.data").value == "sample"
    assert "subset" not in texts(at.error)
    assert not next(b for b in at.button if b.label == "Start training").disabled
