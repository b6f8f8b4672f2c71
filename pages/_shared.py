"""What every page uses: the objects one server shares (the run store, the job manager) and
the one way problems are shown.

Pages import them: `from pages._shared import job_manager, run_store, run_events`. Each is
created once per server process (`st.cache_resource`), so every student's session sees the
same queue and the same runs. The store's directory is $CNNLAB_RUNS (default ./runs), read
when the store is first created; runs train in local worker processes, or on the Ray cluster
that $CNNLAB_RAY_ADDRESS names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import streamlit as st

from cnnlab.errors import CnnlabError, Problem
from cnnlab.runs.executors import ExecutorError
from cnnlab.runs.jobs import JobManager, make_job_manager
from cnnlab.runs.live import RunEvents
from cnnlab.runs.store import RunStore, StoreError
from cnnlab.views.text import error_markdown, problem_markdown, refusal

T = TypeVar("T")


@st.cache_resource(show_spinner=False)
def _run_store() -> RunStore:
    return RunStore()


def _or_stop(make: Callable[[], T], error: type[Exception]) -> T:
    """What `make()` returns; on `error`, the page stops with its message and fix (escaped:
    it names paths and addresses, which are not Markdown). A cached maker that raised cached
    nothing, so the next rerun tries again."""
    try:
        return make()
    except error as exc:
        st.error(error_markdown(exc), icon=":material/error:")
        st.stop()


def run_store() -> RunStore:
    """The run store in $CNNLAB_RUNS (SQLite; safe to use from any session and thread).

    A store that cannot be opened (its records lost, a damaged file) stops the page with the
    store's own message and fix."""
    return _or_stop(_run_store, StoreError)


@st.cache_resource(show_spinner=False)
def _job_manager() -> JobManager:
    return make_job_manager(run_store())


def job_manager() -> JobManager:
    """The queue: one training worker process (or Ray task) per run, a bounded number at once.

    When $CNNLAB_RAY_ADDRESS names a cluster this server cannot use (Ray not installed, the
    cluster down), the page says why and how to fix it, and stops."""
    return _or_stop(_job_manager, ExecutorError)


@st.cache_resource(show_spinner=False)
def run_events() -> RunEvents:
    """Metric events of runs, fetched incrementally (`after_seq`) and shared by all sessions:
    thirty students watching one run cost one small query a second, not thirty full reads."""
    return RunEvents(run_store())


# --- showing problems --------------------------------------------------------------------------


def show_problem(problem: Problem, where: Any = st) -> None:
    """One problem as an alert in `where` (a container under its field, or the page): an error
    in red, a warning in yellow; its text escaped, so what a user typed shows literally."""
    if problem.severity == "error":
        where.error(problem_markdown(problem), icon=":material/error:")
    else:
        where.warning(problem_markdown(problem), icon=":material/warning:")


def show_problems(problems: list[Problem], slot: Callable[[str], Any] = lambda field: st) -> None:
    """Every problem next to its field: `slot(field)` is the container under that field's
    widget (the page itself by default)."""
    for problem in problems:
        show_problem(problem, slot(problem.field))


def queue_or_explain(submit: Callable[[], T], refused: str) -> T | None:
    """`submit()`'s result (queued runs), or None after saying why nothing was queued: the
    field-named problems of a SpecError or ConfigError, or the error of a worker process
    that could not be started. `refused` opens the message ("Not started")."""
    try:
        return submit()
    except CnnlabError as exc:
        st.error(refusal(refused, exc), icon=":material/error:")
        show_problems(exc.problems)
    except (OSError, RuntimeError) as exc:  # a worker process could not be started
        st.error(f"{refused}: {error_markdown(exc)}", icon=":material/error:")
    return None
