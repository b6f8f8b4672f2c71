"""The Architecture page, run headless through AppTest: pick, edit, see, export, import."""

from __future__ import annotations

import base64
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
import torch
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.testing.v1 import AppTest

from cnnlab.analysis.layers import inspect_spec
from cnnlab.arch.presets import PRESETS, VGG_D
from cnnlab.views.editor import FAMILY_TITLES, presets_for
from cnnlab.views.figures import params_flops_bars

APP = Path(__file__).parent.parent / "app.py"
VGG11_PARAMS, VGG16_PARAMS = "128,806,154", "134,300,362"  # VGG-11 (the book); VGG paper config D


@pytest.fixture
def app() -> AppTest:
    st.cache_resource.clear()  # shared between AppTest instances (streamlit issue #9139)
    st.cache_data.clear()
    return AppTest.from_file(str(APP), default_timeout=60).run()


@pytest.fixture
def downloads(monkeypatch) -> dict[str, bytes]:
    """What the page's download buttons offer, by file name."""
    files: dict[str, bytes] = {}
    add = MediaFileManager.add

    def recording_add(self, data, mimetype, coordinates, file_name=None, *args, **kwargs):
        if file_name:
            files[file_name] = data
        return add(self, data, mimetype, coordinates, file_name, *args, **kwargs)

    monkeypatch.setattr(MediaFileManager, "add", recording_add)
    return files


def pick(at: AppTest, family: str, preset: str | None = None) -> AppTest:
    at.segmented_control(key="family").set_value(family).run()
    if preset is not None:
        at.selectbox(key="preset").set_value(preset).run()
    return at


def open_view(at: AppTest, view: str) -> AppTest:
    """Open one of the page's lazy tabs (only the open one runs)."""
    at.session_state["view"] = view
    return at.run()


def params(at: AppTest) -> str:
    return next(m.value for m in at.metric if m.label == "Parameters")


def edit_table(at: AppTest, key: str, edited=None, added=None, deleted=None) -> AppTest:
    at.session_state[key] = {"edited_rows": edited or {}, "added_rows": added or [],
                             "deleted_rows": deleted or []}
    return at.run()


def table_with(at: AppTest, column: str):
    """The first table or data editor on the page with this column, as a DataFrame."""
    return next(df.value for df in at.dataframe if column in df.value.columns)


def messages(elements) -> str:
    return "\n".join(e.value for e in elements).replace("\\", "")


def bar_names(figure: dict) -> list[str]:
    """The bars' names in the order the x axes show them, after checking every name shown
    has a bar in both charts (parameters on x, FLOPs on x2)."""
    for axis in ("x", "x2"):
        names = set()
        for trace in figure["data"]:
            x = trace["x"]
            if isinstance(x, dict):  # Plotly's typed arrays, base64 encoded
                x = np.frombuffer(base64.b64decode(x["bdata"]), x["dtype"]).tolist()
            if trace.get("xaxis", "x") == axis:
                names |= set(x)
        order = figure["layout"]["xaxis" + axis[1:]]["categoryarray"]
        assert names == set(order)
    return list(order)


def shows_clean(at: AppTest) -> bool:
    return not at.exception and not at.error


# --- every family and preset -----------------------------------------------------------------


def test_the_page_offers_every_family_and_its_presets(app):
    assert shows_clean(app) and app.title[0].value == "Architecture"
    assert app.segmented_control(key="family").options == list(FAMILY_TITLES.values())
    assert app.selectbox(key="preset").options == presets_for("alexnet")


@pytest.mark.parametrize("family", list(FAMILY_TITLES))
def test_every_family_renders_its_first_preset(app, family):
    pick(app, family)
    preset = presets_for(family)[0]
    assert shows_clean(app)
    assert app.selectbox(key="preset").value == preset
    assert params(app) == f"{inspect_spec(PRESETS[preset]).total_params:,}"
    assert not app.get("graphviz_chart") and not app.get("plotly_chart")  # lazy: not open
    assert table_with(app, "block")["block"].tolist() == [
        b.name for b in inspect_spec(PRESETS[preset]).blocks]
    assert open_view(app, "Cost").get("plotly_chart") and not app.get("graphviz_chart")
    assert open_view(app, "Diagram and code").get("graphviz_chart")
    assert not app.get("plotly_chart") and shows_clean(app)


