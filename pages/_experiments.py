"""The Train page's pairs and sweeps: the watched run duplicated with one field changed, or the
form's model and settings queued once per value of one field, as one group to compare
(`cnnlab.runs.experiments`; `cnnlab.views.train_form.duplicate` and `sweep` never raise for
bad input). A click queues one group: the buttons are keyed by the groups this session queued.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from cnnlab.arch.specs import Spec
from cnnlab.training.config import TrainConfig
from cnnlab.views import run_display, train_form
from cnnlab.views.text import markdown_text
from pages._class import gate
from pages._shared import run_store, show_problems
from pages._train_state import kept_and_linked, key, watch


def queued(result: train_form.Queued, slot: Any) -> None:
    """Watch the first run of a queued group, or show the problems under the inputs."""
    if result.problems:
        show_problems(list(result.problems), lambda field: slot)
        return
    st.session_state[key("groups")] = st.session_state.get(key("groups"), 0) + 1
    watch(result.ids[-1])
    slot.success(f"Queued {len(result.ids)} runs as group *{markdown_text(result.group)}*; "
                 "compare them on the **Compare** page.", icon=":material/done_all:")


def duplicate_form(run_id: str | None) -> None:
    """Pair the watched run with a copy that differs in one field."""
    try:
        run = run_store().get(run_id) if run_id else None
    except KeyError:
        run = None
    if run is None:
        st.caption("Watch a run (below) to duplicate it with one change.")
        return
    st.caption(f"The run you watch, **{markdown_text(run.label)}**, and a copy with one field "
               "changed: same seed, same data.")
    row = st.columns([2, 2, 1], vertical_alignment="bottom")
    field = row[0].selectbox("Field to change", train_form.experiment_fields(run.spec),
                             key=key("pair.field"))
    value = row[1].text_input("New value", key=key("pair.value"), placeholder="e.g. 0.5 or none")
    slot = st.container()
    # Keyed by the groups this session queued, as the Start button is: a click is one group.
    groups = st.session_state.get(key("groups"), 0)
    if row[2].button("Duplicate", icon=":material/content_copy:", key=key(f"pair.go.{groups}")):
        queued(train_form.duplicate(gate(), run.id, field, value,
                                    st.session_state.get(key("name"), "")), slot)


def sweep_form(spec: Spec, config: TrainConfig | None) -> None:
    """One run of the form's model and settings per value of one field."""
    if config is None:
        st.caption("Fix the problems marked above to sweep.")
        return
    st.caption("The model and settings above, once per value: a group to compare.")
    row = st.columns([2, 2, 1], vertical_alignment="bottom")
    field = row[0].selectbox("Field to sweep", train_form.experiment_fields(spec),
                             key=key("sweep.field"))
    values = row[1].text_input("Values", key=key("sweep.values"),
                               placeholder="e.g. 0.01, 0.1, 1, 10, 50")
    slot = st.container()
    groups = st.session_state.get(key("groups"), 0)
    if row[2].button("Sweep", icon=":material/stacked_line_chart:", key=key(f"sweep.go.{groups}")):
        queued(train_form.sweep(gate(), spec, config, field, values,
                                st.session_state.get(key("name"), "")), slot)


def experiments(spec: Spec, config: TrainConfig | None) -> None:
    """The Train page's "Pairs and sweeps": the watched run with one change, or the form's
    model and settings once per value."""
    st.subheader("Pairs and sweeps")
    pair, many = st.tabs(["Duplicate with one change", "Sweep"])
    with pair:
        duplicate_form(run_display.watched(*kept_and_linked()))  # the store says if it is gone
    with many:
        sweep_form(spec, config)
