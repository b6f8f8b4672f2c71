"""Architecture: pick a network of chapter 7, edit its spec, and see what it costs.

Every edit is validated before it is applied (`cnnlab.views.editor.resolve_edits`). The last
valid spec stays in `st.session_state["spec"]`, and on screen, while a message next to the
field says what to fix. The form's widgets live in `pages/_spec_form.py`, the views below it
in `pages/_spec_views.py`; the totals and the tables' columns come from
`cnnlab.views.cost_tables`.
"""

from __future__ import annotations

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from cnnlab.analysis.layers import LayerTable, inspect_spec
from cnnlab.analysis.smallest_input import smallest_input
from cnnlab.arch.checks import validate
from cnnlab.arch.parse import spec_from_json
from cnnlab.arch.presets import PRESETS
from cnnlab.arch.specs import Spec
from cnnlab.errors import Problem, warnings
from cnnlab.views import cost_tables, links, spec_form
from cnnlab.views import editor as editing
from cnnlab.views.editor import FAMILY_TITLES, presets_for
from cnnlab.views.text import markdown_text
from pages._links import keep_in_url, link_problems
from pages._shared import show_problem, show_problems
from pages._spec_form import Form, edit_family
from pages._spec_views import views


@st.cache_data(max_entries=256)
def spec_warnings(spec_json: str) -> list[Problem]:
    return warnings(validate(spec_from_json(spec_json)))


# --- choosing a spec (callbacks run before the script, so the widgets below see the result) ---


def use_preset(name: str) -> None:
    st.session_state["spec"] = PRESETS[name]


def on_family() -> None:
    use_preset(presets_for(st.session_state["family"])[0])


def on_preset() -> None:
    use_preset(st.session_state["preset"])


def on_import() -> None:
    upload = st.session_state.get("import")
    if upload is not None:
        spec, _ = editing.spec_from_json_bytes(upload.getvalue())
        if spec is not None:
            st.session_state["spec"] = spec


# --- the page's sections ----------------------------------------------------------------------


def choose(spec: Spec, form: Form) -> tuple[str, list[str]]:
    """Family, preset and import; (the preset shown, the fields edited from it)."""
    form.show("family", spec.family)
    form.show("preset", editing.preset_to_show(spec, st.session_state.get("preset")))
    st.segmented_control("Family", list(FAMILY_TITLES), format_func=FAMILY_TITLES.get,
                         key="family", required=True, on_change=on_family)
    top = st.columns([2, 3, 2], vertical_alignment="bottom")
    preset = top[0].selectbox("Preset", presets_for(spec.family), key="preset",
                              on_change=on_preset)
    changed = editing.changed_fields(PRESETS[preset], spec)
    if changed:
        top[1].caption("Edited from the preset: " + ", ".join(f"`{f}`" for f in changed))
        top[1].button("Reset to the preset", on_click=on_preset, icon=":material/undo:")
    with top[2].popover("Import a spec (JSON)", icon=":material/upload_file:", width="stretch"):
        upload = st.file_uploader("A spec exported from this page", type=["json"], key="import",
                                  on_change=on_import)
    if upload is not None:
        import_result(upload, spec)
    return preset, changed


def import_result(upload, spec: Spec) -> None:
    imported, problems = editing.spec_from_json_bytes(upload.getvalue())
    name = markdown_text(upload.name)
    if imported is None:
        st.error(f"Could not import **{name}**; the current model stays.",
                 icon=":material/error:")
        show_problems(problems)
    elif imported == spec:
        st.success(f"Imported **{name}**.", icon=":material/check:")


def edit(spec: Spec, form: Form) -> bool:
    """The editing form; an edit that works becomes the spec (and the page redraws around it).
    True when the shown edits failed, so the results are the last valid model's."""
    st.subheader("Edit")
    for cell, field in zip(st.columns(len(spec_form.COMMON)), spec_form.COMMON):
        with cell:
            form.field(field)
    edit_family(form)
    general = st.container()
    result = editing.resolve_edits(spec, form.edits, st.session_state.get("last_edited"))
    if result.applied is not None and result.applied != spec:
        st.session_state["spec"] = result.applied
        st.rerun()  # every widget shows the new spec, the tables above included
    st.session_state["shown"] = spec
    failed = bool(form.edits) and result.applied is None
    for problem in result.problems if failed else spec_warnings(spec.to_json()):
        show_problem(problem, form.slot_for(problem.field, result.used, general))
    return failed


def totals(table: LayerTable) -> DeltaGenerator:
    """The layer table's totals; the cell left for the last one (see smallest_total)."""
    *cells, last = st.columns(6)
    for cell, (label, value, help) in zip(cells, cost_tables.table_totals(table)):
        cell.metric(label, value, help=help)
    return last


def smallest_total(cell: DeltaGenerator, spec: Spec) -> None:
    """The smallest input, drawn last: its search takes about 0.1 s for a spec not seen yet
    (cached by the spec without its input size and width), and the rest of the page need not
    wait for it. Until it arrives the browser keeps the previous value in its place."""
    label, value, help = cost_tables.smallest_input_total(smallest_input(spec))
    cell.metric(label, value, help=help)


def spec_from_link() -> Spec:
    """The spec the URL names, else the page's default; a link that cannot be read is
    explained, naming the parameter to fix."""
    spec, problems = editing.from_link(st.query_params.to_dict())
    if problems:
        link_problems(problems)
    return spec


# --- the page --------------------------------------------------------------------------------

@st.fragment
def workbench() -> None:
    """Everything below the title. A fragment: an edit reruns this, not the app around it (the
    page list, the sidebar's queue)."""
    if "spec" not in st.session_state:  # a session's first visit: a pasted link's spec
        st.session_state["spec"] = spec_from_link()
    spec: Spec = st.session_state["spec"]
    form = Form(spec)
    choosing_area, editing_area, totals_area = st.container(), st.container(), st.container()
    # Drawn out of screen order: the parameter count is what an edit is for, so the totals
    # reach the browser first, then the pickers and the form above them, then the views, and
    # the link last (the browser's history update waits behind the count, not before it).
    table = inspect_spec(spec)
    with totals_area:
        st.subheader("Totals")
        last_valid = st.empty()
        smallest_cell = totals(table)
    with choosing_area:
        preset, changed = choose(spec, form)
    with editing_area:
        if edit(spec, form):
            last_valid.info("Showing the last valid model: fix the problem marked above to "
                            "update it.", icon=":material/info:")
    views(spec, table, cost_tables.export_name(preset, bool(changed)))
    smallest_total(smallest_cell, spec)
    keep_in_url(editing.link_query(spec), links.SPEC_KEYS)


st.title("Architecture")
st.caption("The networks of *Dive into Deep Learning*, chapter 7, shaped on PyTorch's meta "
           "device: nothing is allocated, so every edit updates the tables at once.")
workbench()
