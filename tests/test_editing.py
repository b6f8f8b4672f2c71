"""Editing a spec: text and tables both ways, edits validated before they apply, JSON import."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from cnnlab.analysis.layers import inspect_spec
from cnnlab.arch.checks import SpecError
from cnnlab.arch.presets import PRESETS, VGG_A, VGG_D, preset_name
from cnnlab.arch.specs import GoogLeNetSpec, VGGSpec
from cnnlab.errors import errors, warnings
from cnnlab.views import editor as editing

VGG11 = PRESETS["vgg11"]


def _fields(problems):
    return [p.field for p in problems]


# --- the spec in the URL ---------------------------------------------------------------------


def test_a_plain_link_opens_the_default_preset_and_an_edit_names_its_fields():
    assert editing.from_link({}) == (PRESETS[editing.DEFAULT_PRESET], [])
    assert editing.link_query(PRESETS[editing.DEFAULT_PRESET]) == {}  # a plain page, a plain URL
    edited = VGG11.replace(width=0.5)
    assert editing.link_query(edited) == {"model": "vgg11", "width": "0.5"}
    assert editing.from_link(editing.link_query(edited)) == (edited, [])


def test_a_link_that_cannot_be_read_opens_the_default_and_names_the_parameter():
    spec, problems = editing.from_link({"model": "vgg11", "conv_arch": "((1,<b>64</b>))"})
    assert spec == PRESETS["alexnet"] and _fields(problems) == ["conv_arch"]


# --- text fields -----------------------------------------------------------------------------


def test_an_int_list_reads_commas_spaces_and_brackets():
    assert editing.parse_int_list("4, 4, 4, 4", "block_sizes") == (4, 4, 4, 4)
    assert editing.parse_int_list("(120, 84)", "hidden") == (120, 84)
    assert editing.parse_int_list("[6 16]", "conv_channels") == (6, 16)
    assert editing.parse_int_list("  2,5,2, ", "stages") == (2, 5, 2)


def test_an_empty_int_list_is_allowed_only_where_asked():
    assert editing.parse_int_list("", "hidden", allow_empty=True) == ()
    with pytest.raises(SpecError) as caught:
        editing.parse_int_list(" ", "block_sizes")
    assert _fields(caught.value.problems) == ["block_sizes"]


@pytest.mark.parametrize("text", ["4, x", "4.5, 4", "1e3", "True", "4; 4"])
def test_an_int_list_rejects_anything_but_whole_numbers(text):
    with pytest.raises(SpecError) as caught:
        editing.parse_int_list(text, "block_sizes")
    problem = caught.value.problems[0]
    assert problem.field == "block_sizes" and "whole number" in problem.message
    assert problem.fix


def test_an_int_list_refuses_very_long_text():
    with pytest.raises(SpecError):
        editing.parse_int_list("4, " * 5000, "block_sizes")


def test_the_textbook_tuple_syntax_reads_as_conv_arch():
    text = "((1, 64), (1, 128), (2, 256), (2, 512), (2, 512))"
    assert editing.parse_tuple(text, "conv_arch") == VGG_A
    assert editing.format_tuple(VGG_A) == text


def test_lists_in_a_tuple_become_tuples():
    assert editing.parse_tuple("[[1, 64], [2, 128]]", "conv_arch") == ((1, 64), (2, 128))


@pytest.mark.parametrize("text", ["((1, 64), (1, 128)", "__import__('os').getcwd()",
                                  "(1, 64) + (2, 128)", "((1, 64),) * 3"])
def test_a_malformed_or_executable_tuple_is_a_problem_not_code(text):
    with pytest.raises(SpecError) as caught:
        editing.parse_tuple(text, "conv_arch")
    assert _fields(caught.value.problems) == ["conv_arch"]


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_text_field_reads_back_what_it_shows(name):
    spec = PRESETS[name]
    for (family, field), text_field in editing.TEXT_FIELDS.items():
        if family == spec.family:
            text = editing.text_of(spec, field)
            assert text_field.parse(text, field) == getattr(spec, field)


# --- tables ----------------------------------------------------------------------------------


def test_conv_arch_is_one_row_per_vgg_block():
    rows = editing.rows_from_conv_arch(VGG_A)
    assert rows[2] == {"num_convs": 2, "channels": 256}
    assert editing.conv_arch_from_rows(rows) == VGG_A


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_table_reads_back_what_it_shows(name):
    spec = PRESETS[name]
    for (family, field), table in editing.TABLE_FIELDS.items():
        if family == spec.family:
            changes = table.read(editing.rows_of(spec, field))
            assert spec.replace(**changes) == spec


def test_cells_from_an_editor_may_be_floats_or_digit_strings():
    rows = [{"num_convs": 1.0, "channels": 64.0}, {"num_convs": "2", "channels": 128}]
    assert editing.conv_arch_from_rows(rows) == ((1, 64), (2, 128))


def test_every_empty_or_bad_cell_is_reported_with_its_row_and_column():
    rows = [{"num_convs": 1, "channels": None}, {"num_convs": math.nan, "channels": "wide"},
            {"num_convs": True, "channels": 64}, {"num_convs": 2.5}]
    with pytest.raises(SpecError) as caught:
        editing.conv_arch_from_rows(rows)
    assert _fields(caught.value.problems) == [
        "conv_arch[0] channels", "conv_arch[1] num_convs", "conv_arch[1] channels",
        "conv_arch[2] num_convs", "conv_arch[3] num_convs", "conv_arch[3] channels"]


def test_pandas_missing_values_count_as_empty_cells():
    pd = pytest.importorskip("pandas")
    with pytest.raises(SpecError) as caught:
        editing.resnet_stages_from_rows([{"num_residuals": pd.NA, "channels": 64}])
    assert "empty" in caught.value.problems[0].message


def test_inception_rows_show_stage_and_output_channels():
    rows = editing.rows_from_inception(GoogLeNetSpec().inception, GoogLeNetSpec().stages)
    assert rows[0] == {"stage": "b3", "c1": 64, "c2a": 96, "c2b": 128, "c3a": 16, "c3b": 32,
                       "c4": 32, "out_channels": 256}  # d2l 7.4.2: 64 + 128 + 32 + 32
    assert [r["stage"] for r in rows] == ["b3"] * 2 + ["b4"] * 5 + ["b5"] * 2
    assert [r["out_channels"] for r in rows][-1] == 1024


def test_inception_rows_ignore_the_computed_columns():
    rows = editing.rows_from_inception(GoogLeNetSpec().inception, GoogLeNetSpec().stages)
    rows[0] = {**rows[0], "c1": 96, "out_channels": 1, "stage": None}
    assert editing.inception_from_rows(rows)[0] == (96, (96, 128), (16, 32), 32)


def test_googlenet_stage_sizes_match_the_textbook():
    assert editing.stage_channels(GoogLeNetSpec()) == [("b3", 2, 480), ("b4", 5, 832),
                                                       ("b5", 2, 1024)]


def test_alexnet_pool_column_sets_pool_after():
    rows = editing.rows_from_alexnet_convs(PRESETS["alexnet"].convs, (0, 1, 4))
    assert [r["pool"] for r in rows] == [True, True, False, False, True]
    rows[4]["pool"], rows[2]["pool"] = False, True
    convs, pool_after = editing.alexnet_convs_from_rows(rows)
    assert convs == PRESETS["alexnet"].convs and pool_after == (0, 1, 2)


def test_nin_blocks_and_resnet_stages_round_trip():
    nin, resnet = PRESETS["nin"], PRESETS["resnet34"]
    assert editing.nin_blocks_from_rows(editing.rows_from_nin_blocks(nin.blocks)) == nin.blocks
    rows = editing.rows_from_resnet_stages(resnet.stages)
    assert rows[2] == {"num_residuals": 6, "channels": 256}
    assert editing.resnet_stages_from_rows(rows) == resnet.stages


# --- applying edits --------------------------------------------------------------------------


def test_typing_vgg16s_conv_arch_gives_vgg16():
    spec, problems = editing.apply_edits(VGG11, {"conv_arch": repr(VGG_D)})
    assert errors(problems) == [] and spec == PRESETS["vgg16"]
    assert inspect_spec(spec).total_params == 134_300_362


def test_a_table_edit_gives_the_same_spec_as_the_text():
    rows = editing.rows_of(VGG11, "conv_arch")
    rows[4] = {"num_convs": 3, "channels": 512}
    spec, _ = editing.apply_edits(VGG11, {"conv_arch": rows})
    assert spec.conv_arch == VGG_A[:4] + ((3, 512),)


def test_a_malformed_tuple_gives_no_spec_and_a_problem_naming_the_field():
    spec, problems = editing.apply_edits(VGG11, {"conv_arch": "((1, 64), (1, 128)"})
    assert spec is None and _fields(problems) == ["conv_arch"]


def test_a_collapsing_edit_is_refused_with_the_smallest_size():
    spec, problems = editing.apply_edits(VGG11, {"input_size": 16})
    assert spec is None
    assert _fields(errors(problems)) == ["input_size"]
    assert "at least 32" in problems[0].fix


def test_a_suspicious_edit_applies_with_a_warning():
    # The slip in seed 003: (32, 512) for (3, 512) builds a 42-conv network.
    spec, problems = editing.apply_edits(VGG11, {"conv_arch": "((2, 64), (2, 128), (3, 256), "
                                                  "(3, 512), (32, 512))"})
    assert spec is not None and errors(problems) == []
    assert _fields(warnings(problems)) == ["conv_arch[4] num_convs"]
    assert "(3, 512)" in warnings(problems)[0].fix


def test_edits_of_several_fields_apply_together():
    spec, problems = editing.apply_edits(VGG11, {"input_size": 96, "width": 0.25,
                                                 "hidden": "1024, 1024"})
    assert problems == [] and spec == VGG11.replace(input_size=96, width=0.25,
                                                    hidden=(1024, 1024))


def test_every_problem_of_every_field_is_reported_at_once():
    spec, problems = editing.apply_edits(VGG11, {"hidden": "4096, lots",
                                                 "conv_arch": "((1, 64),"})
    assert spec is None and set(_fields(problems)) == {"hidden", "conv_arch"}


def test_an_unknown_field_is_a_problem():
    spec, problems = editing.apply_edits(VGG11, {"growth_rate": 32})
    assert spec is None and _fields(problems) == ["growth_rate"]


def test_edited_values_are_tuples_so_specs_stay_hashable():
    spec, _ = editing.apply_edits(VGG11, {"hidden": [512, 512]})
    assert spec.hidden == (512, 512)
    hash(spec)


def test_a_problem_goes_next_to_the_widget_that_edits_its_field():
    assert editing.widget_field("vgg", "conv_arch[2] channels") == "conv_arch"
    assert editing.widget_field("vgg", "input_size") == "input_size"
    assert editing.widget_field("alexnet", "pool_after[0]") == "convs"


# --- presets ---------------------------------------------------------------------------------


def test_presets_are_listed_by_family():
    assert editing.presets_for("vgg") == ["vgg11", "vgg13", "vgg16", "vgg19", "vgg11-small"]
    assert set(editing.FAMILY_TITLES) == {spec.family for spec in PRESETS.values()}


def test_an_edited_spec_is_matched_to_its_preset_and_its_changes_named():
    assert preset_name(VGGSpec(conv_arch=VGG_D)) == "vgg16"
    assert preset_name(VGG11.replace(input_size=96)) is None
    assert editing.changed_fields(VGG11, VGG11.replace(input_size=96, dropout=0.2)) == [
        "input_size", "dropout"]


def test_the_preset_picker_follows_the_spec():
    assert editing.preset_to_show(PRESETS["vgg16"], "vgg11") == "vgg16"  # edited into vgg16
    assert editing.preset_to_show(VGG11.replace(width=0.5), "vgg13") == "vgg13"  # an edit of it
    assert editing.preset_to_show(VGG11.replace(width=0.5), "resnet18") == "vgg11"
    assert editing.preset_to_show(PRESETS["lenet"], None) == "lenet"


# --- importing -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_round_trips_through_an_uploaded_file(name):
    spec, problems = editing.spec_from_json_bytes(PRESETS[name].to_json().encode())
    assert spec == PRESETS[name] and errors(problems) == []


@pytest.mark.parametrize("data, field, words", [
    (b"{not json", "file", "not valid JSON"),
    (b"\xff\xfe", "file", "UTF-8"),
    (b"[" * 100_001, "file", "bytes"),
    (b"[" * 50_000, "file", "nested too deeply"),
    (b'{"family": "lenet5"}', "spec", "unknown"),
    (b'{"family": "vgg", "depth": 11}', "spec", "depth"),
])
def test_a_bad_file_gives_a_problem_not_an_exception(data, field, words):
    spec, problems = editing.spec_from_json_bytes(data)
    assert spec is None and problems[0].field == field and words in problems[0].message


def test_an_uploaded_spec_with_bad_values_lists_them_by_field():
    data = {**VGG11.to_dict(), "conv_arch": [[1, 64], [0, 128]], "input_size": "big"}
    spec, problems = editing.spec_from_json_bytes(json.dumps(data).encode())
    assert spec is None
    assert {"input_size", "conv_arch[1] num_convs"} <= set(_fields(problems))


def test_an_uploaded_spec_comes_back_with_tuples():
    spec, _ = editing.spec_from_json_bytes(PRESETS["googlenet"].to_json().encode())
    assert all(isinstance(v, (int, float, str, bool, tuple))
               for v in dataclasses.asdict(spec).values())
    hash(spec)


# --- resolving a form's edits ------------------------------------------------------------------


def test_a_valid_edit_is_applied():
    spec = PRESETS["vgg11"]
    result = editing.resolve_edits(spec, {"width": [("edit.vgg.width", 0.5)]})
    assert result.applied == spec.replace(width=0.5) and result.problems == []


def test_a_failed_edit_keeps_the_spec_and_says_which_widget_it_came_from():
    spec = PRESETS["vgg11"]
    result = editing.resolve_edits(spec, {"input_size": [("edit.vgg.input_size", 16)]})
    assert result.applied is None
    assert any(p.field == "input_size" for p in result.problems)
    assert result.used == {"input_size": ("edit.vgg.input_size", 16)}


def test_the_widget_touched_last_wins_and_the_other_is_tried_next():
    spec = PRESETS["vgg11"]
    text, table = "edit.vgg.conv_arch.text", "edit.vgg.conv_arch.table"
    rows = editing.rows_of(spec, "conv_arch")
    rows[4] = {"num_convs": 3, "channels": 512}
    edits = {"conv_arch": [(text, "((1, 64),"), (table, rows)]}
    # The table was touched last: it is tried first and applies.
    result = editing.resolve_edits(spec, edits, last_edited=table)
    assert result.applied.conv_arch[-1] == (3, 512)
    # The broken text touched last is tried first, fails, and the table's value applies.
    result = editing.resolve_edits(spec, edits, last_edited=text)
    assert result.applied.conv_arch[-1] == (3, 512)


def test_no_edits_resolve_to_nothing():
    assert editing.resolve_edits(PRESETS["lenet"], {}) == editing.Resolution(None, [], {})


def test_a_data_editors_changes_apply_to_the_rows_it_showed():
    rows = editing.rows_of(PRESETS["vgg11"], "conv_arch")
    delta = {"edited_rows": {"1": {"channels": 256}}, "added_rows": [{"num_convs": 1,
                                                                      "channels": 64}],
             "deleted_rows": [0]}
    changed = editing.apply_table_delta(rows, delta)
    assert [(r["num_convs"], r["channels"]) for r in changed] == \
        [(1, 256), (2, 256), (2, 512), (2, 512), (1, 64)]
    assert editing.apply_table_delta(rows, {}) == rows
