"""Architecture: pick a network of chapter 7, edit its spec, and see what it costs.

Every edit is validated before it is applied (`cnnlab.views.editor.resolve_edits`). The last
valid spec stays in `st.session_state["spec"]`, and on screen, while a message next to the
field says what to fix. The form's widgets live in `pages/_spec_form.py`; the tables' columns
come from `cnnlab.views.cost_tables`.
"""

from __future__ import annotations

import hashlib

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from cnnlab.analysis import codegen
from cnnlab.analysis.diagram import GraphvizMissing, to_dot, to_svg
from cnnlab.analysis.layers import LayerTable, inspect_spec
from cnnlab.analysis.smallest_input import smallest_input
from cnnlab.analysis.table_text import human_bytes
from cnnlab.arch.checks import validate
from cnnlab.arch.parse import spec_from_json
from cnnlab.arch.presets import PRESETS
from cnnlab.arch.specs import Spec
from cnnlab.errors import Problem, warnings
from cnnlab.shapes import shape_text
from cnnlab.views import cost_tables, links
from cnnlab.views import editor as editing
from cnnlab.views.editor import FAMILY_TITLES, presets_for
from cnnlab.views.figures import params_flops_bars
from cnnlab.views.text import markdown_text, short
from pages._links import keep_in_url, link_problems
from pages._shared import show_problem, show_problems
from pages._spec_form import EDITORS, Form

DEFAULT_PRESET = "alexnet"
VIEWS = ("Layers", "Cost", "Memory", "Diagram and code", "Side by side")
THIS_MODEL = "this model"  # the edited spec, beside the presets in "Side by side"
SHARE = st.column_config.ProgressColumn(min_value=0.0, max_value=1.0, format="percent")
COUNT = st.column_config.NumberColumn(format="localized")
COMPACT = st.column_config.NumberColumn(format="compact")


# --- pure results, cached by the spec's JSON -------------------------------------------------


@st.cache_data(max_entries=256)
def spec_warnings(spec_json: str) -> list[Problem]:
    return warnings(validate(spec_from_json(spec_json)))


@st.cache_data(max_entries=64)
def diagram(spec_json: str, collapse: bool) -> str:
    return to_dot(spec_from_json(spec_json), collapse=collapse)


@st.cache_data(max_entries=64)
def python_code(spec_json: str, name: str) -> str:
    return codegen.to_python(spec_from_json(spec_json), name=name)


@st.cache_resource(max_entries=64, show_spinner=False)
def bars(spec_json: str, level: str) -> go.Figure:
    """The parameter and FLOP bars, built once per spec and shared (Streamlit only reads the
    figure): make_subplots alone takes tens of milliseconds, on every edit."""
    return params_flops_bars(inspect_spec(spec_from_json(spec_json)), level)


@st.cache_resource
def graphviz_installed() -> bool:
    try:
        to_svg("digraph {}")
    except GraphvizMissing:
        return False
    return True


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
    common = st.columns(4)
    with common[0]:
        form.number("input_size", "Input size (pixels)", low=1, high=1024,
                    help="Height = width of the input; Fashion-MNIST is resized to it")
    with common[1]:
        form.number("in_channels", "Input channels", low=1, high=64)
    with common[2]:
        form.number("num_classes", "Classes", low=1, high=100_000)
    with common[3]:
        form.number("width", "Width multiplier", step=0.05,
                    help="Scales every channel count: 0.25 is the textbook's ratio = 4 (d2l 7.2.3)")
    EDITORS[spec.family](form)
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


def totals(spec: Spec, table: LayerTable) -> None:
    metrics = st.columns(6)
    metrics[0].metric("Parameters", f"{table.total_params:,}")
    metrics[1].metric("FLOPs per image", short(table.total_flops),
                      help=f"{table.total_flops:,} (2 per multiply-add; convolutions and dense "
                      "layers only)")
    metrics[2].metric("MACs per image", short(table.total_macs),
                      help=f"{table.total_macs:,} multiply-adds (FLOPs / 2), as torchinfo and "
                      "most papers count them")
    metrics[3].metric("Other ops per image", short(table.total_other_ops),
                      help=f"{table.total_other_ops:,}: BN, activations, pooling, additions, "
                      "concatenations and biases, counted from their output sizes")
    metrics[4].metric("Input → output", f"{shape_text(table.input_shape)} → "
                      f"{shape_text(table.output_shape)}")
    least = smallest_input(spec)  # cached by the spec without its input size
    metrics[5].metric("Smallest input", "none" if least is None else f"{least} px",
                      help="The smallest height = width this network runs at (exercise "
                      "7.4.2). A warning under the input size says when the maps reach 1x1 "
                      "before the last convolution.")


