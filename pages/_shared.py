"""The objects every session of one server shares: the run store and the job manager.

Pages import them: `from pages._shared import job_manager, run_store, run_events`. Each is
created once per server process (`st.cache_resource`), so every student's session sees the
same queue and the same runs. The store's directory is $CNNLAB_RUNS (default ./runs), read
when the store is first created.
"""

from __future__ import annotations

import streamlit as st

from cnnlab.runs.jobs import JobManager
from cnnlab.runs.live import RunEvents
from cnnlab.runs.store import RunStore


@st.cache_resource(show_spinner=False)
def run_store() -> RunStore:
    """The run store in $CNNLAB_RUNS (SQLite; safe to use from any session and thread)."""
    return RunStore()


@st.cache_resource(show_spinner=False)
def job_manager() -> JobManager:
    """The queue: one training worker process per run, a bounded number at once."""
    return JobManager(run_store())


@st.cache_resource(show_spinner=False)
def run_events() -> RunEvents:
    """Metric events of runs, fetched incrementally (`after_seq`) and shared by all sessions:
    thirty students watching one run cost one small query a second, not thirty full reads."""
    return RunEvents(run_store())