def test_every_preset_renders_without_a_problem(app):
    for name, spec in PRESETS.items():
        pick(app, spec.family, name)
        assert shows_clean(app), name
        assert not app.warning, name
        assert params(app) == f"{inspect_spec(spec).total_params:,}", name


def test_choosing_resnet18_shows_its_textbook_parameter_count(app):
    pick(app, "resnet", "resnet18")
    assert params(app) == "11,178,378"
    open_view(app, "Diagram and code")
    assert "resnet_block1" in app.get("graphviz_chart")[0].proto.spec


# --- editing VGG -----------------------------------------------------------------------------


def test_typing_vgg16s_conv_arch_gives_vgg16s_parameter_count(app):
    pick(app, "vgg")
    assert params(app) == VGG11_PARAMS
    app.text_input(key="edit.vgg.conv_arch.text").set_value(repr(VGG_D)).run()
    assert shows_clean(app) and params(app) == VGG16_PARAMS
    # The table follows the text, and the preset that now matches is named.
    assert table_with(app, "num_convs")["num_convs"].tolist() == [2, 2, 3, 3, 3]
    assert app.selectbox(key="preset").value == "vgg16"


def test_editing_the_table_to_vgg16_gives_vgg16s_parameter_count(app):
    pick(app, "vgg")
    edit_table(app, "edit.vgg.conv_arch.table", edited={
        "0": {"num_convs": 2}, "1": {"num_convs": 2}, "2": {"num_convs": 3},
        "3": {"num_convs": 3}, "4": {"num_convs": 3}})
    assert shows_clean(app) and params(app) == VGG16_PARAMS
    assert app.text_input(key="edit.vgg.conv_arch.text").value == repr(VGG_D)


def test_adding_and_deleting_table_rows_changes_the_depth(app):
    pick(app, "vgg", "vgg11-small")
    edit_table(app, "edit.vgg.conv_arch.table", added=[{"num_convs": 1, "channels": 64}],
               deleted=[0])
    expected = ((1, 128), (2, 256), (2, 512), (2, 512), (1, 64))
    spec = PRESETS["vgg11-small"].replace(conv_arch=expected)
    assert shows_clean(app)
    assert app.text_input(key="edit.vgg.conv_arch.text").value == repr(expected)
    assert params(app) == f"{inspect_spec(spec).total_params:,}"


def test_a_malformed_tuple_shows_an_error_and_keeps_the_last_valid_model(app):
    pick(app, "vgg")
    app.text_input(key="edit.vgg.conv_arch.text").set_value("((1, 64), (1, 128)").run()
    assert not app.exception
    assert "conv_arch" in messages(app.error) and "could not read" in messages(app.error)
    assert params(app) == VGG11_PARAMS
    assert "last valid model" in messages(app.info)
    # Fixing it applies it.
    app.text_input(key="edit.vgg.conv_arch.text").set_value("((1, 64), (1, 128))").run()
    assert shows_clean(app) and params(app) != VGG11_PARAMS


def test_a_bad_table_cell_shows_an_error_next_to_the_table(app):
    pick(app, "vgg")
    edit_table(app, "edit.vgg.conv_arch.table", edited={"1": {"channels": 0}})
    assert not app.exception and params(app) == VGG11_PARAMS
    assert "conv_arch[1] channels" in messages(app.error)


def test_the_table_fixes_a_broken_text_field(app):
    pick(app, "vgg")
    app.text_input(key="edit.vgg.conv_arch.text").set_value("((1, 64),").run()
    edit_table(app, "edit.vgg.conv_arch.table", edited={"4": {"num_convs": 3}})
    assert shows_clean(app)
    assert app.text_input(key="edit.vgg.conv_arch.text").value.endswith("(3, 512))")


