"""Train: a model, the textbook's hyperparameters, a memory check, and a run to watch live.

Runs train in worker processes behind a queue that every session on this server shares
(`cnnlab.runs.jobs`); this page keeps only the id of the run it shows (`"selected_run"`), so a
reload, another tab or another student's browser can pick any run from the table below.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from cnnlab.views import editor as editing
from cnnlab.training import resources
from cnnlab.views.curves import training_curves
from cnnlab.training.data import DataError
from cnnlab.analysis.layers import InspectionError, human_bytes, inspect_spec
from cnnlab.runs.live import duration, progress
from cnnlab.runs.store import Run, Status, StoreError
from cnnlab.arch.specs import PRESETS, Spec
from cnnlab.training.config import OPTIMIZERS, SCHEDULES, ConfigError, TrainConfig
from cnnlab.training.recipes import TEXTBOOK_RECIPES, TEXTBOOK_RESULTS, default_config
from cnnlab.arch.checks import SpecError, validate
from cnnlab.errors import Problem, errors
from pages._shared import job_manager, run_events, run_store

FROM_ARCHITECTURE = "architecture"  # the model choice that means st.session_state["spec"]
DEFAULT_PRESET = "bn-lenet"  # trains in a minute on a CPU: a good first run
LIVE_REFRESH_S = 1
TABLE_REFRESH_S = 3
RUNS_SHOWN = 500
RECIPE = ("epochs", "batch_size", "lr")  # what the textbook sets per model
HYPERPARAMETERS = (*RECIPE, "optimizer", "momentum", "weight_decay", "label_smoothing",
                   "schedule", "seed")
MORE_OPTIONS = ("max_steps", "log_every", "flip")
KEEP = "session"  # the settings survive a visit to another page (widgets' persist_state)
OPTIMIZER_NAMES = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}
SCHEDULE_NAMES = {"constant": "constant", "cosine": "cosine decay",
                  "step": "steps (x0.1 at 1/2, 3/4)"}
STATUS_TEXT = {
    Status.QUEUED: ("waiting", "blue", ":material/hourglass_top:"),
    Status.RUNNING: ("training", "orange", ":material/play_arrow:"),
    Status.DONE: ("done", "green", ":material/check:"),
    Status.CANCELLED: ("cancelled", "gray", ":material/block:"),
    Status.DIVERGED: ("diverged", "red", ":material/trending_up:"),
    Status.FAILED: ("failed", "red", ":material/error:"),
    Status.INTERRUPTED: ("interrupted", "gray", ":material/power_off:"),
}


def key(field: str) -> str:
    return f"train.{field}"


# --- formatting ------------------------------------------------------------------------------


def short(n: float) -> str:
    """7_610_000_000 -> '7.61 G'."""
    for factor, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= factor:
            return f"{n / factor:.3g} {unit}"
    return f"{n:,.0f}"


def sentence(text: str) -> str:
    return text if text.endswith((".", "?", "!")) else text + "."


def show_problem(problem: Problem, where: Any) -> None:
    where.error(f"`{problem.field}`: {sentence(problem.message)} **Fix:** {sentence(problem.fix)}",
                icon=":material/error:")


def model_name(spec: Spec) -> str:
    """A preset's name, or the family's with '-custom' for an edited spec."""
    return editing.matching_preset(spec) or f"{spec.family}-custom"


def nan_if_none(value: float | None) -> float:
    return math.nan if value is None else value  # a missing number keeps the column numeric


def data_label(run: Run) -> str:
    source = run.result.get("data_source") or run.data_source
    if source is not None:
        return "sample" if source == "sample" else "full"
    return run.config.get("data", "auto")


# --- shared by every session (a classroom watches the same few runs) -------------------------


@st.cache_resource(max_entries=32, show_spinner=False)
def curves_figure(run_id: str, last_seq: int, epochs: float | None,
                  book_test_acc: float | None) -> go.Figure:
    """The run's curves up to event `last_seq`, built once for everyone watching: a figure
    takes ~15 ms to build and Streamlit only reads it, so one object serves every session."""
    events = [e for e in run_events().get(run_id) if e["seq"] <= last_seq]
    return training_curves(events, epochs=epochs, book_test_acc=book_test_acc)


@st.cache_data(ttl=TABLE_REFRESH_S - 1, show_spinner=False)
def runs_frame() -> pd.DataFrame:
    """Every run in the store, newest first, as the table shows them; rebuilt at most every
    couple of seconds however many sessions ask."""
    runs = run_store().list(limit=RUNS_SHOWN)
    summaries = [progress(run, run_events().get(run)) for run in runs]
    return pd.DataFrame({
        "model": [run.model for run in runs],
        "status": [STATUS_TEXT[run.status][0] for run in runs],
        "progress": [round(p.fraction or 0.0, 2) for p in summaries],
        "best test acc": [nan_if_none(p.best_test_acc) for p in summaries],
        "examples/s": [nan_if_none(p.examples_per_s and round(p.examples_per_s))
                       for p in summaries],
        "data": [data_label(run) for run in runs],
        "device": [run.device or run.config.get("device", "auto") for run in runs],
        "created": pd.to_datetime([run.created_at for run in runs], unit="s", utc=True),
        "run": [run.id for run in runs],
    })


# --- the hyperparameter widgets --------------------------------------------------------------


def show_config(config: TrainConfig, fields: tuple[str, ...]) -> None:
    """Point the widgets of `fields` at the config's values (before they are drawn)."""
    for field in fields:
        st.session_state[key(field)] = getattr(config, field)


