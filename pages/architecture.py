"""Architecture: pick a network of chapter 7, edit its spec, and see what it costs.

Every edit is validated before it is applied. The last valid spec stays in
`st.session_state["spec"]`, and on screen, while a message next to the field says what to fix.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import pandas as pd
import streamlit as st

from cnnlab.analysis import codegen
from cnnlab.views import editor as editing
from cnnlab.arch import specs
from cnnlab.analysis.diagram import GraphvizMissing, to_dot, to_svg
from cnnlab.views.editor import FAMILY_TITLES, presets_for
from cnnlab.analysis.layers import inspect_spec
from cnnlab.analysis.table_text import human_bytes
from cnnlab.arch.specs import PRESETS, Spec
from cnnlab.arch.checks import validate
from cnnlab.errors import Problem, warnings
from cnnlab.shapes import shape_text
from cnnlab.views.figures import params_flops_bars

DEFAULT_PRESET = "alexnet"
OPTIMIZERS = {"sgd": "SGD", "momentum": "SGD with momentum", "adam": "Adam"}


# --- pure results, cached by the spec's JSON -------------------------------------------------


@st.cache_data(max_entries=256)
def spec_warnings(spec_json: str) -> list[Problem]:
    return warnings(validate(specs.from_json(spec_json)))


@st.cache_data(max_entries=64)
def diagram(spec_json: str, collapse: bool) -> str:
    return to_dot(specs.from_json(spec_json), collapse=collapse)


@st.cache_data(max_entries=64)
def python_code(spec_json: str, name: str) -> str:
    return codegen.to_python(specs.from_json(spec_json), name=name)


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


def on_edit(key: str) -> None:
    st.session_state["last_edited"] = key  # decides between conv_arch's text and table


# --- the editing form ------------------------------------------------------------------------


def markdown_text(text: str) -> str:
    """User text shown literally: no emphasis, links or LaTeX ($) from what someone typed."""
    return re.sub(r"([\\`*_\[\]<>|$~])", r"\\\1", text)


def sentence(text: str) -> str:
    return markdown_text(text if text.endswith((".", "?", "!")) else text + ".")


def show_problem(problem: Problem, where: Any) -> None:
    text = f"`{problem.field}`: {sentence(problem.message)} **Fix:** {sentence(problem.fix)}"
    if problem.severity == "error":
        where.error(text, icon=":material/error:")
    else:
        where.warning(text, icon=":material/warning:")


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

    def show(self, key: str, value: Any) -> None:
        """Point widget `key` at `value` when the spec changed or the widget is new."""
        if self.resync or key not in st.session_state:
            st.session_state[key] = value

    def key(self, field: str, kind: str = "") -> str:
        return ".".join(["edit", self.spec.family, field] + ([kind] if kind else []))

    def record(self, field: str, key: str, value: Any, shown: Any) -> None:
        self.slots[key] = st.container()
        self.keys.setdefault(field, []).append(key)
        if value != shown:
            self.edits.setdefault(field, []).append((key, value))

    def number(self, field: str, label: str, *, low: int | None = None,
               high: int | None = None, step: float = 1, help: str | None = None) -> None:
        shown = getattr(self.spec, field)
        shown = float(shown) if isinstance(step, float) else shown
        key = self.key(field)
        self.show(key, shown)
        value = st.number_input(label, min_value=low, max_value=high, step=step, key=key,
                                help=help, format="%.2f" if isinstance(step, float) else "%d",
                                on_change=on_edit, args=(key,))
        self.record(field, key, value, shown)

    def text(self, field: str, label: str, help: str | None = None) -> None:
        shown = editing.text_of(self.spec, field)
        key = self.key(field, "text")
        self.show(key, shown)
        value = st.text_input(label, key=key, help=help, on_change=on_edit, args=(key,))
        self.record(field, key, value.strip(), shown)

    def table(self, field: str, label: str) -> None:
        layout = editing.TABLE_FIELDS[self.spec.family, field]
        rows = editing.rows_of(self.spec, field)
        config: dict[str, Any] = {  # only a padding may be 0
            c: st.column_config.NumberColumn(c, min_value=0 if c == "padding" else 1, step=1,
                                             format="%d", required=True)
            for c in layout.columns}
        config |= {c: st.column_config.CheckboxColumn(c, default=False) for c in layout.flags}
        config |= {c: st.column_config.Column(c, disabled=True) for c in layout.computed}
        key = self.key(field, "table")
        st.caption(label)
        edited = st.data_editor(pd.DataFrame(rows), key=key, num_rows="dynamic",
                                hide_index=False, column_config=config, on_change=on_edit,
                                args=(key,))
        self.record(field, key, edited.to_dict("records"), rows)

    def choice(self, field: str, label: str, options: list[str], help: str | None = None) -> None:
        shown = getattr(self.spec, field)
        key = self.key(field)
        self.show(key, shown)
        value = st.segmented_control(label, options, key=key, required=True, help=help,
                                     on_change=on_edit, args=(key,))
        self.record(field, key, value, shown)

    def toggle(self, field: str, label: str, help: str | None = None) -> None:
        shown = getattr(self.spec, field)
        key = self.key(field)
        self.show(key, shown)
        value = st.toggle(label, key=key, help=help, on_change=on_edit, args=(key,))
        self.record(field, key, value, shown)

    def attempts(self) -> list[dict[str, tuple[str, Any]]]:
        """Edits to try, field -> (widget key, value). A field edited in two widgets at once
        (conv_arch's text and table) is tried from the last one touched first."""
        last = st.session_state.get("last_edited")
        ordered = {f: sorted(s, key=lambda item: item[0] != last) for f, s in self.edits.items()}
        tries = [{f: s[0] for f, s in ordered.items()}]
        if any(len(s) > 1 for s in ordered.values()):
            tries.append({f: s[-1] for f, s in ordered.items()})
        return tries

    def slot_for(self, problem_field: str, used: dict[str, tuple[str, Any]], fallback: Any) -> Any:
        field = editing.widget_field(self.spec.family, problem_field)
        if field in used:
            return self.slots[used[field][0]]
        keys = self.keys.get(field)
        return self.slots[keys[0]] if keys else fallback


# --- one editor per family, as the chapter describes each network ----------------------------


def edit_alexnet(form: Form) -> None:
    left, right = st.columns([3, 2])
    with left:
        form.table("convs", "One row per convolution (channels, kernel, stride, padding); "
                   "tick pool for a 3x3/2 max-pool after it. d2l 7.1.2.")
    with right:
        form.text("hidden", "Dense layers (units)", help="Hidden dense layers, e.g. 4096, 4096")
        form.number("dropout", "Dropout", step=0.05)


def edit_vgg(form: Form) -> None:
    left, right = st.columns([3, 2])
    with left:
        form.text("conv_arch", "conv_arch", help="The textbook's tuple of (num_convs, channels), "
                  "one pair per vgg_block, e.g. ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512))")
        form.table("conv_arch", "The same conv_arch as a table: one vgg_block per row. "
                   "Add or delete rows to change the depth.")
    with right:
        form.text("hidden", "Dense layers (units)", help="Hidden dense layers, e.g. 4096, 4096")
        form.number("dropout", "Dropout", step=0.05)
        form.toggle("batch_norm", "Batch norm after each conv")


def edit_nin(form: Form) -> None:
    left, right = st.columns([3, 2])
    with left:
        form.table("blocks", "One nin_block per row: its conv (channels, kernel, stride, "
                   "padding), then the max-pool after it. A last block maps to the classes.")
    with right:
        form.number("one_by_one", "1x1 convs per block", low=0, high=8,
                    help="The per-pixel MLP of d2l 7.3.1 (exercise 7.3.2)")
        form.number("dropout", "Dropout", step=0.05)


def edit_googlenet(form: Form) -> None:
    left, right = st.columns([3, 2])
    with left:
        form.table("inception", "One Inception block per row: c1 | c2a>c2b | c3a>c3b | c4 "
                   "(d2l 7.4.1); out_channels = c1 + c2b + c3b + c4, before the width.")
    with right:
        form.text("stages", "Inception blocks per stage (b3, b4, b5)", help="e.g. 2, 5, 2")
        form.toggle("batch_norm", "Batch norm after each conv", help="Exercise 7.4.1")
        st.caption(" · ".join(f"**{name}**: {blocks} blocks → {out} channels"
                              for name, blocks, out in editing.stage_channels(form.spec)))


def edit_lenet(form: Form) -> None:
    left, right = st.columns(2)
    with left:
        form.text("conv_channels", "Conv channels", help="The two 5x5 convs, e.g. 6, 16")
        form.text("hidden", "Dense layers (units)", help="e.g. 120, 84")
        form.number("first_padding", "Padding of the first conv", low=0, high=4,
                    help="2 in d2l 6.6, 0 in BN-LeNet (7.5.4)")
    with right:
        form.choice("batch_norm", "Batch norm", ["none", "scratch", "torch"],
                    help="scratch: the textbook's BatchNorm class (7.5.3); torch: nn.BatchNorm2d")
        form.choice("activation", "Activation", ["sigmoid", "relu"])
        form.choice("pool", "Pooling", ["avg", "max"])


def edit_resnet(form: Form) -> None:
    left, right = st.columns([3, 2])
    with left:
        form.table("stages", "One resnet_block per row: num_residuals Residual blocks of "
                   "channels; every stage after the first halves height and width.")
    with right:
        form.number("stem_channels", "Stem channels", low=1, high=8192)
        form.choice("block", "Residual block", ["basic", "bottleneck"],
                    help="basic: two 3x3 convs; bottleneck: 1x1, 3x3, 1x1 (exercise 7.6.2)")
        form.toggle("preact", "Pre-activation (BN, ReLU, conv)", help="Exercise 7.6.3")


def edit_densenet(form: Form) -> None:
    left, right = st.columns(2)
    with left:
        form.text("block_sizes", "Convs per dense block", help="e.g. 4, 4, 4, 4")
        form.number("growth_rate", "Growth rate", low=1, high=1024,
                    help="Channels each conv block adds")
        form.number("stem_channels", "Stem channels", low=1, high=8192)
    with right:
        form.number("compression", "Compression", step=0.05,
                    help="Share of channels a transition block keeps (0.5 in the book)")
        form.toggle("bottleneck", "Bottleneck (DenseNet-BC)",
                    help="A 1x1 conv to 4 x growth rate before each 3x3")


EDITORS = {"alexnet": edit_alexnet, "vgg": edit_vgg, "nin": edit_nin,
           "googlenet": edit_googlenet, "lenet": edit_lenet, "resnet": edit_resnet,
           "densenet": edit_densenet}


# --- formatting ------------------------------------------------------------------------------


def short(n: float) -> str:
    """7_610_000_000 -> '7.61 G'."""
    for factor, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= factor:
            return f"{n / factor:.3g} {unit}"
    return f"{n:,.0f}"


def share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


SHARE = st.column_config.ProgressColumn(min_value=0.0, max_value=1.0, format="percent")
COUNT = st.column_config.NumberColumn(format="localized")
COMPACT = st.column_config.NumberColumn(format="compact")


# --- the page --------------------------------------------------------------------------------

spec: Spec = st.session_state.setdefault("spec", PRESETS[DEFAULT_PRESET])
form = Form(spec)
form.show("family", spec.family)
form.show("preset", editing.preset_to_show(spec, st.session_state.get("preset")))

st.title("Architecture")
st.caption("The networks of *Dive into Deep Learning*, chapter 7, shaped on PyTorch's meta "
           "device: nothing is allocated, so every edit updates the tables at once.")

st.segmented_control("Family", list(FAMILY_TITLES), format_func=FAMILY_TITLES.get,
                     key="family", required=True, on_change=on_family)
top = st.columns([2, 3, 2], vertical_alignment="bottom")
preset = top[0].selectbox("Preset", presets_for(spec.family), key="preset", on_change=on_preset)
changed = editing.changed_fields(PRESETS[preset], spec)
if changed:
    top[1].caption("Edited from the preset: " + ", ".join(f"`{f}`" for f in changed))
    top[1].button("Reset to the preset", on_click=on_preset, icon=":material/undo:")
with top[2].popover("Import a spec (JSON)", icon=":material/upload_file:", width="stretch"):
    upload = st.file_uploader("A spec exported from this page", type=["json"], key="import",
                              on_change=on_import)
if upload is not None:
    imported, import_problems = editing.spec_from_json_bytes(upload.getvalue())
    if imported is None:
        st.error(f"Could not import **{markdown_text(upload.name)}**; the current model stays.",
                 icon=":material/error:")
        for problem in import_problems:
            show_problem(problem, st)
    elif imported == spec:
        st.success(f"Imported **{markdown_text(upload.name)}**.", icon=":material/check:")

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

# Try the edits on a copy; the spec changes only when the candidate has no errors.
applied, problems, used = None, [], {}
for attempt in form.attempts() if form.edits else []:
    candidate, found = editing.apply_edits(spec, {f: v for f, (_, v) in attempt.items()})
    if not used:
        problems, used = found, attempt
    if candidate is not None:
        applied = candidate
        break
if applied is not None and applied != spec:
    st.session_state["spec"] = applied
    st.rerun()  # every widget shows the new spec, the tables above included
st.session_state["shown"] = spec
edit_failed = bool(form.edits) and applied is None
for problem in problems if edit_failed else spec_warnings(spec.to_json()):
    show_problem(problem, form.slot_for(problem.field, used, general))

# --- results ---------------------------------------------------------------------------------

table = inspect_spec(spec)
split = table.conv_fc_split()
st.subheader("Totals")
if edit_failed:
    st.info("Showing the last valid model: fix the problem marked above to update it.",
            icon=":material/info:")
metrics = st.columns(4)
metrics[0].metric("Parameters", f"{table.total_params:,}")
metrics[1].metric("FLOPs per image", short(table.total_flops),
                  help=f"{table.total_flops:,} (2 per multiply-add; convolutions and dense "
                  "layers only)")
metrics[2].metric("Other ops per image", short(table.total_other_ops),
                  help=f"{table.total_other_ops:,}: BN, activations, pooling, additions, "
                  "concatenations and biases, counted from their output sizes")
metrics[3].metric("Input → output", f"{shape_text(table.input_shape)} → "
                  f"{shape_text(table.output_shape)}")

left, right = st.columns(2)
with left:
    st.markdown("**Convolutions vs fully connected layers**")
    other_params = table.total_params - split.conv_params - split.fc_params
    st.dataframe(pd.DataFrame({
        "layers": ["convolutions", "fully connected", "other (batch norm)"],
        "params": [split.conv_params, split.fc_params, other_params],
        "of params": [share(p, table.total_params)
                      for p in (split.conv_params, split.fc_params, other_params)],
        "FLOPs": [split.conv_flops, split.fc_flops, 0],
        "of FLOPs": [share(f, table.total_flops) for f in (split.conv_flops, split.fc_flops, 0)],
    }), hide_index=True, column_config={"params": COUNT, "of params": SHARE,
                                        "FLOPs": COMPACT, "of FLOPs": SHARE})
with right:
    st.markdown("**Memory (float32)**")
    memory_inputs = st.columns(2)
    batch_size = memory_inputs[0].number_input("Training batch size", min_value=1,
                                               max_value=65536, value=128, key="batch_size")
    optimizer = memory_inputs[1].selectbox("Optimizer", list(OPTIMIZERS),
                                           format_func=OPTIMIZERS.get, key="optimizer")
    memory = table.memory(batch_size, optimizer)
    parts = {"weights": memory.weights, "gradients": memory.gradients,
             "optimizer state": memory.optimizer_state, "activations": memory.activations}
    st.dataframe(pd.DataFrame({
        "training": [*parts, "total"],
        "memory": [human_bytes(b) for b in parts.values()] + [human_bytes(memory.total)],
        "share": [share(b, memory.total) for b in parts.values()] + [1.0],
    }), hide_index=True, column_config={"share": SHARE})
    st.caption(f"Predicting one image needs about **{human_bytes(table.inference_memory(1))}**: "
               "the weights and the two largest neighbouring activations.")

st.subheader("Layers: where the parameters and the FLOPs are")
every_layer = st.toggle("Every layer instead of every block", key="every_layer")
st.plotly_chart(params_flops_bars(table, "layer" if every_layer else "block"))

if every_layer:
    rows = table.rows
    frame = pd.DataFrame({
        "layer": [r.path for r in rows], "type": [r.type for r in rows],
        "output": [shape_text(r.output_shape) for r in rows],
        "params": [r.params for r in rows], "FLOPs": [r.flops for r in rows],
        "other ops": [r.other_ops for r in rows],
        "activations": [human_bytes(r.activation_bytes) for r in rows],
        "receptive field": [r.receptive_field for r in rows], "jump": [r.jump for r in rows],
    })
else:
    blocks = table.blocks
    frame = pd.DataFrame({
        "block": [b.name for b in blocks], "type": [b.type for b in blocks],
        "output": [shape_text(b.output_shape) for b in blocks],
        "params": [b.params for b in blocks],
        "of params": [share(b.params, table.total_params) for b in blocks],
        "FLOPs": [b.flops for b in blocks],
        "of FLOPs": [share(b.flops, table.total_flops) for b in blocks],
        "other ops": [b.other_ops for b in blocks],
        "activations": [human_bytes(b.activation_bytes) for b in blocks],
        "receptive field": [b.receptive_field for b in blocks],
    })
st.dataframe(frame, hide_index=True, height=min(36 * (len(frame) + 1) + 2, 600),
             column_config={
                 "block": st.column_config.TextColumn(width="medium"),
                 "layer": st.column_config.TextColumn(width="medium"),
                 "params": COUNT, "FLOPs": COMPACT, "other ops": COMPACT,
                 "of params": SHARE, "of FLOPs": SHARE,
                 "activations": st.column_config.TextColumn(help="Output size per image, float32"),
                 "receptive field": st.column_config.NumberColumn(
                     help="Side of the input patch one output unit sees, in pixels "
                          "(padding included)")})

st.subheader("Diagram and code")
picture, text = st.columns([2, 3], gap="large")
with picture:
    collapse = st.toggle("Collapse repeated blocks", value=True, key="collapse")
    dot = diagram(spec.to_json(), collapse)
    # A fresh container per diagram: the browser's Graphviz fails to animate one graph into
    # another with clusters (GoogLeNet, ResNet, DenseNet) and would keep the old picture.
    with st.container(key=f"diagram-{hashlib.sha1(dot.encode()).hexdigest()[:12]}"):
        st.graphviz_chart(dot)
with text:
    name = (preset if not changed else f"{preset}-edited").replace("-", "_")
    code = python_code(spec.to_json(), name)
    export = st.columns(3)
    export[0].download_button("Spec as JSON", spec.to_json(), file_name=f"{name}.json",
                              mime="application/json", on_click="ignore",
                              icon=":material/data_object:", width="stretch")
    export[1].download_button("PyTorch code", code, file_name=f"{name}.py",
                              mime="text/x-python", on_click="ignore", icon=":material/code:",
                              width="stretch")
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
