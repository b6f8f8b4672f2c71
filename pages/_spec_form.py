"""The Architecture page's editing form: one widget per spec field, laid out per family as
the chapter describes each network. Each widget shows the spec, records the user's change and
keeps a slot under itself for its messages; `cnnlab.views.editor` decides what the changes
come to.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from cnnlab.arch.specs import CHOICES, Spec
from cnnlab.views import editor as editing

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

    def number(self, field: str, label: str, *, low: int | None = None,
               high: int | None = None, step: float = 1, help: str | None = None) -> None:
        kind = "float" if isinstance(step, float) else "int"
        shown = shown_value(self.spec, field, kind)
        key = self.key(field)
        self.show(key, shown)
        value = st.number_input(label, min_value=low, max_value=high, step=step, key=key,
                                help=help, format="%.2f" if isinstance(step, float) else "%d",
                                on_change=on_edit, args=(key,))
        self.record(field, kind, key, value, shown)

    def text(self, field: str, label: str, help: str | None = None) -> None:
        shown = shown_value(self.spec, field, "text")
        key = self.key(field, "text")
        self.show(key, shown)
        value = st.text_input(label, key=key, help=help, on_change=on_edit, args=(key,))
        self.record(field, "text", key, value.strip(), shown)

    def table(self, field: str, label: str) -> None:
        layout = editing.TABLE_FIELDS[self.spec.family, field]
        rows = shown_value(self.spec, field, "table")
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
        self.record(field, "table", key, edited.to_dict("records"), rows)

    def choice(self, field: str, label: str, help: str | None = None) -> None:
        """Buttons for a text field, offering exactly what the checks accept (CHOICES)."""
        shown = shown_value(self.spec, field, "value")
        key = self.key(field)
        self.show(key, shown)
        value = st.segmented_control(label, list(CHOICES[field]), key=key, required=True, help=help,
                                     on_change=on_edit, args=(key,))
        self.record(field, "value", key, value, shown)

    def toggle(self, field: str, label: str, help: str | None = None) -> None:
        shown = shown_value(self.spec, field, "value")
        key = self.key(field)
        self.show(key, shown)
        value = st.toggle(label, key=key, help=help, on_change=on_edit, args=(key,))
        self.record(field, "value", key, value, shown)

    def slot_for(self, problem_field: str, used: dict[str, tuple[str, Any]], fallback: Any) -> Any:
        """The container under the widget a problem belongs to: the one whose edit was tried,
        else the field's first widget, else `fallback`."""
        field = editing.widget_field(self.spec.family, problem_field)
        if field in used:
            return self.slots[used[field][0]]
        keys = self.keys.get(field)
        return self.slots[keys[0]] if keys else fallback


# --- one editor per family, as the chapter describes each network ----------------------------


def edit_norm(form: Form, inactive: str = "") -> None:
    """The normalization switches of the families that use BatchNorm (exercises of 7.5).
    `inactive` names the switch that turns them on, for the help text."""
    needs = f" (with {inactive})" if inactive else ""
    with st.expander("Normalization (exercises 7.5)", expanded=False):
        form.choice("norm_kind", "Norm layer",
                    help="What stands where the network puts BatchNorm" + needs + ": batch "
                    "(d2l 7.5), group (GroupNorm, gcd(32, C) groups), layer (one group: "
                    "mean and variance over C, H, W), none. Exercise 7.5.7 asks about other "
                    "normalizations.")
        form.toggle("conv_bias", "Bias on layers a norm follows",
                    help="Exercise 7.5.1: a norm's shift beta absorbs the bias of the conv "
                    "(or dense) layer before it, so that bias can go: fewer parameters, "
                    "the same function")
        form.toggle("norm_affine", "Learned gamma and beta",
                    help="Exercise 7.5.5: off fixes gamma = 1 and beta = 0 (affine=False), "
                    "2 x C fewer parameters per norm layer")


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
        form.toggle("norm_in_head", "…and after each hidden dense layer",
                    help="Exercise 7.5.3: do we need batch norm in every layer? Only with "
                    "batch norm on")
        form.choice("head", "Head",
                    help="dense: the book's (flatten, dense layers); gap: global average "
                    "pooling as in NiN (d2l 7.3), then the dense layers in `hidden` (empty it "
                    "for one Linear): watch the parameter count collapse (exercise 7.2.2 asks "
                    "why VGG needs so much memory)")
        edit_norm(form, "batch norm on")


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
        edit_norm(form, "batch norm on")
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
        form.choice("batch_norm", "Batch norm",
                    help="scratch: the textbook's BatchNorm class (7.5.3); torch: nn.BatchNorm2d")
        form.choice("activation", "Activation")
        form.choice("pool", "Pooling")
        form.toggle("norm_in_head", "Normalize the dense layers too",
                    help="7.5.4 does; exercise 7.5.3 asks whether every layer needs it")
        form.number("dropout", "Dropout after dense layers", step=0.05,
                    help="Exercise 7.1.5: dropout after each hidden dense layer")
        edit_norm(form, "batch norm torch; scratch is batch norm only")


def edit_resnet(form: Form) -> None:
    left, right = st.columns([3, 2])
    with left:
        form.table("stages", "One resnet_block per row: num_residuals Residual blocks of "
                   "channels; every stage after the first halves height and width.")
    with right:
        form.number("stem_channels", "Stem channels", low=1, high=8192)
        form.choice("block", "Residual block",
                    help="basic: two 3x3 convs; bottleneck: 1x1, 3x3, 1x1 (exercise 7.6.2)")
        form.toggle("preact", "Pre-activation (BN, ReLU, conv)", help="Exercise 7.6.3")
        edit_norm(form)


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
        form.choice("transition_pool", "Transition pooling",
                    help="Exercise 7.7.1: why average pooling rather than max-pooling in the "
                    "transition layer?")
        edit_norm(form)


EDITORS = {"alexnet": edit_alexnet, "vgg": edit_vgg, "nin": edit_nin,
           "googlenet": edit_googlenet, "lenet": edit_lenet, "resnet": edit_resnet,
           "densenet": edit_densenet}
