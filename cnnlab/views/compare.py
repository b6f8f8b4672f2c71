"""Compare runs with each other and with the textbook: cost (parameters, FLOPs per image), speed
(time, examples/s) and final test accuracy, each run beside the book's row for the same model
(d2l chapter 7's train_ch6 results, `train.TEXTBOOK_RESULTS`), and their curves overlaid.

Pure functions over a `RunStore`; the Compare page and the tests call them.
"""

from __future__ import annotations

from typing import Any

from cnnlab.analysis.layers import inspect_spec
from cnnlab.arch import presets
from cnnlab.arch.checks import SpecError
from cnnlab.arch.parse import spec_from_data
from cnnlab.arch.specs import Spec
from cnnlab.runs.experiments import VARIABLE_FIELDS, value_text
from cnnlab.runs.store import Run, RunStore, Status
from cnnlab.training.recipes import TEXTBOOK_RECIPES, TEXTBOOK_RESULTS
from cnnlab.views.report import comparable_with_book, data_text
from cnnlab.views.text import mib, took_seconds

Row = dict[str, Any]

# The table's columns in order, with the labels a page shows.
COLUMNS: dict[str, str] = {
    "run": "Run",
    "source": "Source",
    "test_acc": "Test accuracy",
    "vs_book": "Accuracy vs book",
    "examples_per_s": "Examples/s",
    "time_s": "Time (s)",
    "epochs": "Epochs",
    "params": "Parameters",
    "flops": "FLOPs per image",
    "macs": "Multiply-adds per image",
    "lr": "lr",
    "batch_size": "Batch",
    "optimizer": "Optimizer",
    "norm": "Normalization",
    "data": "Data",
    "input_size": "Input (px)",
    "device": "Device",
    "memory_estimated": "Memory estimated (MiB)",
    "memory_measured": "Memory measured (MiB)",
    "memory_measured_what": "Memory measured is",  # a Ray worker's figure is an upper bound
    "status": "Status",
    "model": "Model",
}
# Settings every row shows (a run's config; the book's recipe), varied or not.
SETTINGS = ("lr", "batch_size", "optimizer")
VARIED = "varied:"  # row keys of the fields that differ between the runs: "varied:lr"


def _spec(run: Run) -> Spec | None:
    try:
        return spec_from_data(run.spec)
    except SpecError:
        return None


def textbook_key(run: Run) -> str | None:
    """The TEXTBOOK_RESULTS entry for the run's model: the preset whose spec equals the run's
    (at any input size), else the run's model name if the book trained a model of that name."""
    spec = _spec(run)
    name = presets.preset_name(spec, any_input_size=True) if spec is not None else None
    if name in TEXTBOOK_RESULTS:
        return name
    return run.model if run.model in TEXTBOOK_RESULTS else None


def _cost(spec: Spec | None) -> tuple[int | None, int | None, int | None]:
    """(parameters, FLOPs, multiply-adds per image) of a spec; Nones if it cannot be
    inspected."""
    if spec is None:
        return None, None, None
    try:
        table = inspect_spec(spec)
    except Exception:  # a spec that no longer builds: show the row without its cost
        return None, None, None
    return table.total_params, table.total_flops, table.total_macs


NORM_NAMES = {"batch": "BatchNorm", "group": "GroupNorm", "layer": "LayerNorm", "none": "none"}


def norm_text(spec: Spec | None) -> str | None:
    """What normalizes the network's layers, in a word or three: "BatchNorm", "none",
    "BatchNorm (from scratch)", "GroupNorm, fixed gamma/beta" (exercises 7.5.1-7.5.7)."""
    if spec is None:
        return None
    switch = getattr(spec, "batch_norm", True)  # ResNet and DenseNet always normalize
    kind = getattr(spec, "norm_kind", None)
    if kind is None or switch in (False, "none"):
        return "none"
    text = NORM_NAMES.get(kind, kind)
    if switch == "scratch":
        text += " (from scratch)"
    if kind != "none" and not getattr(spec, "norm_affine", True):
        text += ", fixed gamma/beta"
    return text


def _last(events: list[dict[str, Any]], key: str) -> Any:
    for event in reversed(events):
        if event.get(key) is not None:
            return event[key]
    return None


def _setting(run: Run, field: str) -> Any:
    return run.config.get(field) if field in VARIABLE_FIELDS else run.spec.get(field)