def test_a_too_small_input_names_the_smallest_that_works(app):
    pick(app, "vgg")
    app.number_input(key="edit.vgg.input_size").set_value(16).run()
    assert not app.exception and params(app) == VGG11_PARAMS
    text = messages(app.error)
    assert "input_size" in text and "too small" in text and "at least 32" in text


def test_a_suspicious_block_is_applied_with_a_warning(app):
    pick(app, "vgg", "vgg16")
    app.text_input(key="edit.vgg.conv_arch.text").set_value(
        "((2, 64), (2, 128), (3, 256), (3, 512), (32, 512))").run()  # seed 003's slip
    assert shows_clean(app) and params(app) != VGG16_PARAMS
    assert "did you mean (3, 512)?" in messages(app.warning)


def test_an_edit_is_named_and_can_be_reset(app):
    pick(app, "vgg")
    app.number_input(key="edit.vgg.width").set_value(0.5).run()
    assert "width" in messages(app.caption)
    next(b for b in app.button if b.label == "Reset to the preset").click().run()
    assert params(app) == VGG11_PARAMS and app.number_input(key="edit.vgg.width").value == 1.0


# --- the other families' editors -------------------------------------------------------------


def test_a_googlenet_split_edit_changes_the_output_channels_column(app):
    pick(app, "googlenet")
    assert table_with(app, "out_channels")["out_channels"].tolist()[:2] == [256, 480]
    edit_table(app, "edit.googlenet.inception.table", edited={"0": {"c1": 96}})
    assert shows_clean(app)
    assert table_with(app, "out_channels")["out_channels"].tolist()[:2] == [288, 480]


def test_googlenet_stages_must_add_up_to_the_inception_blocks(app):
    pick(app, "googlenet")
    app.text_input(key="edit.googlenet.stages.text").set_value("2, 5, 3").run()
    assert not app.exception and "add up" in messages(app.error)


def test_the_other_editors_apply_their_edits(app):
    edits = [
        ("alexnet", lambda: edit_table(app, "edit.alexnet.convs.table",
                                       edited={"4": {"pool": False}})),
        ("nin", lambda: app.number_input(key="edit.nin.one_by_one").set_value(1).run()),
        ("lenet", lambda: app.segmented_control(key="edit.lenet.activation")
         .set_value("relu").run()),
        ("resnet", lambda: edit_table(app, "edit.resnet.stages.table",
                                      edited={"3": {"num_residuals": 3}})),
        ("densenet", lambda: app.text_input(key="edit.densenet.block_sizes.text")
         .set_value("6, 12, 24, 16").run()),
    ]
    for family, edit in edits:
        pick(app, family)
        before = app.session_state["spec"]
        edit()
        assert shows_clean(app), family
        assert app.session_state["spec"] != before, family


def test_a_resnet_switch_changes_the_block(app):
    pick(app, "resnet")
    app.segmented_control(key="edit.resnet.block").set_value("bottleneck").run()
    assert shows_clean(app) and app.session_state["spec"].block == "bottleneck"
    app.toggle(key="edit.resnet.preact").set_value(True).run()
    assert shows_clean(app) and app.session_state["spec"].preact


# --- results ---------------------------------------------------------------------------------


def test_the_bar_charts_have_a_bar_for_every_block(app):
    open_view(pick(app, "densenet"), "Cost")
    figure = json.loads(app.get("plotly_chart")[0].proto.spec)
    assert bar_names(figure) == [b.name for b in inspect_spec(PRESETS["densenet"]).blocks]


def test_every_layer_shows_the_layer_table(app):
    pick(app, "vgg")
    app.toggle(key="every_layer").set_value(True).run()
    assert shows_clean(app)
    assert "vgg_block1.0.0" in table_with(app, "layer")["layer"].tolist()


