"""The Inside and Compare pages, run headless through AppTest on a store with real runs."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from cnnlab.arch.presets import PRESETS
from cnnlab.runs.recorded import run_recorded
from cnnlab.runs.store import RunStore
from tests.conftest import ONE_EPOCH, record_tiny_run

APP = Path(__file__).resolve().parent.parent / "app.py"




@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A runs dir with a torch-BN and a from-scratch-BN BN-LeNet run, trained once."""
    path = tmp_path_factory.mktemp("pages") / "runs"
    store = RunStore(path)
    ids = {"torch": record_tiny_run(store, "bn-lenet", "torch BN"),
           "scratch": record_tiny_run(store, "bn-lenet-scratch", "scratch BN")}
    return path, ids


@pytest.fixture
def runs_dir(trained, tmp_path, monkeypatch):
    """A copy of the trained runs (tests may add runs) that the app's store is created on."""
    path = tmp_path / "runs"
    shutil.copytree(trained[0], path)
    monkeypatch.setenv("CNNLAB_RUNS", str(path))
    st.cache_resource.clear()  # shared between AppTest instances (streamlit issue #9139)
    st.cache_data.clear()
    yield path
    from pages._shared import job_manager  # the sidebar starts one: stop its dispatcher

    job_manager().shutdown(wait=True, cancel=True)
    st.cache_resource.clear()


@pytest.fixture
def ids(trained) -> dict[str, str]:
    return trained[1]


