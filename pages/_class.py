"""Who is at this browser, and the class settings every page applies (`cnnlab.runs.classroom`).

The display name stays in this browser: a cookie, set by a two-line script when the name is
picked and read back from `st.context.cookies` when a new session starts (a reload, a new tab).
Not the URL: a name there would travel with every shared link, and whoever opened one would
act as its author. Teacher mode is kept in this session only; the token itself is kept nowhere.
"""

from __future__ import annotations

import json
import time
from urllib.parse import unquote

import streamlit as st

from cnnlab.errors import CnnlabError
from cnnlab.runs import classroom
from cnnlab.runs.classroom import ClassGate, ClassSettings, Person
from cnnlab.views.text import markdown_text
from pages._shared import job_manager, run_store

NAME_COOKIE = "cnnlab_name"
COOKIE_DAYS = 180
SETTINGS_TTL_S = 3  # a teacher's change reaches every session within this
WRONG_TOKEN_DELAY_S = 1.5  # slows guessing; sleeps this session's script thread only
NAME, TEACHER = "you.name", "you.teacher"


@st.cache_data(ttl=SETTINGS_TTL_S, show_spinner=False)
def class_settings() -> ClassSettings:
    """The teacher's settings, read at most every few seconds however many sessions ask."""
    if not classroom.is_class():
        return ClassSettings()  # a single-user lab has no teacher to set any
    return classroom.load(run_store())


def save_settings(settings: ClassSettings) -> None:
    classroom.save(run_store(), settings)
    class_settings.clear()  # this server's sessions see it at once, not after the TTL


def _cookie_name() -> str | None:
    try:
        return classroom.display_name(unquote(st.context.cookies.get(NAME_COOKIE) or ""))
    except CnnlabError:
        return None  # no cookie, or one edited into something that is not a name


def person() -> Person:
    """Who acts in this session. In a single-user lab (no token set) everyone is the teacher."""
    if NAME not in st.session_state:
        st.session_state[NAME] = _cookie_name()
    teacher = not classroom.is_class() or bool(st.session_state.get(TEACHER))
    return Person(st.session_state[NAME], teacher=teacher)


def gate() -> ClassGate:
    """The job manager as this session's person may use it: owner, locks and limits."""
    return ClassGate(job_manager(), person(), class_settings())


def _remember(name: str) -> None:
    # json.dumps quotes the name for JavaScript; "<" escaped so it cannot end the script tag.
    quoted = json.dumps(name).replace("<", "\\u003c")
    st.html(f"<script>document.cookie = '{NAME_COOKIE}=' + encodeURIComponent({quoted}) + "
            f"'; path=/; max-age={COOKIE_DAYS * 86400}; SameSite=Strict';</script>",
            unsafe_allow_javascript=True)


def on_name() -> None:
    try:
        st.session_state[NAME] = classroom.display_name(st.session_state["you.name_input"])
        st.session_state["you.remember"] = True
    except CnnlabError as exc:
        st.session_state["you.error"] = exc.problems[0].message


def on_token() -> None:
    given = st.session_state["you.token"]
    st.session_state["you.token"] = ""  # the token never stays in a widget's value
    if classroom.token_matches(given):
        st.session_state[TEACHER] = True
    else:
        time.sleep(WRONG_TOKEN_DELAY_S)
        st.session_state["you.error"] = "That is not the teacher token."


def you() -> None:
    """The sidebar's "You": a name to pick once, then who you are."""
    if not classroom.is_class():
        return
    me = person()
    st.markdown("**You**")
    if st.session_state.get("you.remember") and me.name:
        # Every run of this session, not once: the script runs only after the browser has
        # fetched Streamlit's HTML component, and a run it missed would lose the name.
        _remember(me.name)
    if me.name is None:
        st.text_input("Your name", key="you.name_input", on_change=on_name,
                      max_chars=classroom.MAX_NAME, placeholder="the name the class knows you by",
                      help="Kept in this browser; your runs show it")
    else:
        st.caption(f":material/person: {markdown_text(me.name)}"
                   + (" · teacher" if me.teacher else ""))
    show_error()


def show_error() -> None:
    error = st.session_state.pop("you.error", None)
    if error:
        st.error(markdown_text(error), icon=":material/error:")


def token_form() -> None:
    """The teacher token's field (the Class page): cleared as soon as it is read."""
    st.text_input("Teacher token", key="you.token", type="password", on_change=on_token,
                  help=f"The {classroom.TOKEN_ENV} the server was started with")
    show_error()
