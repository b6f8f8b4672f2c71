"""The sidebar on every page: what this server trains on, and the queue everyone shares."""

from __future__ import annotations

import streamlit as st

from cnnlab.errors import CnnlabError
from cnnlab.runs.live import progress
from cnnlab.runs.store import Run, Status
from cnnlab.training import resources
from cnnlab.views.links import share_link
from cnnlab.views.text import duration, markdown_text
from pages._class import you
from pages._shared import job_manager, run_events

QUEUE_REFRESH_S = 3  # the queue changes when anyone on the server starts or ends a run
QUEUE_SHOWN = 8  # waiting runs listed by name; the rest are counted


@st.cache_resource(show_spinner=False)
def device() -> str:
    return resources.device_summary()  # fixed for the life of the server


@st.cache_data(ttl=60, show_spinner=False)
def data() -> str:
    return resources.data_summary()  # a look at the disk; installing the data shows within a minute


def owned(run: Run) -> str:
    return f" ({markdown_text(run.owner)})" if run.owner else ""


@st.fragment(run_every=QUEUE_REFRESH_S)
def queue() -> None:
    st.markdown("**Queue**")
    try:
        active = job_manager().active()
        running = [run for run in active if run.status is Status.RUNNING]
        waiting = [run for run in active if run.status is Status.QUEUED]
        for run in running:
            now = progress(run, run_events().get(run))
            left = f", {duration(now.eta_s)} left" if now.eta_s is not None else ""
            st.progress(now.fraction or 0.0,
                        text=f"{markdown_text(run.model)}{owned(run)}: {now.fraction or 0:.0%}{left}")
    except CnnlabError as exc:
        st.caption(f"The run store cannot be read just now ({markdown_text(str(exc))}).")
        return
    for place, run in enumerate(waiting[:QUEUE_SHOWN], start=1):
        st.caption(f"{place}. {markdown_text(run.model)}{owned(run)}: waiting")
    if len(waiting) > QUEUE_SHOWN:
        st.caption(f"... and {len(waiting) - QUEUE_SHOWN} more waiting")
    if not active:
        st.caption("Nothing is training. Start a run on the Train page.")


def share() -> None:
    """The view's link, to paste into another browser: every page keeps its state in the URL."""
    with st.popover("Share this view", icon=":material/share:", width="stretch"):
        page_url = st.context.url or ""
        st.caption("Anyone who opens this link on this server sees what you see now.")
        st.code(share_link(page_url, st.query_params.to_dict()), language=None,
                wrap_lines=True)


def show_sidebar() -> None:
    """Device, data and the queue, under the page links."""
    with st.sidebar:
        share()
        you()
        st.markdown("**This server**")
        # Paths and device names are text from the system: an underscore must not italicise.
        st.caption(f":material/memory: Trains on: {markdown_text(device())}")
        st.caption(f":material/dataset: {markdown_text(data())}")
        queue()
