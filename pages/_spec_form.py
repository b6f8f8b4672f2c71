"""The Architecture page's editing form: one widget per spec field, laid out per family as
`cnnlab.views.spec_form` lists them (as the chapter describes each network). Each widget shows
the spec, records the user's change and keeps a slot under itself for its messages;
`cnnlab.views.editor` decides what the changes come to.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from cnnlab.arch.specs import CHOICES, Spec
from cnnlab.views import editor as editing
from cnnlab.views import spec_form
from cnnlab.views.spec_form import Field

WIDGETS = "form.widgets"  # session key: widget key -> (field, kind) of the form last drawn


def shown_value(spec: Spec, field: str, kind: str) -> Any:
    """What a widget of `kind` shows for the spec's `field`."""
    if kind == "text":
        return editing.text_of(spec, field)
    if kind == "table":
        return editing.rows_of(spec, field)
    value = getattr(spec, field)
    return float(value) if kind == "float" else value


def widget_value(spec: Spec, key: str, field: str, kind: str) -> Any:
    """What widget `key` holds now; a data editor holds its changes to the rows it showed."""
    value = st.session_state[key]
    if kind == "text":
        return str(value).strip()
    if kind == "table":
        return editing.apply_table_delta(editing.rows_of(spec, field), value)
    return value


def on_edit(key: str) -> None:
    """Apply the form's edits before the script runs, so one run draws the new spec everywhere
    (the tables and the preset picker above the edited widget included) without a second run."""
    st.session_state["last_edited"] = key  # decides between conv_arch's text and table
    spec = st.session_state["spec"]
    edits: dict[str, list[tuple[str, Any]]] = {}
    mine = f"edit.{spec.family}."  # a run cut short by a family change leaves others' widgets
    for widget, (field, kind) in st.session_state.get(WIDGETS, {}).items():
        if widget.startswith(mine) and widget in st.session_state:
            value = widget_value(spec, widget, field, kind)
            if value != shown_value(spec, field, kind):
                edits.setdefault(field, []).append((widget, value))
    result = editing.resolve_edits(spec, edits, key)
    if result.applied is not None:
        st.session_state["spec"] = result.applied


class Form:
    """The editing widgets of one run. Each widget shows the spec (set again from it whenever
    the spec changed since the widgets last showed it), records the user's change, and keeps
    a slot under itself for its messages."""

    def __init__(self, spec: Spec):
        self.spec = spec
        self.resync = st.session_state.get("shown") != spec
        self.edits: dict[str, list[tuple[str, Any]]] = {}  # field -> [(widget key, value)]
        self.slots: dict[str, Any] = {}  # widget key -> container under it
        self.keys: dict[str, list[str]] = {}  # field -> its widgets' keys
        self.kinds: dict[str, tuple[str, str]] = {}  # widget key -> (field, kind), for on_edit
        st.session_state[WIDGETS] = self.kinds

    def show(self, key: str, value: Any) -> None:
        """Point widget `key` at `value` when the spec changed or the widget is new."""
        if self.resync or key not in st.session_state:
            st.session_state[key] = value

    def key(self, field: str, kind: str = "") -> str:
        return ".".join(["edit", self.spec.family, field] + ([kind] if kind else []))

    def record(self, field: str, kind: str, key: str, value: Any, shown: Any) -> None:
        self.kinds[key] = (field, kind)
        self.slots[key] = st.container()
        self.keys.setdefault(field, []).append(key)
        if value != shown:
            self.edits.setdefault(field, []).append((key, value))

    def field(self, field: Field) -> None:
        """The widget of `field`'s kind (a `Form` method of that name)."""
        getattr(self, field.kind)(field)

    def fields(self, fields: tuple[Field, ...]) -> None:
        for field in fields:
            self.field(field)

    def number(self, field: Field) -> None:
        kind = "float" if isinstance(field.step, float) else "int"
        shown = shown_value(self.spec, field.name, kind)
        key = self.key(field.name)
        self.show(key, shown)
        value = st.number_input(field.label, min_value=field.low, max_value=field.high,
                                step=field.step, key=key, help=field.help,
                                format="%.2f" if kind == "float" else "%d",
                                on_change=on_edit, args=(key,))
        self.record(field.name, kind, key, value, shown)

    def text(self, field: Field) -> None:
        shown = shown_value(self.spec, field.name, "text")
        key = self.key(field.name, "text")
        self.show(key, shown)
        value = st.text_input(field.label, key=key, help=field.help, on_change=on_edit,
                              args=(key,))
        self.record(field.name, "text", key, value.strip(), shown)

    def table(self, field: Field) -> None:
        layout = editing.TABLE_FIELDS[self.spec.family, field.name]
        rows = shown_value(self.spec, field.name, "table")
        config: dict[str, Any] = {  # only a padding may be 0
            c: st.column_config.NumberColumn(c, min_value=0 if c == "padding" else 1, step=1,
                                             format="%d", required=True)
            for c in layout.columns}
        config |= {c: st.column_config.CheckboxColumn(c, default=False) for c in layout.flags}
        config |= {c: st.column_config.Column(c, disabled=True) for c in layout.computed}
        key = self.key(field.name, "table")
        st.caption(field.label)
        edited = st.data_editor(pd.DataFrame(rows), key=key, num_rows="dynamic",
                                hide_index=False, column_config=config, on_change=on_edit,
                                args=(key,))
        self.record(field.name, "table", key, edited.to_dict("records"), rows)

    def choice(self, field: Field) -> None:
        """Buttons for a text field, offering exactly what the checks accept (CHOICES)."""
        shown = shown_value(self.spec, field.name, "value")
        key = self.key(field.name)
        self.show(key, shown)
        value = st.segmented_control(field.label, list(CHOICES[field.name]), key=key,
                                     required=True, help=field.help, on_change=on_edit,
                                     args=(key,))
        self.record(field.name, "value", key, value, shown)

    def toggle(self, field: Field) -> None:
        shown = shown_value(self.spec, field.name, "value")
        key = self.key(field.name)
        self.show(key, shown)
        value = st.toggle(field.label, key=key, help=field.help, on_change=on_edit, args=(key,))
        self.record(field.name, "value", key, value, shown)

    def slot_for(self, problem_field: str, used: dict[str, tuple[str, Any]], fallback: Any) -> Any:
        """The container under the widget a problem belongs to: the one whose edit was tried,
        else the field's first widget, else `fallback`."""
        field = editing.widget_field(self.spec.family, problem_field)
        if field in used:
            return self.slots[used[field][0]]
        keys = self.keys.get(field)
        return self.slots[keys[0]] if keys else fallback


# --- the family's own fields -------------------------------------------------------------------


def edit_family(form: Form) -> None:
    """The fields of the spec's family in two columns, as `cnnlab.views.spec_form` lays them
    out (as the chapter describes each network); the normalization switches and the family's
    caption at the foot of the right one."""
    layout = spec_form.FAMILY_FORMS[form.spec.family]
    left, right = st.columns(list(layout.widths))
    with left:
        form.fields(layout.left)
    with right:
        form.fields(layout.right)
        if layout.norm is not None:
            with st.expander(spec_form.NORM_TITLE, expanded=False):
                form.fields(spec_form.norm_fields(layout.norm))
        if layout.note is not None:
            st.caption(layout.note(form.spec))
