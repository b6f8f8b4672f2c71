"""One run live and every run in a table: the Train page's lower half. Each part redraws in a
fragment of its own (`st.fragment(run_every=...)`), so a polling chart does not rerun the form.

The run this session watches is kept as an id in `st.session_state["selected_run"]` and in the
URL (`?run=`), so a reload comes back to it (`pages/_train_state.py`).
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from cnnlab.errors import CnnlabError
from cnnlab.runs.classroom import may_change
from cnnlab.runs.live import Progress, progress
from cnnlab.runs.store import Run, Status
from cnnlab.views import report, run_display
from cnnlab.views.curves import training_curves
from cnnlab.views.text import error_markdown, markdown_text, progress_text, run_option
from pages._class import gate, person
from pages._shared import job_manager, run_events, run_store
from pages._train_state import kept_and_linked, key, watch

LIVE_REFRESH_S = 1
TABLE_REFRESH_S = 3
RUNS_SHOWN = 500


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
    columns = run_display.runs_columns(runs, [progress(run, run_events().get(run))
                                              for run in runs])
    columns["created"] = pd.to_datetime(columns["created"], unit="s", utc=True)
    return pd.DataFrame(columns)


# --- choosing the run to watch ------------------------------------------------------------


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


def cancel(run_id: str) -> None:
    try:
        gate().cancel(run_id)  # the owner or the teacher only; NotAllowed says whose run it is
    except (KeyError, CnnlabError) as exc:
        st.session_state[key("cancel_error")] = str(exc)


def rename(run_id: str) -> None:
    try:
        gate().rename(run_id, st.session_state[key(f"rename.{run_id}")].strip() or None)
    except (KeyError, CnnlabError) as exc:
        st.session_state[key("cancel_error")] = str(exc)


def delete(run_id: str) -> None:
    try:
        gate().delete(run_id)  # an ended run only: its metrics and checkpoints go with it
    except (KeyError, CnnlabError) as exc:
        st.session_state[key("cancel_error")] = str(exc)
    else:
        st.session_state.pop("selected_run", None)


# --- live progress of one run ----------------------------------------------------------------


def live(run_id: str, polling: bool) -> None:
    """One run: its place in the queue, or progress, numbers and curves. Re-drawn every second
    while `polling`; a full rerun when the run ends, so the polling stops."""
    try:
        run = run_store().get(run_id)
        events = run_events().get(run)
    except KeyError:
        st.info("That run is gone from the run store.", icon=":material/info:")
        return
    except CnnlabError as exc:
        st.warning(f"The run store cannot be read just now ({error_markdown(exc)}); "
                   "trying again.", icon=":material/warning:")
        return
    if polling and run.status.terminal:
        st.rerun()
    run_head(run)
    if run.status is Status.QUEUED:
        queue_place(run)
        return
    if run.cancel_requested and run.status is Status.RUNNING:
        st.warning("Stopping after the current step...", icon=":material/stop:")
    if run.status is Status.RUNNING and not events:
        st.progress(0.0, text="Starting: the worker loads PyTorch, the data and the model "
                              "(a few seconds)...")
        return
    now = progress(run, events)
    run_state(run, now)
    if events:
        run_curves(run, now, events)
    if run.status.terminal:
        downloads(run, events)


def downloads(run: Run, events: list[dict]) -> None:
    """A finished run's per-epoch metrics as CSV and its one-page report, to keep or hand in."""
    left, right = st.columns(2)
    # Built when clicked, not on every rerun: drawn eagerly, each rerun stored both files in
    # Streamlit's media store and dropped the previous ones, and the browser's check of a
    # dropped file's URL logged a 404 ("Download Button source error", bench/load.py); a
    # class watching finished runs also rebuilt a report per tab per rerun for nothing.
    left.download_button("Metrics per epoch (CSV)", lambda: report.metrics_csv(events),
                         f"{run.id}-metrics.csv", "text/csv", icon=":material/download:",
                         key=key(f"csv.{run.id}"))
    right.download_button("Run report (HTML)", lambda: report.report_html(run, events),
                          f"{run.id}-report.html", "text/html", icon=":material/description:",
                          key=key(f"report.{run.id}"))


