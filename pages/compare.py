"""Compare: pick runs, see their curves overlaid and a table of what each cost (parameters,
FLOPs, memory estimated and measured), how fast it trained and how accurate it ended, each
model beside the textbook's row; the fields that differ between the runs are columns. A group
(a pair or a sweep) can be picked at once, and a sweep is drawn against the value it varied.

`cnnlab.views.compare` builds the table and gathers the curves; `cnnlab.views.curves` and
`cnnlab.views.figures` draw them; `cnnlab.views.report` makes the downloads.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from cnnlab.errors import CnnlabError
from cnnlab.runs.store import groups
from cnnlab.views import report
from cnnlab.views.compare import (
    COLUMNS,
    compare_table,
    curves_for,
    first_choice,
    sweep_points,
    table_columns,
    table_notes,
    textbook_references,
)
from cnnlab.views.curves import overlaid_curves
from cnnlab.views.figures import sweep_figure
from cnnlab.views.text import error_markdown, markdown_text, run_option
from pages._class import class_settings
from pages._shared import run_store

REFRESH_S = 2.0  # while a chosen run trains, curves and table redraw this often


def table_frame(rows: list[dict]) -> pd.DataFrame:
    columns = table_columns(rows)
    return pd.DataFrame(rows, columns=list(columns)).rename(columns=columns)


def on_group_pick() -> None:
    """Choosing a group chooses its runs (before the run picker is drawn)."""
    group = st.session_state["compare.group"]
    if group is not None:
        st.session_state["compare.runs"] = [r.id for r in run_store().list(group=group)][::-1]


def sweep_view(group: str) -> None:
    """A group's final numbers against the value its runs vary."""
    field, points = sweep_points(run_store(), group)
    st.subheader(f"Sweep: {markdown_text(field) if field else 'each run'}")
    st.plotly_chart(sweep_figure(field, points))
    if any(p["diverged"] for p in points):
        st.caption("A red cross marks a run that diverged: it has no accuracy to plot.")


st.title("Compare runs")
st.caption("Curves overlaid and the numbers side by side, each model beside the textbook's "
           "result for it (d2l chapter 7: 10 epochs on the full 60,000 training images, "
           "on the book's GPU).")

try:
    runs = run_store().list()
except CnnlabError as exc:  # the store itself failed (disk, permissions): say so
    st.error(f"Cannot read the runs: {error_markdown(exc)}", icon=":material/error:")
    st.stop()
if not runs:
    st.info("No runs yet. Start one on the **Train** page, or from a terminal: "
            "`python -m cnnlab train bn-lenet`.", icon=":material/info:")
    st.stop()

by_id = {r.id: r for r in runs}
found = groups(runs)
group = None
if found:
    group = st.selectbox("Group (a pair or a sweep)", list(found), index=None,
                         key="compare.group", on_change=on_group_pick, bind="query-params",
                         placeholder="Pick a group to compare its runs",
                         format_func=lambda g: f"{g} ({len(found[g])} runs)")
picked, missing = first_choice(
    runs, st.session_state.get("compare.runs"),
    st.query_params.get_all("compare.runs"),  # a pasted link's runs, on a first visit
    class_settings().pinned, st.session_state.get("selected_run"))
if missing:
    st.warning(f"`compare.runs`: there is no run {markdown_text(', '.join(missing)[:200])} on "
               "this server (deleted, or a link from another one); showing the others.",
               icon=":material/link_off:")
pinned = [i for i in class_settings().pinned if i in by_id]
if pinned:
    st.caption("Pinned by the teacher: " + ", ".join(markdown_text(by_id[i].label) for i in pinned))
st.session_state["compare.runs"] = picked  # set here, not as a default: a group sets it too
chosen = st.multiselect("Runs", list(by_id), key="compare.runs", bind="query-params",
                        format_func=lambda i: run_option(by_id[i]),
                        placeholder="Choose runs to compare")
if not chosen:
    st.info("Choose one or more runs above.", icon=":material/info:")
    st.stop()

live = any(not by_id[i].status.terminal for i in chosen)  # queued or training


@st.fragment(run_every=REFRESH_S if live else None)
def results(run_ids: list[str]) -> None:
    store = run_store()
    try:
        rows = compare_table(store, run_ids)
        curves = curves_for(store, run_ids)
        still_live = any(not store.get(i).status.terminal for i in run_ids)
    except KeyError as exc:  # a run deleted meanwhile
        st.warning(f"A run is gone: {error_markdown(exc)}. Choose again.",
                   icon=":material/warning:")
        return
    references = textbook_references(rows)

    left, right = st.columns(2)
    left.plotly_chart(overlaid_curves(curves, "test_acc", references=references))
    right.plotly_chart(overlaid_curves(curves, "train_loss"))

    st.subheader("Cost, speed and accuracy")
    frame = table_frame(rows)
    st.dataframe(
        frame, hide_index=True,
        column_config={
            COLUMNS["params"]: st.column_config.NumberColumn(format="localized"),
            COLUMNS["flops"]: st.column_config.NumberColumn(format="compact",
                                                            help="FLOPs of one forward pass"),
            COLUMNS["macs"]: st.column_config.NumberColumn(format="compact"),
            COLUMNS["time_s"]: st.column_config.NumberColumn(format="%.1f"),
            COLUMNS["examples_per_s"]: st.column_config.NumberColumn(format="%.0f"),
            COLUMNS["test_acc"]: st.column_config.NumberColumn(format="%.3f"),
            COLUMNS["vs_book"]: st.column_config.NumberColumn(
                format="%+.3f", help="this run's test accuracy minus the book's, for runs "
                                     "on the book's full data only"),
            COLUMNS["memory_estimated"]: st.column_config.NumberColumn(
                format="%.0f", help="the estimate made before launch"),
            COLUMNS["memory_measured"]: st.column_config.NumberColumn(
                format="%.0f", help="peak resident memory of the worker on a CPU (an upper "
                                    "bound for a Ray worker, which outlives runs); "
                                    "torch.cuda.max_memory_allocated on a GPU"),
        },
    )
    left, right = st.columns(2)
    left.download_button("This table as CSV", frame.to_csv(index=False), "compare.csv",
                         "text/csv", icon=":material/download:", key="compare.csv")
    right.download_button("These runs' settings and results as CSV",
                          report.runs_csv([store.get(i) for i in run_ids]), "runs.csv",
                          "text/csv", icon=":material/download:", key="compare.runs_csv")
    st.caption(table_notes(rows))
    if live and not still_live:
        st.rerun()  # the runs finished: redraw once without the timer


results(chosen)
if group is not None:
    sweep_view(group)