def varied_fields(runs: list[Run]) -> list[str]:
    """The config and spec fields whose values differ between `runs` (config fields first,
    spec fields in the order the first run's spec has them): the columns that tell the rows
    apart. The data is its own column."""
    names = [f for f in VARIABLE_FIELDS if f not in ("data", "subset")]
    names += [f for run in runs for f in run.spec if f != "family"]
    unique = list(dict.fromkeys(names))
    return [f for f in unique
            if len({repr(_setting(run, f)) for run in runs}) > 1]


def run_row(store: RunStore, run: Run, varied: list[str] | tuple[str, ...] = ()) -> Row:
    """One run's row: what it costs, how fast it trained and how accurate it ended, and its
    value of each `varied` field (under "varied:<field>")."""
    spec = _spec(run)
    params, flops, macs = _cost(spec)
    result = run.result
    epochs = store.metrics(run.id, kind="epoch")
    test_acc = run.test_acc if run.test_acc is not None else _last(epochs, "test_acc")
    speed = result.get("examples_per_s") or _last(epochs, "examples_per_s")
    return {
        "run": run.label, "source": "this run", "model": run.model, "status": str(run.status),
        "data": data_text(run), "input_size": spec.input_size if spec else None,
        "params": result.get("params", params), "flops": flops, "macs": macs,
        **{f: run.config.get(f) for f in SETTINGS}, "norm": norm_text(spec),
        "epochs": result.get("epochs_done", len(epochs)), "time_s": took_seconds(run),
        "examples_per_s": speed, "test_acc": test_acc, "vs_book": None,
        "device": result.get("device") or run.device, "id": run.id, "textbook": textbook_key(run),
        "memory_estimated": mib(result.get("memory_estimated")),
        "memory_measured": mib(result.get("memory_measured")),
        "memory_measured_what": result.get("memory_measured_what"),
        "comparable": comparable_with_book(run),
        **{f"{VARIED}{f}": value_text(_setting(run, f)) for f in varied},
    }


def textbook_row(name: str) -> Row:
    """The book's row for TEXTBOOK_RESULTS[name]: 10 epochs on the full data on its GPU."""
    book = TEXTBOOK_RESULTS[name]
    preset = presets.PRESETS.get(name)
    params, flops, macs = _cost(preset)
    recipe = TEXTBOOK_RECIPES.get(name)
    return {
        "run": f"textbook: {name}", "source": f"d2l {book.section}", "model": name,
        "status": "done", "data": "full", "input_size": preset.input_size if preset else None,
        "params": params, "flops": flops, "macs": macs,
        "lr": recipe.lr if recipe else None, "batch_size": recipe.batch_size if recipe else None,
        "optimizer": "sgd", "norm": norm_text(preset),  # train_ch6: plain SGD
        "epochs": recipe.epochs if recipe else 10,
        "time_s": None, "examples_per_s": book.examples_per_s, "test_acc": book.test_acc,
        "vs_book": None, "device": "the book's GPU", "id": None, "textbook": name,
        "memory_estimated": None, "memory_measured": None, "memory_measured_what": None,
        "comparable": True,
    }


def compare_table(store: RunStore, run_ids: list[str]) -> list[Row]:
    """Rows for the runs, in the order given, grouped by textbook model: each model's runs,
    then the book's row for that model (once). Keys are those of COLUMNS plus "id" (None for
    the book's rows) and "textbook" (the TEXTBOOK_RESULTS key, or None when the book did not
    train this model), "comparable" (trained on the book's full data) and "varied:<field>"
    for each field that differs between the runs (see `table_columns`). "vs_book" is a run's
    test accuracy minus the book's, for comparable runs only. Values may be None where a run
    has not reported them yet.
    Raises KeyError for an unknown run id."""
    groups: dict[str | None, list[Row]] = {}
    order: list[str | None] = []
    runs = [store.get(run_id) for run_id in run_ids]
    varied = varied_fields(runs)
    for run in runs:
        row = run_row(store, run, varied)
        key = row["textbook"]
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(row)
    rows: list[Row] = []
    for key in order:
        if key is None:
            rows.extend(groups[key])
            continue
        book = textbook_row(key)
        for row in groups[key]:
            if row["test_acc"] is not None and row["comparable"]:
                row["vs_book"] = row["test_acc"] - book["test_acc"]
            rows.append(row)
        rows.append(book)
    return rows


