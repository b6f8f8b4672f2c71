"""Comparing real runs with each other and with the textbook's results (d2l 7.5.4 and 7.5.5)."""

from __future__ import annotations

import pytest

from cnnlab.analysis.layers import inspect_spec
from cnnlab.arch.presets import PRESETS
from cnnlab.runs.recorded import run_recorded
from cnnlab.runs.store import Run, RunStore, Status
from cnnlab.training.recipes import TEXTBOOK_RESULTS
from cnnlab.views.compare import (
    COLUMNS,
    compare_table,
    curves_for,
    default_choice,
    first_choice,
    sweep_points,
    table_columns,
    table_notes,
    textbook_key,
    textbook_references,
)
from cnnlab.views.figures import sweep_figure
from cnnlab.views.text import took_seconds
from tests.conftest import ONE_EPOCH, record_tiny_run


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> RunStore:
    return RunStore(tmp_path_factory.mktemp("compare") / "runs")


@pytest.fixture(scope="module")
def runs(store: RunStore) -> dict[str, str]:
    return {"bn-lenet": record_tiny_run(store, "bn-lenet", name="torch BN"),
            "bn-lenet-scratch": record_tiny_run(store, "bn-lenet-scratch", name="scratch BN")}


def test_each_run_has_its_row_and_the_books_row_beside_it(store, runs) -> None:
    rows = compare_table(store, [runs["bn-lenet"], runs["bn-lenet-scratch"]])
    assert [(r["run"], r["source"]) for r in rows] == [
        ("torch BN", "this run"), ("textbook: bn-lenet", "d2l 7.5.5"),
        ("scratch BN", "this run"), ("textbook: bn-lenet-scratch", "d2l 7.5.4")]
    ours, book = rows[0], rows[1]
    assert set(COLUMNS) <= set(ours) and set(COLUMNS) <= set(book)
    assert book["test_acc"] == 0.814 and book["examples_per_s"] == 27746.0
    assert book["id"] is None and book["data"] == "full" and book["epochs"] == 10


def test_our_row_holds_cost_speed_and_accuracy(store, runs) -> None:
    ours = compare_table(store, [runs["bn-lenet"]])[0]
    run = store.get(runs["bn-lenet"])
    table = inspect_spec(PRESETS["bn-lenet"])
    assert ours["params"] == table.total_params == 44_878
    assert ours["flops"] == table.total_flops
    assert ours["test_acc"] == run.result["metrics"]["test_acc"]
    # Trained on the 3,000-image sample: not scored against the book's 60,000-image result.
    assert ours["vs_book"] is None and not ours["comparable"]
    assert ours["examples_per_s"] > 0 and ours["time_s"] > 0
    assert ours["epochs"] == 1 and ours["data"] == "sample" and ours["device"] == "cpu"
    assert ours["input_size"] == 28 and ours["status"] == "done"
    # What the memory figure is, beside it: a Ray worker's is an upper bound.
    assert ours["memory_measured_what"] == "peak resident memory of the training process"


def test_two_runs_of_one_model_share_one_book_row(store, runs) -> None:
    rows = compare_table(store, [runs["bn-lenet"], runs["bn-lenet-scratch"], runs["bn-lenet"]])
    assert [r["source"] for r in rows] == ["this run", "this run", "d2l 7.5.5",
                                           "this run", "d2l 7.5.4"]


def test_the_book_row_is_found_by_the_spec_not_the_name(store) -> None:
    mine = store.create("my-net", PRESETS["bn-lenet"].replace(input_size=32).to_dict(), {})
    assert textbook_key(mine) == "bn-lenet"
    plain = store.create("lenet", PRESETS["lenet"].to_dict(), {})
    assert textbook_key(plain) is None  # the chapter trains LeNet only with batch norm
    wider = store.create("bn-lenet", PRESETS["bn-lenet"].replace(width=2.0).to_dict(), {})
    assert textbook_key(wider) == "bn-lenet"  # named after the book's model: still compared


def test_a_run_the_book_did_not_train_has_no_book_row(store) -> None:
    plain = store.create("lenet", PRESETS["lenet"].to_dict(), ONE_EPOCH.to_dict())
    rows = compare_table(store, [plain.id])
    assert len(rows) == 1 and rows[0]["textbook"] is None and rows[0]["vs_book"] is None


def test_a_queued_run_has_a_row_with_nothing_measured_yet(store) -> None:
    queued = store.create("resnet18", PRESETS["resnet18"].to_dict(), ONE_EPOCH.to_dict())
    ours, book = compare_table(store, [queued.id])
    assert ours["status"] == "queued" and ours["params"] == 11_178_378
    assert ours["test_acc"] is None and ours["time_s"] is None and ours["vs_book"] is None
    assert book["test_acc"] == TEXTBOOK_RESULTS["resnet18"].test_acc