def test_the_conv_fc_split_shows_that_dense_layers_hold_vggs_parameters(app):
    open_view(pick(app, "vgg"), "Cost")
    split = table_with(app, "of params").set_index("layers")
    assert split.loc["fully connected", "of params"] > 0.9
    assert split.loc["convolutions", "of FLOPs"] > 0.9


def test_training_memory_follows_the_batch_size_and_the_optimizer(app):
    memory = lambda: table_with(app, "training").set_index("training")["memory"]  # noqa: E731
    open_view(pick(app, "lenet"), "Memory")
    small = memory()["activations"]
    app.number_input(key="batch_size").set_value(1024).run()
    app.selectbox(key="optimizer").set_value("adam").run()
    assert memory()["activations"] != small and memory()["optimizer state"] != "0 B"


def test_the_diagram_can_show_every_repeated_block(app):
    open_view(pick(app, "resnet", "resnet34"), "Diagram and code")
    collapsed = app.get("graphviz_chart")[0].proto.spec
    app.toggle(key="collapse").set_value(False).run()
    assert len(app.get("graphviz_chart")[0].proto.spec) > len(collapsed)


def test_params_flops_bars_has_a_bar_per_block_for_every_preset():
    for spec in PRESETS.values():
        table = inspect_spec(spec)
        figure = json.loads(params_flops_bars(table).to_json())
        assert bar_names(figure) == [b.name for b in table.blocks]
        layers = json.loads(params_flops_bars(table, "layer").to_json())
        assert bar_names(layers) == [r.path for r in table.rows if r.params or r.flops]


def test_params_flops_bars_puts_params_and_flops_side_by_side():
    figure = params_flops_bars(inspect_spec(PRESETS["alexnet"]))
    by_axis = {}
    for trace in figure.data:
        by_axis.setdefault(trace.xaxis, 0)
        by_axis[trace.xaxis] += sum(trace.y)
    table = inspect_spec(PRESETS["alexnet"])
    assert by_axis == {"x": table.total_params, "x2": table.total_flops}


# --- export and import -----------------------------------------------------------------------


def test_the_exported_json_round_trips_through_import(app, downloads):
    open_view(pick(app, "vgg"), "Diagram and code")
    app.text_input(key="edit.vgg.conv_arch.text").set_value(repr(VGG_D)).run()
    app.number_input(key="edit.vgg.width").set_value(0.5).run()
    edited = app.session_state["spec"]
    exported = downloads["vgg16_edited.json"]
    pick(app, "lenet")
    app.file_uploader(key="import").set_value(("mine.json", exported,
                                               "application/json")).run()
    assert shows_clean(app) and "mine.json" in messages(app.success)
    assert app.session_state["spec"] == edited
    assert app.segmented_control(key="family").value == "vgg"
    assert app.number_input(key="edit.vgg.width").value == 0.5


def test_a_bad_upload_is_explained_and_changes_nothing(app):
    app.file_uploader(key="import").set_value(
        ("bad.json", b'{"family": "vgg", "conv_arch": [[1, 64], [0, 128]]}',
         "application/json")).run()
    assert not app.exception
    assert "bad.json" in messages(app.error) and "conv_arch[1] num_convs" in messages(app.error)
    assert app.session_state["spec"] == PRESETS["alexnet"]


def test_the_exported_code_rebuilds_the_network_on_screen(app, downloads):
    open_view(pick(app, "googlenet"), "Diagram and code")
    edit_table(app, "edit.googlenet.inception.table", edited={"8": {"c4": 256}})
    code = downloads["googlenet_edited.py"].decode()
    assert app.code[0].value.strip() == code.strip()
    module = types.ModuleType("exported_googlenet")
    sys.modules[module.__name__] = module
    try:
        exec(compile(code, "googlenet_edited.py", "exec"), vars(module))  # our own output
    finally:
        del sys.modules[module.__name__]
    with torch.device("meta"):
        model = module.build()
    assert f"{sum(p.numel() for p in model.parameters()):,}" == params(app)