def table_columns(rows: list[Row]) -> dict[str, str]:
    """COLUMNS with each varied field's column after the run's name: {"varied:lr": "lr"}
    (and without that setting's own column, for lr, batch size and optimizer)."""
    varied = list(dict.fromkeys(k for row in rows for k in row if k.startswith(VARIED)))
    # A setting that varies moves up beside the name rather than showing twice.
    columns = {k: v for k, v in COLUMNS.items() if f"{VARIED}{k}" not in varied}
    first = {"run": columns.pop("run"), **{k: k.removeprefix(VARIED) for k in varied}}
    return {**first, **columns}


def textbook_references(rows: list[Row]) -> dict[str, float]:
    """The book's test accuracy of each model in `compare_table` rows, labelled for a chart:
    {"book: bn-lenet 0.814": 0.814, ...}."""
    return {f"book: {row['model']} {row['test_acc']:.3f}": row["test_acc"]
            for row in rows if row["id"] is None}


def sweep_points(store: RunStore, group: str) -> tuple[str | None, list[Row]]:
    """The varied field of a group and one point per run, oldest first: the field's value
    ("value", "label" as text), final test accuracy, examples/s, measured memory in MiB,
    status and whether it diverged. The field is None when the runs differ in more than one
    (each run's name is its label then)."""
    runs = store.list(group=group)[::-1]
    varied = varied_fields(runs)
    field = varied[0] if len(varied) == 1 else None
    points = []
    for run in runs:
        value = _setting(run, field) if field else run.label
        points.append({
            "value": value, "label": value_text(value) if field else run.label,
            "test_acc": run.test_acc, "id": run.id, "run": run.label,
            "examples_per_s": run.result.get("examples_per_s"),
            "memory_measured": mib(run.result.get("memory_measured")),
            "status": str(run.status), "diverged": run.status is Status.DIVERGED})
    return field, points


def curves_for(store: RunStore, run_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Each run's metric events (steps and epochs, in order) under a label unique among them:
    the run's label, with its id added when two runs share one.
    Raises KeyError for an unknown id."""
    runs = [store.get(run_id) for run_id in run_ids]
    labels = [run.label for run in runs]
    curves = {}
    for run, label in zip(runs, labels):
        if labels.count(label) > 1:  # two runs with the same name
            label = f"{label} ({run.id})"
        curves[label] = store.metrics(run.id)
    return curves


# --- which runs the page opens on ----------------------------------------------------------------


def default_choice(runs: list[Run], pinned: tuple[str, ...] | list[str] = (),
                   watched: str | None = None) -> list[str]:
    """The runs the teacher `pinned`, else the run `watched` on another page, else the newest
    two that finished (else the newest one). `runs` come newest first; unknown ids are dropped."""
    ids = [r.id for r in runs]
    pinned = [i for i in pinned if i in ids]
    if pinned:
        return pinned
    if watched in ids:
        return [watched]
    return [r.id for r in runs if r.status is Status.DONE][:2] or ids[:1]


def first_choice(runs: list[Run], chosen: list[str] | None, linked: list[str],
                 pinned: tuple[str, ...] | list[str] = (), watched: str | None = None
                 ) -> tuple[list[str], list[str]]:
    """(The runs to pick, the `linked` ids that are not here.) The session's `chosen` runs when
    it has any choice, else a pasted link's, else `default_choice`; ids of deleted runs go.
    The missing linked ids are only news on a first visit (`chosen` is None)."""
    ids = {r.id for r in runs}
    missing = [i for i in linked if i not in ids] if chosen is None else []
    if chosen is None:
        chosen = [i for i in linked if i in ids] or default_choice(runs, pinned, watched)
    return [i for i in chosen if i in ids], missing


def table_notes(rows: list[Row]) -> str:
    """The caption under the table: what the book's rows are, and, only when some of `rows`
    need it, why a run gets no difference from the book or no book row at all."""
    notes = ["The book's rows: 10 epochs on all 60,000 training images, examples/s on its "
             "GPU with a DataLoader pipeline; its time per run was not printed."]
    if any(row["id"] and not row["comparable"] for row in rows):
        notes.append("Runs on the bundled **sample** (3,000 training images) or on a subset "
                     "are not comparable in accuracy with the book's, so they get no "
                     "difference from it.")
    if any(row["id"] and row["textbook"] is None for row in rows):
        notes.append("The book trained no model like some of these runs, so they have no book row.")
    return " ".join(notes)