def test_textbook_references_label_the_books_accuracy(store, runs) -> None:
    rows = compare_table(store, list(runs.values()))
    assert textbook_references(rows) == {"book: bn-lenet 0.814": 0.814,
                                         "book: bn-lenet-scratch 0.874": 0.874}


def test_curves_hold_every_event_of_each_run(store, runs) -> None:
    curves = curves_for(store, [runs["bn-lenet"], runs["bn-lenet-scratch"]])
    assert list(curves) == ["torch BN", "scratch BN"]
    events = curves["torch BN"]
    assert events == store.metrics(runs["bn-lenet"])
    assert [e["kind"] for e in events].count("epoch") == 1
    assert any(e["kind"] == "step" and "train_loss" in e for e in events)


def test_curves_of_runs_with_one_name_get_their_ids_added(store, runs) -> None:
    twin = store.create("bn-lenet", PRESETS["bn-lenet"].to_dict(), {}, name="torch BN")
    curves = curves_for(store, [runs["bn-lenet"], twin.id])
    assert list(curves) == [f"torch BN ({runs['bn-lenet']})", f"torch BN ({twin.id})"]


def test_an_unknown_run_raises_key_error(store) -> None:
    with pytest.raises(KeyError):
        compare_table(store, ["20000101-000000-abcdef"])
    with pytest.raises(KeyError):
        curves_for(store, ["20000101-000000-abcdef"])


# ---------------------------------------------------------------- pairs, sweeps and data


def recorded(store: RunStore, config, group: str | None = None, name: str | None = None,
             spec=PRESETS["bn-lenet"]) -> str:
    """A real tiny run of `spec` with `config`, whatever its ending; its id."""
    run = store.create("bn-lenet", spec.to_dict(), config.to_dict(), name=name, group=group,
                       data_source="sample")
    store.mark_running(run.id, pid=1, device="cpu", data_source="sample")
    run_recorded(store, run.id)
    return run.id


@pytest.fixture(scope="module")
def lr_sweep(store: RunStore) -> list[str]:
    """lr 0.1, 1 and 50 of BN-LeNet, 12 steps each; lr 50 diverges at chance."""
    return [recorded(store, ONE_EPOCH.replace(lr=lr), group="lr sweep", name=f"lr {lr:g}")
            for lr in (0.1, 1.0, 50.0)]


def test_fields_that_differ_become_columns_and_identical_ones_do_not(store, lr_sweep) -> None:
    no_bn = recorded(store, ONE_EPOCH, spec=PRESETS["bn-lenet"].replace(batch_norm="none"))
    rows = compare_table(store, [lr_sweep[1], no_bn])
    ours = [r for r in rows if r["id"]]
    assert [(r["varied:batch_norm"], "varied:lr" in r) for r in ours] == [
        ("torch", False), ("none", False)]
    columns = table_columns(rows)
    assert list(columns)[:2] == ["run", "varied:batch_norm"]
    assert columns["varied:batch_norm"] == "batch_norm"
    assert [r["varied:lr"] for r in compare_table(store, lr_sweep) if r["id"]] == [
        "0.1", "1", "50"]


def test_a_subset_run_is_labelled_and_not_scored_against_the_book(store) -> None:
    run_id = recorded(store, ONE_EPOCH.replace(subset=500, batch_size=100))
    ours = compare_table(store, [run_id])[0]
    assert ours["data"] == "sample, subset of 500" and ours["vs_book"] is None


def test_a_sweep_gives_one_point_per_value_with_the_diverged_one_marked(store, lr_sweep) -> None:
    field, points = sweep_points(store, "lr sweep")
    assert field == "lr" and [p["value"] for p in points] == [0.1, 1.0, 50.0]
    assert [p["diverged"] for p in points] == [False, False, True]
    assert all(p["memory_measured"] > 0 for p in points)
    figure = sweep_figure(field, points)
    diverged = [t for t in figure.data if t.name == "diverged"]
    assert len(diverged) == 3 and list(diverged[0].x) == [50.0]
    assert figure.layout.xaxis.type == "log"  # 0.1 to 50 spans 500x
    assert list(figure.data[0].x) == [0.1, 1.0]  # accuracy of the runs that trained


