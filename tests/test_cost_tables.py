"""The Architecture page's tables from a LayerTable (cnnlab.views.cost_tables)."""

from __future__ import annotations

import pytest

from cnnlab.analysis.layers import inspect_spec
from cnnlab.arch.presets import PRESETS
from cnnlab.shapes import shape_text
from cnnlab.views import cost_tables
from cnnlab.views.text import short


def test_dense_layers_hold_vggs_parameters_and_convolutions_its_flops():
    split = cost_tables.conv_fc_split(inspect_spec(PRESETS["vgg11"]))
    of_params = dict(zip(split["layers"], split["of params"]))
    of_flops = dict(zip(split["layers"], split["of FLOPs"]))
    assert of_params["fully connected"] > 0.9 and of_flops["convolutions"] > 0.9
    assert sum(split["of params"]) == pytest.approx(1.0)


def test_training_memory_grows_with_the_batch_and_adams_state():
    table = inspect_spec(PRESETS["lenet"])
    sgd = cost_tables.training_memory(table, 128, "sgd")
    adam = cost_tables.training_memory(table, 1024, "adam")
    assert sgd["training"] == ["weights", "gradients", "optimizer state", "activations", "total"]
    assert sgd["memory"][2] == "0 B" and adam["memory"][2] != "0 B"
    assert adam["memory"][3] != sgd["memory"][3] and sgd["share"][-1] == 1.0


def test_block_and_layer_rows_have_one_row_each():
    table = inspect_spec(PRESETS["resnet18"])
    blocks, layers = cost_tables.block_rows(table), cost_tables.layer_rows(table)
    assert blocks["block"] == [b.name for b in table.blocks]
    assert len(layers["layer"]) == len(table.rows) and "jump" in layers
    assert blocks["output"][0] == shape_text(table.blocks[0].output_shape)


def test_shapes_shares_and_export_names():
    assert shape_text((64, 56, 56)) == "64x56x56"
    assert cost_tables.share(1, 4) == 0.25 and cost_tables.share(1, 0) == 0.0
    assert cost_tables.export_name("vgg11-small", True) == "vgg11_small_edited"
    assert cost_tables.export_name("nin", False) == "nin"


def test_a_receptive_field_past_2_to_the_64_is_shown_as_text_not_a_number():
    deep = PRESETS["resnet18"].replace(stages=tuple((1, 8) for _ in range(61)), stem_channels=8)
    rows = cost_tables.layer_rows(inspect_spec(deep))
    assert max(int(v.replace(",", "")) for v in rows["receptive field"]) > 2**64
    assert all(isinstance(v, str) for v in rows["jump"])
    assert cost_tables.block_rows(inspect_spec(PRESETS["resnet18"]))["receptive field"][0] == 11


def test_the_totals_name_parameters_flops_macs_shapes_and_the_smallest_input():
    table = inspect_spec(PRESETS["alexnet"])
    shown = {label: (value, help) for label, value, help in cost_tables.totals(table, 63)}
    assert list(shown)[0] == "Parameters" and shown["Parameters"] == ("46,764,746", None)
    assert shown["FLOPs per image"][1].startswith(f"{table.total_flops:,} (2 per multiply-add")
    assert shown["MACs per image"][0] == short(table.total_macs)
    assert shown["Input → output"][0] == "1x224x224 → 10"
    assert shown["Smallest input"][0] == "63 px" and "7.4.2" in shown["Smallest input"][1]
    assert dict((label, value) for label, value, _ in cost_tables.totals(table, None))[
        "Smallest input"] == "none"


def test_side_by_side_puts_the_edited_spec_beside_the_chosen_presets():
    edited = PRESETS["vgg11"].replace(width=0.5)
    specs = cost_tables.side_by_side_specs([cost_tables.THIS_MODEL, "nin"], edited)
    assert specs == {cost_tables.THIS_MODEL: edited, "nin": PRESETS["nin"]}
    assert set(cost_tables.SIDE_BY_SIDE) - {cost_tables.THIS_MODEL} <= set(PRESETS)
