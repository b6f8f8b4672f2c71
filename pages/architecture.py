"""Architecture: pick a preset, see its layers, totals and diagram."""

import streamlit as st

from cnnlab.diagram import to_dot
from cnnlab.inspect import inspect_spec
from cnnlab.specs import PRESETS

st.title("Architecture")
st.caption("The networks of *Dive into Deep Learning*, chapter 7, shaped on the meta device: "
           "nothing is allocated, so every choice updates at once.")

name = st.selectbox("Preset", list(PRESETS), key="preset")
spec = PRESETS[name]
table = inspect_spec(spec)

totals = st.columns(4)
totals[0].metric("Input", f"{spec.in_channels}x{spec.input_size}x{spec.input_size}")
totals[1].metric("Parameters", f"{table.total_params:,}")
totals[2].metric("FLOPs per image", f"{table.total_flops:,}")
totals[3].metric("Output", "x".join(map(str, table.output_shape)))

st.subheader("Layers")
st.dataframe(table.to_dict()["layers"], hide_index=True, use_container_width=True)

st.subheader("Diagram")
st.graphviz_chart(to_dot(spec))
