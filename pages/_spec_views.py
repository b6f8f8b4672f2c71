"""The Architecture page's views below the editor, one tab each: every block's (or layer's)
costs, where the parameters and FLOPs are, the training memory, the diagram and the code with
the exports, and presets side by side. Only the open tab runs: the browser draws one heavy
section, not all of them (bench/architecture_page.py: the first load fell from 5.5 s to under
3). The rows and columns come from `cnnlab.views.cost_tables`.
"""

from __future__ import annotations

import hashlib

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from cnnlab.analysis import codegen
from cnnlab.analysis.diagram import GraphvizMissing, to_dot, to_svg
from cnnlab.analysis.layers import LayerTable, inspect_spec
from cnnlab.analysis.table_text import human_bytes
from cnnlab.arch.parse import spec_from_json
from cnnlab.arch.presets import PRESETS
from cnnlab.arch.specs import Spec
from cnnlab.views import cost_tables
from cnnlab.views.figures import params_flops_bars

VIEWS = ("Layers", "Cost", "Memory", "Diagram and code", "Side by side")
SHARE = st.column_config.ProgressColumn(min_value=0.0, max_value=1.0, format="percent")
COUNT = st.column_config.NumberColumn(format="localized")
COMPACT = st.column_config.NumberColumn(format="compact")


# --- pure results, cached by the spec's JSON -------------------------------------------------


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


@st.cache_data(max_entries=64)
def side_by_side_rows(spec_jsons: tuple[tuple[str, str], ...], batch_size: int) -> dict:
    return cost_tables.compare_specs(
        {name: spec_from_json(text) for name, text in spec_jsons}, batch_size)


# --- the views ---------------------------------------------------------------------------------


def layers(table: LayerTable) -> None:
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
        exports(spec, name, dot, code)
        st.caption("The PyTorch code below runs on its own and rebuilds this network, with the "
                   "same parameter names as cnnlab's.")
        st.code(code, language="python", height=900, wrap_lines=True)


def exports(spec: Spec, name: str, dot: str, code: str) -> None:
    """The spec as JSON, the model as PyTorch code and the diagram as SVG, to download."""
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


def side_by_side(spec: Spec) -> None:
    st.subheader("Side by side, without training")
    inputs = st.columns([4, 1])
    chosen = inputs[0].multiselect(
        "Models", [cost_tables.THIS_MODEL, *PRESETS], default=list(cost_tables.SIDE_BY_SIDE),
        key="side_by_side",
        help="Exercise 7.4.3: compare AlexNet, VGG, NiN and GoogLeNet's parameters and "
             "compute. Each preset at its own input size.")
    batch_size = inputs[1].number_input("Training batch", min_value=1, max_value=65536,
                                        value=128, key="side_by_side_batch")
    specs = tuple((name, shown.to_json())
                  for name, shown in cost_tables.side_by_side_specs(chosen, spec).items())
    if not specs:
        st.info("Pick models to compare.", icon=":material/info:")
        return
    st.dataframe(pd.DataFrame(side_by_side_rows(specs, batch_size)), hide_index=True,
                 column_config={"params": COUNT, "FLOPs": COMPACT, "MACs": COMPACT,
                                "smallest input": st.column_config.NumberColumn(
                                    help="Pixels: the smallest height = width it runs at")})
    st.caption(f"Training memory: float32 weights, gradients and activations at batch "
               f"{batch_size} with plain SGD; inference: one image.")


def views(spec: Spec, table: LayerTable, export_name: str) -> None:
    """The tabs, the open one drawn; which is open lives in the URL (`?view=Memory`)."""
    tabs = dict(zip(VIEWS, st.tabs(list(VIEWS), key="view", on_change="rerun",
                                   bind="query-params")))
    shown = {"Layers": lambda: layers(table), "Cost": lambda: cost(spec, table),
             "Memory": lambda: memory(table),
             "Diagram and code": lambda: diagram_and_code(spec, export_name),
             "Side by side": lambda: side_by_side(spec)}
    for name, tab in tabs.items():
        if tab.open:
            with tab:
                shown[name]()