def layers(spec: Spec, table: LayerTable) -> None:
    st.subheader("Every block's shape, parameters, FLOPs and memory")
    every_layer = st.toggle("Every layer instead of every block", key="every_layer")
    columns = cost_tables.layer_rows(table) if every_layer else cost_tables.block_rows(table)
    frame = pd.DataFrame(columns)
    # A receptive field past 2**53 px comes as text (cost_tables.counts): a number column
    # would round it.
    field = (st.column_config.TextColumn if isinstance(columns["receptive field"][0], str)
             else st.column_config.NumberColumn)
    st.dataframe(frame, hide_index=True, height=min(36 * (len(frame) + 1) + 2, 600),
                 column_config={
                     "block": st.column_config.TextColumn(width="medium"),
                     "layer": st.column_config.TextColumn(width="medium"),
                     "params": COUNT, "FLOPs": COMPACT, "MACs": COMPACT,
                     "other ops": COMPACT,
                     "of params": SHARE, "of FLOPs": SHARE,
                     "activations": st.column_config.TextColumn(
                         help="Output size per image, float32"),
                     "receptive field": field(
                         help="Side of the input patch one output unit sees, in pixels "
                              "(padding included)")})


def cost(spec: Spec, table: LayerTable) -> None:
    st.subheader("Where the parameters and the FLOPs are")
    every_layer = st.toggle("Every layer instead of every block", key="bars_every_layer")
    st.plotly_chart(bars(spec.to_json(), "layer" if every_layer else "block"))
    st.markdown("**Convolutions vs fully connected layers**")
    st.dataframe(pd.DataFrame(cost_tables.conv_fc_split(table)), hide_index=True,
                 column_config={"params": COUNT, "of params": SHARE, "FLOPs": COMPACT,
                                "MACs": COMPACT, "of FLOPs": SHARE})


def memory(table: LayerTable) -> None:
    st.subheader("Memory (float32)")
    inputs = st.columns(4)
    batch_size = inputs[0].number_input("Training batch size", min_value=1, max_value=65536,
                                        value=128, key="batch_size")
    optimizer = inputs[1].selectbox("Optimizer", list(cost_tables.OPTIMIZERS),
                                    format_func=cost_tables.OPTIMIZERS.get, key="optimizer")
    st.dataframe(pd.DataFrame(cost_tables.training_memory(table, batch_size, optimizer)),
                 hide_index=True, column_config={"share": SHARE})
    st.caption(f"Predicting one image needs about **{human_bytes(table.inference_memory(1))}**"
               ": the weights and the two largest neighbouring activations.")


def diagram_and_code(spec: Spec, name: str) -> None:
    st.subheader("Diagram and code")
    picture, text = st.columns([2, 3], gap="large")
    with picture:
        collapse = st.toggle("Collapse repeated blocks", value=True, key="collapse")
        dot = diagram(spec.to_json(), collapse)
        # A fresh container per diagram: the browser's Graphviz fails to animate one graph
        # into another with clusters (GoogLeNet, ResNet, DenseNet) and would keep the old one.
        with st.container(key=f"diagram-{hashlib.sha1(dot.encode()).hexdigest()[:12]}"):
            st.graphviz_chart(dot)
    with text:
        code = python_code(spec.to_json(), name)
        export = st.columns(3)
        export[0].download_button("Spec as JSON", spec.to_json(), file_name=f"{name}.json",
                                  mime="application/json", on_click="ignore",
                                  icon=":material/data_object:", width="stretch")
        export[1].download_button("PyTorch code", code, file_name=f"{name}.py",
                                  mime="text/x-python", on_click="ignore",
                                  icon=":material/code:", width="stretch")
        if graphviz_installed():
            export[2].download_button("Diagram as SVG", lambda dot=dot: to_svg(dot),
                                      file_name=f"{name}.svg", mime="image/svg+xml",
                                      on_click="ignore", icon=":material/account_tree:",
                                      width="stretch")
        else:
            export[2].info("SVG export needs Graphviz's `dot`: `sudo apt-get install graphviz` "
                           "(Debian). The diagram here is drawn in the browser without it.")
        st.caption("The PyTorch code below runs on its own and rebuilds this network, with the "
                   "same parameter names as cnnlab's.")
        st.code(code, language="python", height=900, wrap_lines=True)


