"""Train: a model, the textbook's hyperparameters, a memory check, and a run to watch live.

Runs train in worker processes behind a queue that every session on this server shares
(`cnnlab.runs.jobs`); this page keeps only the id of the run it shows (`"selected_run"`), so a
reload, another tab or another student's browser can pick any run from the table below.
`cnnlab.views.train_form` turns the form into a config; `pages/_experiments.py` queues pairs and
sweeps, and `pages/_run_view.py` shows the runs.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from cnnlab.analysis.layers import inspect_spec
from cnnlab.arch.checks import validate
from cnnlab.arch.specs import Spec
from cnnlab.errors import CnnlabError, errors
from cnnlab.runs import classroom
from cnnlab.training import resources
from cnnlab.training.config import OPTIMIZERS, SCHEDULES, TrainConfig
from cnnlab.views import links, train_form
from cnnlab.views.text import error_markdown, markdown_text
from pages._class import class_settings, gate, person
from pages._experiments import experiments
from pages._links import keep_in_url, link_problems, show_on_train
from pages._run_view import all_runs, watched_run
from pages._train_state import first_visit, form_key, key, show_form_values, subset_key, watch
from pages._shared import queue_or_explain, show_problems

KEEP = "session"  # the settings survive a visit to another page (widgets' persist_state)


# --- callbacks (they run before the script, so the widgets below see what they set) ---------


def reset_to_textbook(spec: Spec) -> None:
    show_form_values(train_form.recipe_values(spec, train_form.HYPERPARAMETERS))


# --- the view in the URL --------------------------------------------------------------------


def open_link() -> None:
    """On a session's first visit, the model and settings a pasted link names (`?model=vgg11
    &lr=0.05`); a parameter that cannot be read is named, and its default shown."""
    if not first_visit():
        return
    opened = train_form.from_link(st.query_params.to_dict(), st.session_state.get("spec"),
                                  resources.full_data_found(), resources.gpu_names())
    if opened is None:
        return
    spec, config, problems = opened
    if problems:
        link_problems(problems)
    show_on_train(spec, config, as_preset=True)


def link_to(spec: Spec, config: TrainConfig) -> None:
    """The URL names the model and the settings that differ from its first ones."""
    keep_in_url(train_form.link_query(spec, config, resources.full_data_found(),
                                      resources.gpu_names()), links.TRAIN_KEYS)


# --- the form ----------------------------------------------------------------------------------


def choose_model() -> tuple[Spec, bool]:
    """The model: the one being edited on the Architecture page, or any preset; and whether it
    can be built (its problems are shown when not)."""
    st.subheader("Model")
    edited: Spec | None = st.session_state.get("spec")
    locked = locks().get("model")  # the teacher's model for everyone; Start applies it again
    shown = train_form.model_choice(st.session_state.get(key("model")), edited, locked)
    if st.session_state.get(key("model")) != shown:
        st.session_state[key("model")] = shown
    picked = st.selectbox(
        "Model", train_form.model_choices(edited), key=key("model"), persist_state=KEEP,
        label_visibility="collapsed", disabled=locked is not None,
        help="Locked by the teacher" if locked else None,
        format_func=lambda choice: train_form.model_option(choice, edited))
    spec = train_form.chosen_spec(picked, edited)
    return spec, shown_if_built(spec)


def shown_if_built(spec: Spec) -> bool:
    """Whether `spec` can be built: its size under the picker if so, else its problems."""
    problems = errors(validate(spec))
    if problems:
        st.error("This model cannot be built; fix it on the Architecture page.",
                 icon=":material/error:")
        show_problems(problems)
        return False
    try:
        table = inspect_spec(spec)
    except CnnlabError as exc:
        st.error(f"This model cannot be built: {error_markdown(exc)}", icon=":material/error:")
        return False
    st.caption(train_form.model_caption(spec, table))
    return True


def start_values(spec: Spec, buildable: bool) -> None:
    """Every field from the textbook on a first visit; the recipe again for a new model."""
    values = train_form.values_to_show(
        spec, buildable, first_visit=first_visit(),
        recipe_for=st.session_state.get(key("recipe_for")),
        full_found=resources.full_data_found(), gpus=resources.gpu_names())
    if values:
        show_form_values(values)
        st.session_state[key("recipe_for")] = spec


def locks() -> dict[str, Any]:
    """The fields the teacher fixed for this session's person (none for the teacher)."""
    return classroom.locks_for(class_settings(), person())


class Form:
    """The config's widgets: each keeps its value in st.session_state["train.<field>"] (kept
    across pages), with a slot under it for the field's problems. A field the teacher locked
    shows the teacher's value, disabled, or nothing when hidden."""

    def __init__(self) -> None:
        self.slots: dict[str, Any] = {}
        self.locked, self.hidden = locks(), class_settings().hidden

    def __call__(self, widget: Any, field: str, label: str, **options: Any) -> None:
        if field in self.locked:
            st.session_state[form_key(field)] = self.locked[field]
            if field in self.hidden:
                return
            options.update(disabled=True, help="Locked by the teacher")
        widget(label, key=form_key(field), persist_state=KEEP, **options)
        self.slots[field] = st.container()

    def slot(self, field: str) -> Any:
        return self.slots.get(field, st)


def hyperparameters(spec: Spec, form: Form) -> None:
    st.subheader("Hyperparameters")
    head = st.columns([4, 1], vertical_alignment="center")
    head[0].caption(train_form.recipe_note(spec))
    head[1].button("Textbook values", on_click=reset_to_textbook, args=(spec,),
                   icon=":material/undo:", width="stretch",
                   help="Set every hyperparameter back to the textbook's")
    # No bounds on the number inputs: TrainConfig checks every value and says what to fix.
    row = st.columns(4)
    with row[0]:
        form(st.number_input, "epochs", "Epochs", step=1)
    with row[1]:
        form(st.number_input, "batch_size", "Batch size", step=32)
    with row[2]:
        form(st.number_input, "lr", "Learning rate", step=0.01, format="%g")
    with row[3]:
        form(st.selectbox, "optimizer", "Optimizer", options=OPTIMIZERS,
             format_func=train_form.OPTIMIZER_NAMES.get)
    row = st.columns(4)
    with row[0]:
        form(st.number_input, "momentum", "Momentum", step=0.1, format="%g",
             disabled=not train_form.uses_momentum(st.session_state[key("optimizer")]),
             help="SGD only; the book's train_ch6 uses none")
    with row[1]:
        form(st.number_input, "weight_decay", "Weight decay", step=1e-4, format="%g",
             help="L2 penalty; the book uses none here")
    with row[2]:
        form(st.number_input, "label_smoothing", "Label smoothing", step=0.05, format="%g")
    with row[3]:
        form(st.selectbox, "schedule", "Learning-rate schedule", options=SCHEDULES,
             format_func=train_form.SCHEDULE_NAMES.get)


def offer(field: str, options: list[str]) -> list[str]:
    """`options` for a choice; one no longer offered (the full set removed, a GPU gone) falls
    back to the first that is."""
    if st.session_state.get(key(field)) not in options:
        st.session_state[key(field)] = options[0]
    return options


def data_and_device(form: Form) -> None:
    st.subheader("Data and device")
    full_found, gpus = resources.full_data_found(), resources.gpu_names()
    data_options = offer("data", train_form.data_options(full_found))
    device_options = offer("device", train_form.device_options(gpus))
    row = st.columns(4)
    with row[0]:
        form(st.radio, "data", "Fashion-MNIST", options=data_options,
             format_func=train_form.DATA_NAMES.get)
        if not full_found:
            st.caption("The full set is not installed here (`apt install dataset-fashion-mnist`).")
    # A data set first chosen trains on all of it (its own subset widget, see subset_key).
    data = st.session_state[key("data")]
    st.session_state.setdefault(subset_key(data), resources.train_size(data))
    with row[1]:
        form(st.number_input, "subset", "Training images", step=1000,
             help="Fewer than all: a class-balanced subset, drawn with the seed")
    with row[2]:
        form(st.radio, "device", "Device", options=device_options, horizontal=True,
             format_func=lambda device: train_form.device_name(device, gpus))
        if not gpus:
            st.caption(f"No GPU on this server: runs train on its CPU ({resources.cpu_cores()} "
                       "cores). 28 px models take a minute an epoch; 224 px ones, hours.")
    with row[3]:
        form(st.number_input, "seed", "Seed", step=1,
             help="Same seed, same weights and batch order")
    with st.expander("More options"):
        row = st.columns(4)
        with row[0]:
            form(st.number_input, "max_steps", "Stop after this many steps", step=10,
                 placeholder="all", help="Empty trains every epoch; a small number makes a quick "
                 "test run")
        with row[1]:
            form(st.number_input, "log_every", "Log every (steps)", step=1,
                 help="How often the curves get a point")
        with row[2]:
            form(st.toggle, "flip", "Random left-right flips")
        with row[3]:
            form(st.toggle, "bn_recalibration", "Precise BN",
                 help="Before each evaluation, recompute BatchNorm's statistics over "
                      f"{train_form.PRECISE_BN_BATCHES} training batches. Off: the moving "
                      "averages, as the book does")


def checked_config(form: Form) -> TrainConfig | None:
    """The form's config, or None after showing each problem under its field."""
    values = {field: st.session_state[form_key(field)] for field in train_form.FIELDS}
    config, problems = train_form.config_from_form(values)
    show_problems(problems, form.slot)
    return config


def launch(spec: Spec, config: TrainConfig | None) -> None:
    """The memory check and the start button; a click queues one run and watches it."""
    st.subheader("Launch")
    check = train_form.Launch(False, "")
    if config is None:
        st.caption("Fix the problems marked above to start a run.")
    else:
        check = train_form.launch_check(spec, config)
        if check.fits:
            st.info(check.message, icon=":material/memory:")
        else:
            st.error(check.message, icon=":material/block:")
        if check.breakdown:
            st.caption(check.breakdown)
    # Keyed by the number of runs this session launched: a click is one run, even if the
    # browser delivers its trigger again to a later rerun (Streamlit replays triggers across
    # coalesced reruns, and the live view reruns every second).
    launches = st.session_state.get(key("launches"), 0)
    queued_name = st.session_state.pop(key("queued_toast"), None)
    if queued_name is not None:
        st.toast(f"Queued {markdown_text(queued_name)}", icon=":material/play_arrow:")
    name = train_form.run_name(st.text_input(
        "Run name", key=key("name"), max_chars=train_form.MAX_NAME,
        placeholder="optional, e.g. 'BN-LeNet at lr 0.5'", help="Shown wherever runs are listed"))
    if not st.button("Start training", type="primary", icon=":material/play_arrow:",
                     disabled=not check.fits, key=key(f"start.{launches}")):
        return
    if not check.fits or config is None:  # the button is disabled then; refuse a forced click
        st.error(f"Not started. {check.message}", icon=":material/block:")
        return
    model = train_form.model_name(spec)
    run_id = queue_or_explain(lambda: gate().submit(model, spec, config, name=name),
                              "Not started")
    if run_id is None:
        return
    st.session_state[key("launches")] = launches + 1
    watch(run_id)
    # Rerun at once so the button is drawn under its new key: until then the page shows the
    # old one, and a second Start pressed before the next full rerun (the run's end, for a run
    # waiting in a long queue) was dropped as a replayed click. The toast rides along.
    st.session_state[key("queued_toast")] = name or model
    st.rerun()


# --- the page --------------------------------------------------------------------------------

st.title("Train")
st.caption("Train a network on Fashion-MNIST in the background. Runs wait in one queue shared "
           "by everyone on this server; start one, then watch it learn below.")
open_link()
model, buildable = choose_model()
start_values(model, buildable)
form = Form()
hyperparameters(model, form)
data_and_device(form)
config = checked_config(form)
if buildable and config is not None:
    link_to(model, config)
launch(model, config if buildable else None)
experiments(model, config if buildable else None)
all_runs(watched_run())
