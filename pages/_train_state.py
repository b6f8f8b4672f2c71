"""The Train page's session state in one place: its widgets' keys ("train.<field>", one subset
widget per data set), the form's values set before its widgets are drawn, and the run this
session watches (`st.session_state["selected_run"]`, kept in the URL too as `?run=`).

`pages/_links.py` sets them to open a lesson's run on the Train page (importing
`pages/train.py` would run that page).
"""

from __future__ import annotations

from typing import Any

import streamlit as st

def key(field: str) -> str:
    return f"train.{field}"


def subset_key(data: str) -> str:
    """The Train form's subset widget for one data set. One widget per set: a browser that has
    not yet drawn the rerun that chose another set still sends the old subset with its next
    edit, and that value then lands on the old set's widget instead of overriding the new
    set's size (seen with ten pages pressing Start at once: "sample" kept 60,000)."""
    return key(f"subset.{data}")


def form_key(field: str, data: str | None = None) -> str:
    """The session key of the Train form's widget for `field`: the subset's is that of `data`
    (default: the data set the form shows now)."""
    if field != "subset":
        return key(field)
    return subset_key(data if data is not None else st.session_state[key("data")])


def first_visit() -> bool:
    """Whether the form has no values in this session yet (every field is set at once)."""
    return key("seed") not in st.session_state


def show_form_values(values: dict[str, Any]) -> None:
    """Point the Train form's widgets at `values` (field -> value) before they are drawn."""
    data = values.get("data", st.session_state.get(key("data")))
    for field, value in values.items():
        st.session_state[form_key(field, data)] = value


def watch(run_id: str | None) -> None:
    st.session_state["selected_run"] = run_id
    if run_id is not None:
        st.query_params["run"] = run_id  # a reload of this tab comes back to the same run


def kept_and_linked() -> tuple[str | None, str | None]:
    """The run this session kept, and the one its URL names (after a reload)."""
    return st.session_state.get("selected_run"), st.query_params.get("run")