def test_the_diagram_exports_as_svg_when_graphviz_is_installed(app, monkeypatch):
    deferred = {}
    add_deferred = MediaFileManager.add_deferred

    def recording(self, data_callable, mimetype, coordinates, file_name=None, **kwargs):
        deferred[file_name] = data_callable
        return add_deferred(self, data_callable, mimetype, coordinates, file_name, **kwargs)

    monkeypatch.setattr(MediaFileManager, "add_deferred", recording)
    open_view(pick(app, "nin"), "Diagram and code")
    if "nin.svg" not in deferred:
        assert "apt-get install graphviz" in messages(app.info)
        pytest.skip("Graphviz's dot is not installed")
    assert deferred["nin.svg"]().lstrip().startswith((b"<?xml", b"<svg"))


def test_the_open_view_stays_open_across_a_family_switch(app):
    open_view(app, "Memory")
    pick(app, "resnet")
    assert table_with(app, "training") is not None and not app.get("plotly_chart")
    assert app.session_state["view"] == "Memory"


# --- the exercises' switches and the side-by-side view ---------------------------------------


def test_unticking_conv_bias_on_bn_lenet_drops_the_absorbed_biases(app):
    pick(app, "lenet", "bn-lenet")
    app.toggle(key="edit.lenet.conv_bias").set_value(False).run()
    assert shows_clean(app) and params(app) == f"{44_878 - (6 + 16 + 120 + 84):,}"


def test_scratch_batch_norm_with_group_norm_is_explained_next_to_the_field(app):
    pick(app, "lenet", "bn-lenet-scratch")
    app.segmented_control(key="edit.lenet.norm_kind").set_value("group").run()
    assert not app.exception and app.session_state["spec"] == PRESETS["bn-lenet-scratch"]
    assert "norm_kind" in messages(app.error) and "scratch" in messages(app.error)


def test_the_vgg_gap_head_is_a_switch_on_the_form(app):
    pick(app, "vgg")
    app.segmented_control(key="edit.vgg.head").set_value("gap").run()
    assert shows_clean(app) and app.session_state["spec"].head == "gap"
    assert "hidden" in messages(app.warning)  # the hidden dense layers are still there


def test_the_totals_show_macs_and_the_smallest_input(app):
    pick(app, "googlenet")
    metrics = {m.label: m.value for m in app.metric}
    table = inspect_spec(PRESETS["googlenet"])
    assert metrics["Smallest input"] == "1 px"
    assert metrics["MACs per image"] != metrics["FLOPs per image"] and table.total_macs
    app.number_input(key="edit.googlenet.input_size").set_value(32).run()
    assert not app.exception and "1x1" in messages(app.warning)


def test_side_by_side_compares_this_model_with_the_chapters_networks(app):
    open_view(pick(app, "lenet", "bn-lenet"), "Side by side")
    assert shows_clean(app)
    frame = table_with(app, "smallest input")
    assert frame["model"].tolist() == ["this model", "alexnet", "vgg11", "nin", "googlenet"]
    assert frame["params"].tolist() == [44_878, 46_764_746, 128_806_154, 1_992_166, 5_977_530]
    app.multiselect(key="side_by_side").set_value(["bn-lenet", "bn-lenet-no-bn"]).run()
    assert table_with(app, "smallest input")["params"].tolist() == [44_878, 44_426]


def test_a_valid_resnet_of_61_stages_shows_its_tables_without_a_crash(app):
    """Its receptive field passes 2**64 px: too big for a number column."""
    app.session_state["spec"] = PRESETS["resnet18"].replace(
        stages=tuple((1, 8) for _ in range(61)), stem_channels=8)
    app.run()
    assert not app.exception
    app.toggle(key="every_layer").set_value(True).run()
    assert not app.exception
    assert isinstance(app.dataframe[-1].value["receptive field"].iloc[-1], str)