def run_head(run: Run) -> None:
    head = st.columns([5, 1], vertical_alignment="center")
    head[0].markdown(run_display.heading(run))
    head[0].caption(run_display.caption(run))
    mine = may_change(person(), run)
    if not run.status.terminal:
        head[1].button("Cancel", key=key(f"cancel.{run.id}"), on_click=cancel, args=(run.id,),
                       icon=":material/stop:", disabled=run.cancel_requested or not mine,
                       width="stretch", help=None if mine else "Only its owner or the teacher")
    elif mine:
        with head[1].popover("Rename or delete", icon=":material/edit:", width="stretch"):
            st.text_input("Name", value=run.name or "", key=key(f"rename.{run.id}"),
                          on_change=rename, args=(run.id,), max_chars=200)
            st.button("Delete this run", key=key(f"delete.{run.id}"), on_click=delete,
                      args=(run.id,), icon=":material/delete:", type="primary",
                      help="Its metrics and checkpoints go with it")
    error = st.session_state.pop(key("cancel_error"), None)
    if error:
        st.error(f"Could not change this run: {markdown_text(error)}", icon=":material/error:")


def queue_place(run: Run) -> None:
    try:
        place = job_manager().queue_position(run.id)
        running = len(run_store().list(Status.RUNNING))
    except (KeyError, CnnlabError):
        place, running = None, 0
    st.info(run_display.queue_text(place, running), icon=":material/hourglass_top:")


def run_state(run: Run, now: Progress) -> None:
    """A progress bar while it trains, how it ended once it has, and its numbers."""
    if run.status is Status.RUNNING:
        st.progress(now.fraction or 0.0,
                    text=f"**{now.fraction or 0:.0%}** · {progress_text(now)}")
    else:
        text, kind = run_display.ending(run)
        icons = {"success": ":material/check_circle:", "error": ":material/error:",
                 "warning": ":material/info:"}
        getattr(st, kind)(text, icon=icons[kind])
    cells = st.columns(5)
    for cell, (label, value, help) in zip(cells, run_display.numbers(run, now)):
        cell.metric(label, value, help=help)


def run_curves(run: Run, now: Progress, events: list[dict]) -> None:
    figure = curves_figure(run.id, events[-1]["seq"], now.planned_epochs or now.epochs,
                           run_display.book_test_acc(run))
    st.plotly_chart(figure, key=key("curves"), config={"displayModeBar": False})
    if not any(e.get("kind") == "epoch" for e in events):
        st.caption("Test accuracy appears after the first epoch, when the test set is scored.")


# --- the run this session watches -------------------------------------------------------


def watched_run() -> str | None:
    """The run this session watches: kept as an id, restored from the URL after a reload."""
    st.subheader("Progress")
    try:
        recent = run_store().list(limit=RUNS_SHOWN)
    except CnnlabError as exc:
        recent = []
        st.warning(f"The run store cannot be read just now ({error_markdown(exc)}).",
                   icon=":material/warning:")
    by_id = {run.id: run for run in recent}
    selected = run_display.watched(*kept_and_linked(), known=by_id)
    st.session_state["selected_run"] = selected
    ids = list(by_id)
    picker = picker_key("watch", selected)
    st.selectbox("Watching", ids, key=picker,
                 format_func=lambda i: run_option(by_id[i], status=False),
                 index=None if selected is None else ids.index(selected),
                 placeholder="Start a run above, or pick one here or in the table below",
                 on_change=on_watch_change, args=(picker,))
    if selected is not None:
        active = not by_id[selected].status.terminal
        st.fragment(live, run_every=LIVE_REFRESH_S if active else None)(selected, active)
    return selected


# --- all runs --------------------------------------------------------------------------------


def runs_table(shown_run: str | None) -> None:
    """Every run in the store, newest first; picking a row shows that run above."""
    if st.session_state.get("selected_run") != shown_run:
        st.rerun()  # a row was picked: redraw the whole page around that run
    try:
        frame = runs_frame()
    except CnnlabError as exc:
        st.warning(f"The run store cannot be read just now ({error_markdown(exc)}).",
                   icon=":material/warning:")
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


def all_runs(selected: str | None) -> None:
    st.subheader("All runs on this server")
    st.caption("Everyone's runs, newest first. Pick a row to watch it above.")
    st.fragment(runs_table, run_every=TABLE_REFRESH_S)(selected)