def reset_to_textbook(spec: Spec) -> None:
    show_config(default_config(spec), HYPERPARAMETERS)


def on_data_change() -> None:
    # A new data set: train on all of it, not on a subset sized for the old one.
    st.session_state[key("subset")] = resources.train_size(st.session_state[key("data")])


def watch(run_id: str | None) -> None:
    st.session_state["selected_run"] = run_id
    if run_id is not None:
        st.query_params["run"] = run_id  # a reload of this tab comes back to the same run


# The run pickers are keyed by the run they show: when the watched run changes, they are new
# widgets. Set from code and sent back by a browser mid-refresh, a long-lived picker's stale
# value would otherwise read as the user's choice and switch back (seen with the 1 s refresh).


def picker_key(name: str, selected: str | None) -> str:
    return key(f"{name}.{selected}")


def on_watch_change(widget: str) -> None:
    watch(st.session_state[widget])


def on_table_select(widget: str, ids: list[str]) -> None:
    rows = st.session_state[widget].selection.rows
    if rows and rows[0] < len(ids):
        watch(ids[rows[0]])


# --- live progress of one run ----------------------------------------------------------------


def cancel(run_id: str) -> None:
    try:
        job_manager().cancel(run_id)
    except (KeyError, StoreError) as exc:
        st.session_state[key("cancel_error")] = str(exc)


