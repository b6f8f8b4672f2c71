"""Lessons: the 35 exercises of chapter 7 as cards, one section at a time, for a class.

Each card is answered with the app (`cnnlab.lessons.catalogue`): predict a number, then reveal
the library's value (`cnnlab.lessons.answers`); open an exact configuration on the
Architecture or Train page (`pages/_links.py`); queue a pair or sweep of runs; or, for proofs
and reading, the view that helps. A student's guesses live in their session only.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from cnnlab.errors import CnnlabError
from cnnlab.lessons import answers
from cnnlab.lessons import runs as lesson_runs
from cnnlab.lessons.catalogue import (
    SECTIONS,
    Discussion,
    Exercise,
    Experiment,
    Paired,
    Predict,
    Sweep,
    by_section,
)
from cnnlab.views.text import markdown_text
from pages._links import open_on_architecture, open_on_train
from pages._class import gate
from pages._shared import queue_or_explain, run_store

KINDS = {"predict": "Predict, then reveal", "experiment": "Experiment", "paired": "Paired runs",
         "sweep": "Sweep", "discussion": "Discussion"}
COUNT = st.column_config.NumberColumn(format="localized")
COUNTED = ("params", "FLOPs", "bytes", "value", "params without")
PAGE_FILES = {"inside": "pages/inside.py", "compare": "pages/compare.py",
              "train": "pages/train.py", "architecture": "pages/architecture.py"}
PAGE_TITLES = {"inside": "Inside", "compare": "Compare", "train": "Train",
               "architecture": "Architecture"}


@st.cache_data(show_spinner=False)
def run_names(exercise_id: str) -> list[str]:
    """The names of a card's planned runs (each checked once per server, not per rerun)."""
    from cnnlab.lessons.catalogue import exercise

    return [name for name, _, _ in lesson_runs.planned_runs(exercise(exercise_id))]


# --- one card per kind -----------------------------------------------------------------------


def predict(ex: Exercise, task: Predict) -> None:
    for i, question in enumerate(task.questions):
        k = f"lesson.{ex.id}.{i}"
        if question.is_choice:
            guess = st.selectbox(question.prompt, answers.choices(question), index=None,
                                 key=f"{k}.guess", placeholder="your guess")
        else:
            guess = st.number_input(question.label, value=None,
                                    key=f"{k}.guess", placeholder="your guess", format="%g")
        if st.button("Reveal", key=f"{k}.reveal", disabled=guess is None,
                     icon=":material/visibility:"):
            st.session_state[f"{k}.shown"] = answers.reveal(question, guess)
        shown: answers.Reveal | None = st.session_state.get(f"{k}.shown")
        if shown is not None and shown.guess == guess:  # a new guess hides the old answer
            alert = st.success if shown.right else st.warning
            alert(markdown_text(answers.verdict(shown, question.tolerance)))
            st.dataframe(pd.DataFrame(list(shown.answer.rows)), hide_index=True,
                         column_config={c: COUNT for c in COUNTED})
            if question.measure in lesson_runs.MEMORY_MEASURES:
                measured_beside(question)


def measured_beside(question: answers.Question) -> None:
    """Runs of this exact network on this server: the whole process's estimate and peak."""
    try:
        rows = lesson_runs.measured_runs(run_store(), question.spec)
    except CnnlabError:
        return
    if rows:
        st.caption("Runs of this network on this server: the Train page's estimate before "
                   "launch (the whole process: weights, activations, data, PyTorch itself) "
                   "beside the peak measured while it trained.")
        st.dataframe(pd.DataFrame(rows), hide_index=True)


def experiment(ex: Exercise, task: Experiment) -> None:
    st.caption(f"Expect: {markdown_text(task.expect)}")
    if task.page == "train" and task.config is not None:
        if st.button("Open on the Train page", key=f"lesson.{ex.id}.open",
                     icon=":material/model_training:"):
            open_on_train(task.spec, task.config)
    elif st.button("Open on the Architecture page", key=f"lesson.{ex.id}.open",
                   icon=":material/account_tree:"):
        open_on_architecture(task.spec)


def queue_runs(ex: Exercise, task: Paired | Sweep) -> None:
    names = run_names(ex.id)
    st.caption(f"Expect: {markdown_text(task.expect)}")
    st.caption("Runs: " + ", ".join(markdown_text(n) for n in names))
    k = f"lesson.{ex.id}.queued"
    # Keyed by the groups this session queued: a click is one group, even if a rerun replays it.
    clicks = st.session_state.get(f"{k}.clicks", 0)
    if st.button(lesson_runs.queue_label(len(names)), key=f"{k}.{clicks}",
                 icon=":material/playlist_add:"):
        # Owned by this student, within the teacher's limits.
        queued = queue_or_explain(lambda: lesson_runs.queue(gate(), ex), "Not queued")
        if queued is None:
            return
        ids = queued[1]
        st.session_state[k], st.session_state[f"{k}.clicks"] = ids, clicks + 1
        st.session_state["compare.runs"] = ids  # the Compare page opens on them
    queued = st.session_state.get(k)
    if queued:
        try:
            rows = lesson_runs.run_rows(run_store(), queued)
        except (CnnlabError, KeyError):  # the store is busy, or a run was deleted meanwhile
            rows = []
        st.caption("Queued: status, accuracy and memory (estimated before launch, measured "
                   "while training) as the runs go; rerun the page to refresh.")
        st.dataframe(pd.DataFrame(rows), hide_index=True)
        st.page_link(PAGE_FILES["compare"], label="Compare them", icon=":material/compare_arrows:")


def discussion(ex: Exercise, task: Discussion) -> None:
    st.info(markdown_text(task.why), icon=":material/forum:")
    if task.spec is not None:
        if st.button("Open on the Architecture page", key=f"lesson.{ex.id}.open",
                     icon=":material/account_tree:"):
            open_on_architecture(task.spec)
    else:
        st.page_link(PAGE_FILES[task.page], label=f"Open the {PAGE_TITLES[task.page]} page")


def card(ex: Exercise) -> None:
    with st.container(border=True, key=f"card-{ex.id.replace('.', '-')}"):
        st.markdown(f"**{ex.id}** · {KINDS[ex.kind]}  \n{markdown_text(ex.question)}")
        st.caption(f"Try: {markdown_text(ex.what_to_try)}")
        task = ex.task
        if isinstance(task, Predict):
            predict(ex, task)
        elif isinstance(task, Experiment):
            experiment(ex, task)
        elif isinstance(task, (Paired, Sweep)):
            queue_runs(ex, task)
        else:
            discussion(ex, task)


# --- the page --------------------------------------------------------------------------------

st.title("Lessons")
st.caption("Chapter 7's exercises, answered with the app. Guess first, then reveal the "
           "library's value (within 10% counts as right unless a card says exactly); open a "
           "configuration on another page; or queue runs for the whole class to compare.")
for section, exercises in by_section().items():
    # In the URL (?lessons.7.3=true): a teacher's link opens the class on the same section.
    with st.expander(f"{section} {SECTIONS[section]} · {len(exercises)} exercises",
                     key=f"lessons.{section}", bind="query-params"):
        for ex in exercises:
            card(ex)