@st.cache_data(max_entries=64)
def side_by_side_rows(spec_jsons: tuple[tuple[str, str], ...], batch_size: int) -> dict:
    return cost_tables.compare_specs(
        {name: spec_from_json(text) for name, text in spec_jsons}, batch_size)


def side_by_side(spec: Spec) -> None:
    st.subheader("Side by side, without training")
    inputs = st.columns([4, 1])
    chosen = inputs[0].multiselect(
        "Models", [THIS_MODEL, *PRESETS], default=[THIS_MODEL, "alexnet", "vgg11", "nin",
                                                   "googlenet"], key="side_by_side",
        help="Exercise 7.4.3: compare AlexNet, VGG, NiN and GoogLeNet's parameters and "
             "compute. Each preset at its own input size.")
    batch_size = inputs[1].number_input("Training batch", min_value=1, max_value=65536,
                                        value=128, key="side_by_side_batch")
    specs = tuple((name, (spec if name == THIS_MODEL else PRESETS[name]).to_json())
                  for name in chosen)
    if not specs:
        st.info("Pick models to compare.", icon=":material/info:")
        return
    st.dataframe(pd.DataFrame(side_by_side_rows(specs, batch_size)), hide_index=True,
                 column_config={"params": COUNT, "FLOPs": COMPACT, "MACs": COMPACT,
                                "smallest input": st.column_config.NumberColumn(
                                    help="Pixels: the smallest height = width it runs at")})
    st.caption(f"Training memory: float32 weights, gradients and activations at batch "
               f"{batch_size} with plain SGD; inference: one image.")


def spec_from_link() -> Spec:
    """The spec the URL names (`?model=vgg11&width=0.5`), else the default preset; a link
    that cannot be read is explained, naming the parameter to fix."""
    spec, problems = links.spec_from_query(st.query_params.to_dict())
    if problems:
        link_problems(problems)
    return spec or PRESETS[DEFAULT_PRESET]


# --- the page --------------------------------------------------------------------------------

@st.fragment
def workbench() -> None:
    """Everything below the title. A fragment: an edit reruns this, not the app around it (the
    page list, the sidebar's queue)."""
    if "spec" not in st.session_state:  # a session's first visit: a pasted link's spec
        st.session_state["spec"] = spec_from_link()
    spec: Spec = st.session_state["spec"]
    keep_in_url(links.page_spec_query(spec, DEFAULT_PRESET), links.SPEC_KEYS)
    form = Form(spec)
    preset, changed = choose(spec, form)
    editing_area, totals_area = st.container(), st.container()
    # The totals are drawn before the form below which they stand: the parameter count is what
    # an edit is for, and it reaches the browser before the form's widgets are sent again.
    table = inspect_spec(spec)
    with totals_area:
        st.subheader("Totals")
        last_valid = st.empty()
        totals(spec, table)
    with editing_area:
        if edit(spec, form):
            last_valid.info("Showing the last valid model: fix the problem marked above to "
                            "update it.", icon=":material/info:")
    # One view at a time, run only when open: the browser draws one heavy section, not all
    # of them (bench/architecture_page.py: the first load fell from 5.5 s to under 3).
    views = dict(zip(VIEWS, st.tabs(list(VIEWS), key="view", on_change="rerun",
                                    bind="query-params")))
    shown = {"Layers": lambda: layers(spec, table), "Cost": lambda: cost(spec, table),
             "Memory": lambda: memory(table),
             "Diagram and code": lambda: diagram_and_code(
                 spec, cost_tables.export_name(preset, bool(changed))),
             "Side by side": lambda: side_by_side(spec)}
    for name, tab in views.items():
        if tab.open:
            with tab:
                shown[name]()


st.title("Architecture")
st.caption("The networks of *Dive into Deep Learning*, chapter 7, shaped on PyTorch's meta "
           "device: nothing is allocated, so every edit updates the tables at once.")
workbench()