def live(run_id: str, polling: bool) -> None:
    """One run: its place in the queue, or progress, numbers and curves. Re-drawn every second
    while `polling`; a full rerun when the run ends, so the polling stops."""
    try:
        run = run_store().get(run_id)
        events = run_events().get(run)
    except KeyError:
        st.info("That run is gone from the run store.", icon=":material/info:")
        return
    except StoreError as exc:
        st.warning(f"The run store cannot be read just now ({exc}); trying again.",
                   icon=":material/warning:")
        return
    if polling and run.status.terminal:
        st.rerun()
    now = progress(run, events)
    label, color, icon = STATUS_TEXT[run.status]

    head = st.columns([5, 1], vertical_alignment="center")
    head[0].markdown(f"### {run.model} &nbsp; :{color}-badge[{icon} {label}]")
    head[0].caption(f"run `{run.id}` · {run.device or run.config.get('device', 'auto')} · "
                    f"{data_label(run)} data · batch {run.config.get('batch_size')} · "
                    f"lr {run.config.get('lr'):g} · {run.config.get('optimizer')}")
    if not run.status.terminal:
        head[1].button("Cancel", key=key(f"cancel.{run.id}"), on_click=cancel, args=(run.id,),
                       icon=":material/stop:", disabled=run.cancel_requested, width="stretch")
    error = st.session_state.pop(key("cancel_error"), None)
    if error:
        st.error(f"Could not cancel: {error}", icon=":material/error:")

    if run.status is Status.QUEUED:
        try:
            place = job_manager().queue_position(run.id)
            running = len(run_store().list(Status.RUNNING))
        except (KeyError, StoreError):
            place, running = None, 0
        st.info(f"Waiting in the queue: **number {place}** to start, behind "
                f"{running} run{'s' if running != 1 else ''} training now. Runs start in the "
                "order they were queued, as soon as a slot is free.",
                icon=":material/hourglass_top:")
        return
    if run.cancel_requested and run.status is Status.RUNNING:
        st.warning("Stopping after the current step...", icon=":material/stop:")
    if run.status is Status.RUNNING and not events:
        st.progress(0.0, text="Starting: the worker loads PyTorch, the data and the model "
                              "(a few seconds)...")
        return

    if run.status is Status.RUNNING:
        st.progress(now.fraction or 0.0, text=f"**{now.fraction or 0:.0%}** · {now.text}")
    else:
        ended = sentence(run.message[:1].upper() + run.message[1:]) if run.message else ""
        text = f"**{label.capitalize()}.** {ended}"
        if run.status is Status.DONE:
            st.success(text, icon=":material/check_circle:")
        elif run.status in (Status.DIVERGED, Status.FAILED):
            st.error(text, icon=":material/error:")
        else:
            st.warning(text, icon=":material/info:")

    numbers = st.columns(5)
    numbers[0].metric("Train loss", "–" if now.train_loss is None else f"{now.train_loss:.3f}")
    numbers[1].metric("Train accuracy", "–" if now.train_acc is None else f"{now.train_acc:.1%}")
    if run.status.terminal:
        numbers[2].metric("Best test accuracy", "–" if now.best_test_acc is None
                          else f"{now.best_test_acc:.1%}",
                          help="The best of the evaluations at the end of each epoch")
    else:
        numbers[2].metric("Test accuracy", "–" if now.test_acc is None else f"{now.test_acc:.1%}",
                          help="Measured on the test set at the end of each epoch")
    numbers[3].metric("Examples / s", "–" if not now.examples_per_s
                      else f"{now.examples_per_s:,.0f}")
    if run.status is Status.RUNNING:
        numbers[4].metric("Time left", "–" if now.eta_s is None else duration(now.eta_s))
    elif run.started_at and run.finished_at:
        numbers[4].metric("Took", duration(run.finished_at - run.started_at))

    if not events:
        return
    book = TEXTBOOK_RESULTS.get(run.model)
    on_full_data = data_label(run) == "full"
    figure = curves_figure(run.id, events[-1]["seq"], now.planned_epochs or now.epochs,
                           book.test_acc if book is not None and on_full_data else None)
    st.plotly_chart(figure, key=key("curves"), config={"displayModeBar": False})
    if not any(e.get("kind") == "epoch" for e in events):
        st.caption("Test accuracy appears after the first epoch, when the test set is scored.")


# --- all runs --------------------------------------------------------------------------------


