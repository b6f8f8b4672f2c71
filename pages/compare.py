"""Compare: pick runs, see their curves overlaid and a table of what each cost (parameters,
FLOPs), how fast it trained and how accurate it ended, each model beside the textbook's row.

`cnnlab.views.compare` builds the table and gathers the curves; `cnnlab.views.curves` draws them.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from cnnlab.errors import CnnlabError
from cnnlab.runs.store import Run, Status
from cnnlab.views.compare import COLUMNS, compare_table, curves_for, textbook_references
from cnnlab.views.curves import overlaid_curves
from cnnlab.views.text import markdown_text, run_option
from pages._shared import run_store

REFRESH_S = 2.0  # while a chosen run trains, curves and table redraw this often


def default_choice(runs: list[Run]) -> list[str]:
    """The run picked on another page, else the newest two that finished."""
    wanted = st.session_state.get("selected_run")
    if any(r.id == wanted for r in runs):
        return [wanted]
    return [r.id for r in runs if r.status is Status.DONE][:2] or [r.id for r in runs][:1]


def table_frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(COLUMNS)).rename(columns=COLUMNS)


st.title("Compare runs")
st.caption("Curves overlaid and the numbers side by side, each model beside the textbook's "
           "result for it (d2l chapter 7: 10 epochs on the full 60,000 training images, "
           "on the book's GPU).")

try:
    runs = run_store().list()
except CnnlabError as exc:  # the store itself failed (disk, permissions): say so
    st.error(f"Cannot read the runs: {markdown_text(str(exc))}", icon=":material/error:")
    st.stop()
if not runs:
    st.info("No runs yet. Start one on the **Train** page, or from a terminal: "
            "`python -m cnnlab train bn-lenet`.", icon=":material/info:")
    st.stop()

by_id = {r.id: r for r in runs}
chosen = st.multiselect("Runs", list(by_id), default=default_choice(runs), key="compare.runs",
                        format_func=lambda i: run_option(by_id[i]),
                        placeholder="Choose runs to compare")
if not chosen:
    st.info("Choose one or more runs above.", icon=":material/info:")
    st.stop()

live = any(by_id[i].status in (Status.RUNNING, Status.QUEUED) for i in chosen)


@st.fragment(run_every=REFRESH_S if live else None)
def results(run_ids: list[str]) -> None:
    store = run_store()
    try:
        rows = compare_table(store, run_ids)
        curves = curves_for(store, run_ids)
        still_live = any(store.get(i).status in (Status.RUNNING, Status.QUEUED) for i in run_ids)
    except KeyError as exc:  # a run deleted meanwhile
        st.warning(f"A run is gone: {markdown_text(str(exc))}. Choose again.",
                   icon=":material/warning:")
        return
    references = textbook_references(rows)

    left, right = st.columns(2)
    left.plotly_chart(overlaid_curves(curves, "test_acc", references=references))
    right.plotly_chart(overlaid_curves(curves, "train_loss"))

    st.subheader("Cost, speed and accuracy")
    st.dataframe(
        table_frame(rows), hide_index=True,
        column_config={
            COLUMNS["params"]: st.column_config.NumberColumn(format="localized"),
            COLUMNS["flops"]: st.column_config.NumberColumn(format="compact",
                                                            help="FLOPs of one forward pass"),
            COLUMNS["time_s"]: st.column_config.NumberColumn(format="%.1f"),
            COLUMNS["examples_per_s"]: st.column_config.NumberColumn(format="%.0f"),
            COLUMNS["test_acc"]: st.column_config.NumberColumn(format="%.3f"),
            COLUMNS["vs_book"]: st.column_config.NumberColumn(
                format="%+.3f", help="this run's test accuracy minus the book's"),
        },
    )
    notes = ["The book's rows: 10 epochs on all 60,000 training images, examples/s on its "
             "GPU with a DataLoader pipeline; its time per run was not printed."]
    if any(row["data"] == "sample" and row["id"] for row in rows):
        notes.append("Runs on the bundled **sample** (3,000 training images) are not comparable "
                     "in accuracy with the book's.")
    if any(row["id"] and row["textbook"] is None for row in rows):
        notes.append("The book trained no model like some of these runs, so they have no book row.")
    st.caption(" ".join(notes))
    if live and not still_live:
        st.rerun()  # the runs finished: redraw once without the timer


results(chosen)