def open_page(page: str, **state) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60)
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def charts(at: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def title(chart: dict) -> str:
    return chart["layout"].get("title", {}).get("text", "")


def find(at: AppTest, text: str) -> list[dict]:
    return [chart for chart in charts(at) if text in title(chart)]


# ---------------------------------------------------------------- Inside


def test_inside_shows_a_runs_filters_before_and_after_and_its_batch_norm(runs_dir, ids) -> None:
    at = open_page("pages/inside.py", selected_run=ids["scratch"])
    assert at.selectbox(key="inside.run").value == ids["scratch"]
    (filters,) = find(at, "First-layer filters: 6 × 1 × 5 × 5")
    assert len(filters["data"]) == 12  # six filters before, six after
    bn = [title(c) for c in charts(at) if "channels" in title(c) and "<b>" in title(c)]
    assert sorted(bn) == ["<b>conv1.1</b> · 6 channels", "<b>conv2.1</b> · 16 channels",
                          "<b>fc1.1</b> · 120 channels", "<b>fc2.1</b> · 84 channels"]
    assert find(at, "γ and β of every BatchNorm layer")
    assert any("d2l 7.5.4" in c.value for c in at.caption)  # the book's printed gamma and beta


def test_inside_shows_feature_maps_of_the_chosen_test_image(runs_dir, ids) -> None:
    at = open_page("pages/inside.py", selected_run=ids["torch"])
    at.slider(key="inside.image").set_value(7).run()
    assert not at.exception
    assert any(c.value.startswith("Test image 7: a **") for c in at.caption)
    maps = [c for c in charts(at) if c["data"] and c["data"][0].get("name") == "input channel 0"]
    assert len(maps) == 1 and len(maps[0]["data"]) == 1 + 6 + 16


def test_inside_predicts_the_sample_and_draws_the_confusion_matrix(runs_dir, ids) -> None:
    at = open_page("pages/inside.py", selected_run=ids["torch"])
    (matrix,) = find(at, "Confusion matrix")
    assert "of 1,000 right" in title(matrix)
    assert any("bundled sample" in c.value for c in at.caption)
    at.segmented_control(key="inside.gallery").set_value("mistakes").run()
    assert not at.exception
    gallery = [c for c in charts(at)
               if c["data"] and c["data"][0].get("name", "").startswith("image")]
    assert len(gallery) == 1 and len(gallery[0]["data"]) == 16


def test_inside_names_the_classes_a_trained_nin_never_predicts_and_why(runs_dir) -> None:
    # One epoch of the sample at lr 0.01 leaves NiN-small predicting a single class: its last
    # ReLU holds the other scores at 0. The page says which classes and why.
    config = ONE_EPOCH.replace(lr=0.01)
    run_id = record_tiny_run(RunStore(runs_dir), "nin-small", "tiny NiN", config=config)
    at = open_page("pages/inside.py", selected_run=run_id)
    (warning,) = [w.value for w in at.warning if "Never predicted" in w.value]
    assert warning.count("**") >= 16  # eight or more class names, each in bold
    assert "ReLU on the class scores" in warning


def test_inside_names_no_class_for_an_untrained_model(runs_dir) -> None:
    at = open_page("pages/inside.py", spec=PRESETS["nin-small"])
    at.segmented_control(key="inside.source").set_value("An untrained model").run()
    assert not at.exception and any("Predictions" in h.value for h in at.header)
    assert not [w for w in at.warning if "Never predicted" in w.value]


def test_inside_shows_an_untrained_model_as_training_starts_it(runs_dir) -> None:
    at = open_page("pages/inside.py", spec=PRESETS["bn-lenet"])
    at.segmented_control(key="inside.source").set_value("An untrained model").run()
    assert not at.exception
    (filters,) = find(at, "First-layer filters")
    assert len(filters["data"]) == 6
    assert any("Xavier-uniform initialisation, seed 0" in c.value for c in at.caption)
    at.selectbox(key="inside.preset").set_value("nin-small").run()
    assert not at.exception
    assert len(find(at, "First-layer filters: 24 × 1 × 3 × 3")[0]["data"]) == 24


def test_inside_uses_the_architecture_pages_spec_for_an_untrained_model(runs_dir) -> None:
    at = open_page("pages/inside.py", spec=PRESETS["lenet"])
    at.segmented_control(key="inside.source").set_value("An untrained model").run()
    assert at.selectbox(key="inside.preset").value == "the spec on the Architecture page"
    assert any("no BatchNorm layers" in i.value for i in at.info)


def test_inside_without_runs_starts_on_an_untrained_model(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CNNLAB_RUNS", str(tmp_path / "empty"))
    st.cache_resource.clear()
    st.cache_data.clear()
    try:
        at = open_page("pages/inside.py")
        assert at.segmented_control(key="inside.source").value == "An untrained model"
        assert find(at, "First-layer filters")
    finally:
        from pages._shared import job_manager

        job_manager().shutdown(wait=True, cancel=True)
        st.cache_resource.clear()


def test_inside_shows_a_running_runs_latest_epoch_checkpoint(runs_dir, ids) -> None:
    store = RunStore(runs_dir)
    weights = store.load_checkpoint(ids["torch"], "final")
    run = store.create("bn-lenet", PRESETS["bn-lenet"].to_dict(), ONE_EPOCH.to_dict(),
                       name="still training")
    store.mark_running(run.id, pid=os.getpid(), device="cpu")  # alive: not marked interrupted
    store.save_checkpoint(run.id, "epoch-001", weights["state_dict"], {"epoch": 1})
    at = open_page("pages/inside.py", selected_run=run.id)
    assert any("still training" in i.value and "epoch-001" in i.value for i in at.info)
    assert find(at, "First-layer filters")


def test_inside_reports_weights_that_do_not_fit_without_a_traceback(runs_dir, ids) -> None:
    store = RunStore(runs_dir)
    weights = store.load_checkpoint(ids["torch"], "final")
    run = store.create("lenet", PRESETS["lenet"].to_dict(), ONE_EPOCH.to_dict(), name="broken")
    store.save_checkpoint(run.id, "final", weights["state_dict"], {})
    at = open_page("pages/inside.py", selected_run=run.id)
    assert any("does not fit" in e.value for e in at.error)
    assert not find(at, "First-layer filters")


def test_inside_explains_a_damaged_checkpoint_and_offers_the_others(runs_dir, ids) -> None:
    store = RunStore(runs_dir)
    weights = store.load_checkpoint(ids["torch"], "final")["state_dict"]
    run = store.create("bn-lenet", PRESETS["bn-lenet"].to_dict(), ONE_EPOCH.to_dict(),
                       name="damaged")
    store.save_checkpoint(run.id, "epoch-001", weights, {})
    store.save_checkpoint(run.id, "final", weights, {})
    store.checkpoint_path(run.id, "final").write_bytes(b"")  # a disk that filled up
    at = open_page("pages/inside.py", selected_run=run.id)
    assert any("damaged" in e.value and "epoch-001" in e.value for e in at.error)
    at.selectbox(key=f"inside.checkpoint.{run.id}").set_value("epoch-001").run()
    assert not at.exception and not at.error
    assert find(at, "First-layer filters")


# ---------------------------------------------------------------- Compare


def test_compare_overlays_two_runs_and_puts_the_book_beside_them(runs_dir, ids) -> None:
    at = open_page("pages/compare.py")
    assert set(at.multiselect(key="compare.runs").value) == set(ids.values())
    (accuracy,) = find(at, "Test accuracy")
    (loss,) = find(at, "Training loss")
    assert sorted(t["name"] for t in accuracy["data"]) == ["scratch BN", "torch BN"]
    assert len(loss["data"]) == 2
    table = at.dataframe[0].value
    assert list(table["Source"]).count("this run") == 2
    assert {"d2l 7.5.4", "d2l 7.5.5"} <= set(table["Source"])
    book = table[table["Source"] == "d2l 7.5.5"].iloc[0]
    assert book["Test accuracy"] == 0.814 and book["Parameters"] == 44_878


def test_compare_shows_one_run_chosen_on_another_page(runs_dir, ids) -> None:
    at = open_page("pages/compare.py", selected_run=ids["torch"])
    assert at.multiselect(key="compare.runs").value == [ids["torch"]]
    assert len(at.dataframe[0].value) == 2  # the run and the book's row


def test_compare_without_runs_says_how_to_start_one(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CNNLAB_RUNS", str(tmp_path / "empty"))
    st.cache_resource.clear()
    st.cache_data.clear()
    try:
        at = open_page("pages/compare.py")
        assert any("No runs yet" in i.value for i in at.info)
        assert not at.get("plotly_chart")
    finally:
        from pages._shared import job_manager

        job_manager().shutdown(wait=True, cancel=True)
        st.cache_resource.clear()


def test_a_link_opens_the_same_inside_view(runs_dir, ids) -> None:
    """The Inside page's choices live in the URL: a pasted link shows the same view."""
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.query_params.update({"inside.source": "An untrained model", "inside.preset": "resnet18",
                            "inside.seed": "3", "inside.image": "7"})
    at.run()
    shared = [c.value for c in at.sidebar.get("code") if "inside.preset=resnet18" in c.value]
    assert shared and "inside.seed=3" in shared[0]  # the sidebar's "Share this view"
    at.switch_page("pages/inside.py").run()
    assert not at.exception
    assert at.selectbox(key="inside.preset").value == "resnet18"
    assert any("seed 3" in c.value for c in at.caption)
    assert at.slider(key="inside.image").value == 7
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.query_params.update({"inside.source": "A training run", "inside.run": ids["scratch"]})
    at.run()
    at.switch_page("pages/inside.py").run()
    assert at.selectbox(key="inside.run").value == ids["scratch"]


def test_a_hand_edited_inside_link_falls_back_to_the_default_view(runs_dir) -> None:
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.query_params.update({"inside.source": "An untrained model", "inside.preset": "vgg99",
                            "inside.seed": "-5", "inside.image": "lots"})
    at.run()
    at.switch_page("pages/inside.py").run()
    assert not at.exception
    assert at.selectbox(key="inside.preset").value == "the spec on the Architecture page"
    assert at.number_input(key="inside.seed").value == 0
    assert dict(at.query_params) == {"inside.source": "An untrained model"}  # bad ones dropped


def test_compare_picks_a_groups_runs_and_draws_the_sweep(runs_dir) -> None:
    store = RunStore(runs_dir)
    for lr in (0.5, 2.0):
        run = store.create("bn-lenet", PRESETS["bn-lenet"].to_dict(),
                           ONE_EPOCH.replace(lr=lr, max_steps=3).to_dict(),
                           name=f"<i>lr</i> {lr:g}", group="lr sweep", data_source="sample")
        store.mark_running(run.id, pid=1, device="cpu", data_source="sample")
        run_recorded(store, run.id)
    at = open_page("pages/compare.py")
    at.selectbox(key="compare.group").set_value("lr sweep").run()
    assert not at.exception
    assert len(at.multiselect(key="compare.runs").value) == 2
    table = at.dataframe[0].value
    assert list(table.columns[:2]) == ["Run", "lr"]  # the varied field, beside the name
    assert sorted(table["lr"].dropna()) == ["0.5", "2"]
    assert list(table[table["Source"] == "this run"]["Data"]) == ["sample", "sample"]
    assert any("Sweep: lr" in h.value for h in at.subheader)
    assert len(at.get("plotly_chart")) == 3  # two curve charts and the sweep