def runs_table(shown_run: str | None) -> None:
    """Every run in the store, newest first; picking a row shows that run above."""
    if st.session_state.get("selected_run") != shown_run:
        st.rerun()  # a row was picked: redraw the whole page around that run
    try:
        frame = runs_frame()
    except StoreError as exc:
        st.warning(f"The run store cannot be read just now ({exc}).", icon=":material/warning:")
        return
    if frame.empty:
        st.caption("No runs yet on this server.")
        return
    table = picker_key("table", shown_run)
    st.dataframe(
        frame, hide_index=True, key=table,
        on_select=lambda: on_table_select(table, list(frame["run"])),  # it takes no args=
        selection_mode="single-row", height=min(35 * (len(frame) + 1) + 3, 420),
        column_config={
            "progress": st.column_config.ProgressColumn(min_value=0.0, max_value=1.0,
                                                        format="percent"),
            "best test acc": st.column_config.NumberColumn(format="%.3f"),
            "examples/s": st.column_config.NumberColumn(format="%d"),
            "created": st.column_config.DatetimeColumn(format="distance"),
        },
    )
    if len(frame) == RUNS_SHOWN:
        st.caption(f"The newest {RUNS_SHOWN} runs; `python -m cnnlab runs` lists them all.")


# --- the page --------------------------------------------------------------------------------

st.title("Train")
st.caption("Train a network on Fashion-MNIST in the background. Runs wait in one queue shared "
           "by everyone on this server; start one, then watch it learn below.")

# Model: the one being edited on the Architecture page, or any preset.
architecture_spec: Spec | None = st.session_state.get("spec")
choices = ([FROM_ARCHITECTURE] if architecture_spec is not None else []) + list(PRESETS)
if st.session_state.get(key("model")) not in choices:
    st.session_state[key("model")] = choices[0] if architecture_spec is not None else DEFAULT_PRESET
st.subheader("Model")
picked = st.selectbox(
    "Model", choices, key=key("model"), persist_state=KEEP, label_visibility="collapsed",
    format_func=lambda c: (f"{model_name(architecture_spec)} (from the Architecture page)"
                           if c == FROM_ARCHITECTURE else c))
spec: Spec = architecture_spec if picked == FROM_ARCHITECTURE else PRESETS[picked]
name = model_name(spec)

spec_problems = errors(validate(spec))
table = None
if spec_problems:
    st.error("This model cannot be built; fix it on the Architecture page.",
             icon=":material/error:")
    for problem in spec_problems:
        show_problem(problem, st)
else:
    try:
        table = inspect_spec(spec)
    except InspectionError as exc:
        st.error(f"This model cannot be built: {exc}", icon=":material/error:")
if table is not None:
    st.caption(f"{spec.input_size}x{spec.input_size} input · {table.total_params:,} parameters · "
               f"{short(table.total_flops)}FLOPs per image")

# Hyperparameters: the textbook's for this model whenever the model changes.
st.subheader("Hyperparameters")
defaults = default_config(spec) if not spec_problems else TrainConfig()
if key("seed") not in st.session_state:  # the first visit: every field from the textbook
    show_config(defaults, HYPERPARAMETERS + MORE_OPTIONS)
    full = resources.full_data_found()
    st.session_state[key("data")] = "full" if full else "sample"
    st.session_state[key("subset")] = resources.train_size(st.session_state[key("data")])
    st.session_state[key("device")] = "cuda" if resources.gpu_names() else "cpu"
    st.session_state[key("recipe_for")] = spec
elif st.session_state.get(key("recipe_for")) != spec:  # a new model: its textbook recipe
    show_config(defaults, RECIPE)
    st.session_state[key("recipe_for")] = spec
recipe = TEXTBOOK_RECIPES.get(name)
book = TEXTBOOK_RESULTS.get(name)
head = st.columns([4, 1], vertical_alignment="center")
if recipe is not None:
    note = (f"Epochs, batch size and learning rate are the textbook's for {name} "
            f"(d2l {recipe.source.removeprefix('d2l ')}), with plain SGD as in `train_ch6`.")
    if book is not None:
        note += (f" The book reached **{book.test_acc:.3f}** test accuracy after 10 epochs, at "
                 f"{book.examples_per_s:,.0f} examples/s on its GPU.")
else:
    note = (f"The book does not train {name}: epochs, batch size and learning rate are its "
            f"{spec.family} recipe, with plain SGD as in `train_ch6`.")
head[0].caption(note)
head[1].button("Textbook values", on_click=reset_to_textbook, args=(spec,), icon=":material/undo:",
               width="stretch", help="Set every hyperparameter back to the textbook's")

