"""The sidebar on every page: what this server trains on, and the queue everyone shares."""

from __future__ import annotations

import streamlit as st

from cnnlab.errors import CnnlabError
from cnnlab.runs.live import progress
from cnnlab.training import resources
from cnnlab.views import queue_display as queue_view
from cnnlab.views.links import share_link
from cnnlab.views.text import error_markdown, markdown_text
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


@st.fragment(run_every=QUEUE_REFRESH_S)
def queue() -> None:
    st.markdown("**Queue**")
    try:
        active = job_manager().active()
        running, waiting = queue_view.split(active)
        for run in running:
            fraction, text = queue_view.progress_line(run, progress(run, run_events().get(run)))
            st.progress(fraction, text=text)
    except CnnlabError as exc:
        st.caption(f"The run store cannot be read just now ({error_markdown(exc)}).")
        return
    for line in queue_view.waiting_lines(waiting, QUEUE_SHOWN):
        st.caption(line)
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
