"""Class: the teacher's page, listed when the server has a teacher token
($CNNLAB_TEACHER_TOKEN). Lock or hide Train fields, set per-student limits, pin runs to every
Compare page, see the whole queue with owners and clear runs. The rules live in
`cnnlab.runs.classroom`; this page lays out their widgets.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from cnnlab.errors import CnnlabError
from cnnlab.runs import classroom
from cnnlab.runs.store import Run
from cnnlab.views.queue_display import queue_rows
from cnnlab.views.text import error_markdown, owned, refusal
from pages._class import class_settings, gate, person, save_settings, token_form
from pages._shared import job_manager, run_store, show_problems

LIMIT_LABELS = {"max_queued": "Runs waiting or training per student",
                "max_epochs": "Epochs per run", "max_input_size": "Input size (px)"}


def locks_form(settings: classroom.ClassSettings) -> tuple[dict[str, str], list[str]]:
    """The fields to lock, each with its value as text, and those to hide."""
    st.subheader("Locked fields")
    st.caption("Every student's Train page shows a locked field disabled with your value (or "
               "not at all when hidden), and every run they queue gets that value.")
    chosen = st.multiselect("Lock", classroom.LOCKABLE, default=list(settings.locked),
                            key="class.locked")
    texts = {}
    for field in chosen:
        current = settings.locked.get(field)
        texts[field] = st.text_input(f"Value of {field}", key=f"class.lock.{field}",
                                     value="" if current is None else str(current))
    hidden = st.multiselect("Hide these locked fields", chosen, key="class.hidden",
                            default=[f for f in settings.hidden if f in chosen])
    return texts, hidden


def limits_form(settings: classroom.ClassSettings) -> dict[str, int | None]:
    st.subheader("Limits per student")
    st.caption("Checked when a student queues a run; empty means no limit.")
    cells = st.columns(len(LIMIT_LABELS))
    return {limit: cell.number_input(label, min_value=1, step=1, value=getattr(settings, limit),
                                     key=f"class.{limit}")
            for cell, (limit, label) in zip(cells, LIMIT_LABELS.items())}


def settings_section(runs: list[Run]) -> None:
    settings = class_settings()
    texts, hidden = locks_form(settings)
    limits = limits_form(settings)
    st.subheader("Pinned runs")
    by_id = {run.id: run for run in runs}
    pinned = st.multiselect("Open on every student's Compare page", list(by_id),
                            default=[i for i in settings.pinned if i in by_id],
                            format_func=lambda i: owned(by_id[i]), key="class.pinned")
    if st.button("Save for everyone", type="primary", icon=":material/save:", key="class.save"):
        try:
            save_settings(classroom.settings_from_form(
                texts, hidden=hidden, pinned=pinned, **limits))
        except CnnlabError as exc:
            st.error(refusal("Not saved", exc), icon=":material/error:")
            show_problems(exc.problems)
            return
        st.success("Saved: every session applies it within a few seconds.",
                   icon=":material/check_circle:")


def queue_section() -> None:
    st.subheader("The queue")
    active = job_manager().active()
    if not active:
        st.caption("Nothing is waiting or training.")
        return
    st.dataframe(pd.DataFrame(queue_rows(active)), hide_index=True)


def clear_section(runs: list[Run]) -> None:
    st.subheader("Clear runs")
    by_id = {run.id: run for run in runs}
    clears = st.session_state.get("class.clears", 0)  # a fresh picker once its runs are gone
    chosen = st.multiselect("Runs to clear", list(by_id), key=f"class.clear.{clears}",
                            format_func=lambda i: owned(by_id[i]))
    if st.button("Cancel or delete them", icon=":material/delete_sweep:", key="class.clear.go",
                 disabled=not chosen, help="Waiting and training runs are cancelled; "
                                           "ended runs are deleted with their metrics"):
        try:
            cancelled, deleted = gate().clear(chosen)
        except CnnlabError as exc:
            st.error(error_markdown(exc), icon=":material/error:")
            return
        st.session_state["class.clears"] = clears + 1
        st.toast(f"Cancelled {len(cancelled)}, deleted {len(deleted)}.",
                 icon=":material/check_circle:")
        st.rerun()


st.title("Class")
if not classroom.is_class():
    st.info(f"Start the server with ${classroom.TOKEN_ENV} set to use teacher mode.",
            icon=":material/info:")
    st.stop()
if not person().teacher:
    st.caption("For the teacher: enter the token to manage the class.")
    token_form()
    st.stop()
try:
    all_runs = run_store().list(limit=500)
except CnnlabError as exc:
    st.error(f"Cannot read the runs: {error_markdown(exc)}", icon=":material/error:")
    st.stop()
settings_section(all_runs)
queue_section()
clear_section(all_runs)