slots: dict[str, Any] = {}  # field -> the container under its widget, for its problems


def setting(widget: Any, field: str, label: str, **options: Any) -> None:
    """The widget of one config field: its value lives in st.session_state["train.<field>"]
    (kept across pages), and a slot under it shows the field's problems."""
    widget(label, key=key(field), persist_state=KEEP, **options)
    slots[field] = st.container()


row = st.columns(4)
with row[0]:
    setting(st.number_input, "epochs", "Epochs", min_value=1, max_value=1000, step=1)
with row[1]:
    setting(st.number_input, "batch_size", "Batch size", min_value=1, max_value=65536, step=32)
with row[2]:
    setting(st.number_input, "lr", "Learning rate", min_value=0.0, step=0.01, format="%g")
with row[3]:
    setting(st.selectbox, "optimizer", "Optimizer", options=OPTIMIZERS,
            format_func=OPTIMIZER_NAMES.get)
row = st.columns(4)
with row[0]:
    setting(st.number_input, "momentum", "Momentum", min_value=0.0, max_value=0.999, step=0.1,
            format="%g", disabled=st.session_state[key("optimizer")] != "sgd",
            help="SGD only; the book's train_ch6 uses none")
with row[1]:
    setting(st.number_input, "weight_decay", "Weight decay", min_value=0.0, step=1e-4,
            format="%g", help="L2 penalty; the book uses none here")
with row[2]:
    setting(st.number_input, "label_smoothing", "Label smoothing", min_value=0.0,
            max_value=0.99, step=0.05, format="%g")
with row[3]:
    setting(st.selectbox, "schedule", "Learning-rate schedule", options=SCHEDULES,
            format_func=SCHEDULE_NAMES.get)

st.subheader("Data and device")
full_found = resources.full_data_found()
data_options = ["full", "sample"] if full_found else ["sample"]
if st.session_state.get(key("data")) not in data_options:
    st.session_state[key("data")] = data_options[0]
gpus = resources.gpu_names()
device_options = ["cuda", "cpu"] if gpus else ["cpu"]
if st.session_state.get(key("device")) not in device_options:
    st.session_state[key("device")] = device_options[0]
row = st.columns(4)
with row[0]:
    setting(st.radio, "data", "Fashion-MNIST", options=data_options, on_change=on_data_change,
            format_func={"full": "full (60,000 / 10,000)", "sample": "sample (3,000 / 1,000)"}.get)
    if not full_found:
        st.caption("The full set is not installed here (`apt install dataset-fashion-mnist`).")
with row[1]:
    setting(st.number_input, "subset", "Training images", min_value=10, step=1000,
            help="Fewer than all: a class-balanced subset, drawn with the seed")
with row[2]:
    setting(st.radio, "device", "Device", options=device_options, horizontal=True,
            format_func=lambda d: f"GPU ({gpus[0]})" if d == "cuda" else "CPU")
    if not gpus:
        st.caption(f"No GPU on this server: runs train on its CPU ({resources.cpu_cores()} "
                   "cores). 28 px models take a minute an epoch; 224 px ones, hours.")
with row[3]:
    setting(st.number_input, "seed", "Seed", min_value=0, step=1,
            help="Same seed, same weights and batch order")
with st.expander("More options"):
    row = st.columns(3)
    with row[0]:
        setting(st.number_input, "max_steps", "Stop after this many steps", min_value=1, step=10,
                placeholder="all",
                help="Empty trains every epoch; a small number makes a quick test run")
    with row[1]:
        setting(st.number_input, "log_every", "Log every (steps)", min_value=1,
                help="How often the curves get a point")
    with row[2]:
        setting(st.toggle, "flip", "Random left-right flips")