def test_every_row_shows_lr_batch_optimizer_normalization_and_multiply_adds(store, runs,
                                                                           lr_sweep) -> None:
    """The settings that explain a difference are columns even when they agree, and the
    book's row shows its recipe (plain SGD) beside them."""
    ours, book, scratch = compare_table(store, [runs["bn-lenet"], runs["bn-lenet-scratch"]])[:3]
    config = store.get(runs["bn-lenet"]).config
    assert (ours["lr"], ours["batch_size"], ours["optimizer"]) == (
        config["lr"], config["batch_size"], config["optimizer"])
    assert (book["lr"], book["batch_size"], book["optimizer"]) == (1.0, 256, "sgd")
    assert ours["norm"] == book["norm"] == "BatchNorm"
    assert scratch["norm"] == "BatchNorm (from scratch)"
    assert ours["macs"] == inspect_spec(PRESETS["bn-lenet"]).total_macs == ours["flops"] // 2
    swept = table_columns(compare_table(store, lr_sweep))
    assert list(swept)[:2] == ["run", "varied:lr"] and "lr" not in swept  # shown once


def test_normalization_names_the_switch_the_exercise_flips() -> None:
    from cnnlab.views.compare import norm_text

    assert norm_text(PRESETS["bn-lenet-no-bn"]) == "none"
    assert norm_text(PRESETS["alexnet"]) == "none"
    assert norm_text(PRESETS["resnet18"]) == "BatchNorm"
    assert norm_text(PRESETS["bn-lenet"].replace(norm_kind="group")) == "GroupNorm"
    assert norm_text(PRESETS["resnet18"].replace(norm_affine=False)) == "BatchNorm, fixed gamma/beta"
    assert norm_text(PRESETS["vgg11"]) == "none"
    assert norm_text(PRESETS["vgg11"].replace(batch_norm=True, norm_kind="layer")) == "LayerNorm"


# --- which runs the Compare page opens on -------------------------------------------------------


def _listed(*statuses: Status) -> list[Run]:
    """Runs r0, r1, ... newest first, with these statuses."""
    return [Run(f"r{i}", status, "bn-lenet", {}, {}, created_at=100.0 - i)
            for i, status in enumerate(statuses)]


def test_the_page_opens_on_the_pinned_runs_then_the_watched_one_then_the_newest_done() -> None:
    runs = _listed(Status.RUNNING, Status.DONE, Status.FAILED, Status.DONE, Status.DONE)
    assert default_choice(runs, pinned=("r4", "gone")) == ["r4"]
    assert default_choice(runs, pinned=("gone",), watched="r2") == ["r2"]
    assert default_choice(runs, watched="gone") == ["r1", "r3"]
    assert default_choice(_listed(Status.QUEUED, Status.RUNNING)) == ["r0"]
    assert default_choice([]) == []


def test_a_links_runs_open_on_a_first_visit_and_its_missing_ones_are_named() -> None:
    runs = _listed(Status.DONE, Status.DONE, Status.DONE)
    assert first_choice(runs, None, ["r2", "deleted"], pinned=("r0",)) == (["r2"], ["deleted"])
    assert first_choice(runs, None, ["deleted"]) == (["r0", "r1"], ["deleted"])
    # Once the session has a choice, it stands (less the runs deleted since) and the link is old.
    assert first_choice(runs, ["r1", "deleted"], ["r2", "x"]) == (["r1"], [])
    assert first_choice(runs, [], ["r2"]) == ([], [])


def test_the_notes_explain_the_books_rows_and_only_the_runs_that_need_it() -> None:
    book = {"id": None, "comparable": True, "textbook": "bn-lenet"}
    full = {"id": "r1", "comparable": True, "textbook": "bn-lenet"}
    plain = table_notes([full, book])
    assert plain.startswith("The book's rows: 10 epochs") and "sample" not in plain
    sample = table_notes([{**full, "comparable": False}, book])
    assert "bundled **sample**" in sample and "no book row" not in sample
    assert table_notes([{**full, "textbook": None}]).endswith("so they have no book row.")


def test_the_time_a_run_took_is_the_loops_own_seconds_else_the_stores_clock() -> None:
    def run(status: Status, **fields) -> Run:
        return Run("r", status, "bn-lenet", {}, {}, created_at=1.0, **fields)

    assert took_seconds(run(Status.QUEUED)) is None
    assert took_seconds(run(Status.RUNNING, started_at=10.0), now=25.0) == 15.0
    # The loop's seconds leave out the worker's start-up and last checkpoint.
    assert took_seconds(run(Status.DONE, started_at=10.0, finished_at=40.0,
                            result={"seconds": 27.5})) == 27.5
    assert took_seconds(run(Status.FAILED, started_at=10.0, finished_at=12.0)) == 2.0
    assert took_seconds(run(Status.CANCELLED, finished_at=12.0)) is None  # cancelled queued