# Check everything before anything can be queued; each problem goes under its field.
chosen = {field: st.session_state[key(field)] for field in HYPERPARAMETERS}
all_images = resources.train_size(st.session_state[key("data")])
subset = st.session_state[key("subset")]
chosen.update(
    data=st.session_state[key("data")], device=st.session_state[key("device")],
    subset=None if subset == all_images else subset, max_steps=st.session_state[key("max_steps")],
    log_every=st.session_state[key("log_every")], flip=st.session_state[key("flip")],
)
if chosen["optimizer"] != "sgd":
    chosen["momentum"] = 0.0
config: TrainConfig | None = None
try:
    config = TrainConfig(**chosen)
    config_problems = resources.data_problems(config)
except ConfigError as exc:
    config_problems = exc.problems
for problem in config_problems:
    show_problem(problem, slots.get(problem.field, st))

st.subheader("Launch")
fits, fit_message, breakdown = False, "", ""
if config is not None and table is not None and not config_problems:
    try:
        need = resources.estimate(spec, config)
        fits, fit_message = resources.fits_device(spec, config)
    except (InspectionError, ValueError, OSError) as exc:
        fits, fit_message = False, f"Could not estimate the memory this run needs: {exc}"
    else:
        memory = need.memory
        runtime = need.fixed - memory.weights - memory.gradients - memory.optimizer_state
        breakdown = (f"Estimate: weights {human_bytes(memory.weights)} · gradients "
                     f"{human_bytes(memory.gradients)} · optimizer state "
                     f"{human_bytes(memory.optimizer_state)} · batches "
                     f"{human_bytes(need.batch_part)} · data and PyTorch {human_bytes(runtime)}")
    (st.info if fits else st.error)(fit_message, icon=":material/memory:" if fits
                                    else ":material/block:")
    if breakdown:
        st.caption(breakdown)
else:
    st.caption("Fix the problems marked above to start a run.")

# Keyed by the number of runs this session launched: a click is one run, even if the browser
# delivers its trigger again to a later rerun (Streamlit replays triggers across coalesced
# reruns, and the live view reruns every second).
launches = st.session_state.get(key("launches"), 0)
start = st.button("Start training", type="primary", icon=":material/play_arrow:",
                  disabled=not fits, key=key(f"start.{launches}"))
if start:
    if not fits or config is None:  # the button is disabled then; refuse a forced click too
        st.error(f"Not started. {fit_message}", icon=":material/block:")
    else:
        try:
            run_id = job_manager().submit(name, spec, config)
            st.session_state[key("launches")] = launches + 1
        except SpecError as exc:  # ConfigError is one too
            st.error("Not started:", icon=":material/error:")
            for problem in exc.problems:
                show_problem(problem, st)
        except (StoreError, OSError, RuntimeError, DataError) as exc:
            st.error(f"Not started: {exc}", icon=":material/error:")
        else:
            watch(run_id)
            st.toast(f"Queued {name}", icon=":material/play_arrow:")

# The run this session watches: kept as an id, restored from the URL after a reload.
st.subheader("Progress")
try:
    recent = run_store().list(limit=RUNS_SHOWN)
except StoreError as exc:
    recent = []
    st.warning(f"The run store cannot be read just now ({exc}).", icon=":material/warning:")
ids = [run.id for run in recent]
selected = st.session_state.get("selected_run") or st.query_params.get("run")
if selected not in ids:
    selected = None
st.session_state["selected_run"] = selected
labels = {run.id: f"{run.model} · {run.id}" for run in recent}
picker = picker_key("watch", selected)
st.selectbox("Watching", ids, key=picker, format_func=labels.get,
             index=None if selected is None else ids.index(selected),
             placeholder="Start a run above, or pick one here or in the table below",
             on_change=on_watch_change, args=(picker,))
if selected is not None:
    active = not next(run for run in recent if run.id == selected).status.terminal
    st.fragment(live, run_every=LIVE_REFRESH_S if active else None)(selected, active)

st.subheader("All runs on this server")
st.caption("Everyone's runs, newest first. Pick a row to watch it above.")
st.fragment(runs_table, run_every=TABLE_REFRESH_S)(selected)
