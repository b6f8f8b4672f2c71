"""The architecture switches of the chapter's exercises: what each does to a real model, how
the checks explain misuse, and that JSON, code export, diagram and layer table follow."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cnnlab.analysis.diagram import to_dot
from cnnlab.analysis.layers import inspect_model, inspect_spec
from cnnlab.analysis.smallest_input import (
    _smallest_input,
    _smallest_uncollapsed_input,
    collapsed_before_end,
    search_key,
    smallest_input,
    smallest_uncollapsed_input,
)
from cnnlab.arch.checks import MAX_INPUT_SIZE
from cnnlab.arch.checks import validate
from cnnlab.arch.models import build
from cnnlab.arch.parse import spec_from_data, spec_from_json
from cnnlab.arch.presets import PRESETS
from cnnlab.errors import errors, warnings
from cnnlab.training.recipes import TEXTBOOK_RESULTS, textbook_config
from cnnlab.views.cost_tables import compare_specs
from tests.test_codegen import generated

BN_LENET = PRESETS["bn-lenet"]  # conv 6, conv 16, dense 120, dense 84, each with a BN


def n_params(spec) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in build(spec).parameters())


def fields_of(problems) -> list[str]:
    return [p.field for p in problems]


# --- parameter counts on real models ------------------------------------------------------


def test_bn_lenet_without_conv_bias_loses_exactly_the_biases_its_norms_absorb():
    assert n_params(BN_LENET.replace(conv_bias=False)) == 44_878 - (6 + 16 + 120 + 84)


def test_fixed_gamma_and_beta_remove_two_numbers_per_normalized_channel():
    assert n_params(BN_LENET.replace(norm_affine=False)) == 44_878 - 2 * (6 + 16 + 120 + 84)
    scratch = PRESETS["bn-lenet-scratch"].replace(norm_affine=False)
    assert n_params(scratch) == 44_878 - 2 * (6 + 16 + 120 + 84)


def test_bn_lenet_without_bn_in_the_head_keeps_the_conv_norms_only():
    assert n_params(BN_LENET.replace(norm_in_head=False)) == 44_878 - 2 * (120 + 84)


def test_the_no_bn_preset_is_bn_lenet_without_its_four_norms_and_trains_with_its_recipe():
    assert PRESETS["bn-lenet-no-bn"] == BN_LENET.replace(batch_norm="none")
    assert n_params(PRESETS["bn-lenet-no-bn"]) == 44_878 - 2 * (6 + 16 + 120 + 84)
    assert textbook_config("bn-lenet-no-bn") == textbook_config("bn-lenet")
    assert "bn-lenet-no-bn" not in TEXTBOOK_RESULTS  # the book prints no row for it


@pytest.mark.parametrize("kind, layer", [("group", nn.GroupNorm), ("layer", nn.GroupNorm)])
def test_group_and_layer_norm_stand_where_batch_norm_stood(kind, layer):
    spec = PRESETS["resnet18"].replace(norm_kind=kind, width=0.25, input_size=32)
    model = build(spec)
    norms = [m for m in model.modules() if isinstance(m, layer)]
    assert norms and not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    if kind == "layer":
        assert {m.num_groups for m in norms} == {1}
    else:  # gcd(32, C): 16 channels make 16 groups, 32 or more make 32
        assert {m.num_groups for m in norms} == {16, 32}
    # Same parameter count as batch norm: each keeps gamma and beta per channel.
    assert n_params(spec) == n_params(spec.replace(norm_kind="batch"))
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_resnet_without_norms_has_no_norm_parameters_and_still_runs():
    spec = PRESETS["resnet18"]
    none = spec.replace(norm_kind="none")
    norm_params = sum(m.weight.numel() * 2 for m in build(spec.replace(width=1.0)).modules()
                      if isinstance(m, nn.BatchNorm2d))
    assert n_params(none) == n_params(spec) - norm_params
    small = build(none.replace(width=0.25, input_size=32))
    assert small(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_densenet_max_transition_pools_with_the_same_parameters():
    spec = PRESETS["densenet"].replace(transition_pool="max")
    model = build(spec)
    pools = [m for name, m in model.named_modules() if name.startswith("transition_block")
             and isinstance(m, (nn.MaxPool2d, nn.AvgPool2d))]
    assert pools and all(isinstance(m, nn.MaxPool2d) for m in pools)
    assert n_params(spec) == 758_226


def test_vgg_gap_head_collapses_the_parameter_count():
    dense = n_params(PRESETS["vgg11"])
    gap = n_params(PRESETS["vgg11"].replace(head="gap", hidden=()))
    # The convolutions alone (9,219,328) plus one 512 -> 10 Linear.
    assert gap == 9_219_328 + 512 * 10 + 10
    assert dense == 128_806_154 and gap < dense / 13


def test_vgg_norm_in_head_adds_a_norm_after_each_hidden_dense_layer():
    spec = PRESETS["vgg11-small"].replace(batch_norm=True)
    with_head = spec.replace(norm_in_head=True)
    assert n_params(with_head) - n_params(spec) == 2 * (4096 + 4096)
    conv_biases = 16 + 32 + 2 * 64 + 4 * 128  # VGG-11's eight convs at width 0.25
    assert n_params(with_head.replace(conv_bias=False)) == \
        n_params(with_head) - conv_biases - 2 * 4096


def test_lenet_dropout_follows_each_hidden_dense_layer():
    model = build(PRESETS["lenet"].replace(dropout=0.3, activation="relu"))
    assert [type(m).__name__ for m in model.fc1] == ["Linear", "ReLU", "Dropout"]
    assert model.fc2[-1].p == 0.3 and n_params(PRESETS["lenet"].replace(dropout=0.3)) == 61_706


def test_googlenet_with_group_norm_and_no_conv_bias_runs_a_real_forward_pass():
    spec = PRESETS["googlenet"].replace(batch_norm=True, norm_kind="group", conv_bias=False,
                                        width=0.25, input_size=64)
    model = build(spec)
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))
    assert model(torch.randn(2, 1, 64, 64)).shape == (2, 10)


# --- checks -----------------------------------------------------------------------------------


def test_a_bad_norm_kind_is_named_with_the_choices():
    problems = errors(validate(BN_LENET.replace(norm_kind="instance")))
    assert fields_of(problems) == ["norm_kind"] and "batch, group, layer, none" in problems[0].fix


def test_scratch_batch_norm_refuses_another_norm_kind_and_says_what_to_do():
    problems = errors(validate(PRESETS["bn-lenet-scratch"].replace(norm_kind="group")))
    assert fields_of(problems) == ["norm_kind"]
    assert "scratch" in problems[0].message and "'torch'" in problems[0].fix


@pytest.mark.parametrize("field, value", [("conv_bias", "no"), ("norm_affine", 1),
                                          ("norm_in_head", None), ("head", "conv"),
                                          ("dropout", 1.5)])
def test_each_new_field_is_checked_by_name(field, value):
    spec = (PRESETS["vgg11"] if field == "head" else BN_LENET).replace(**{field: value})
    assert field in fields_of(errors(validate(spec)))


def test_densenet_transition_pool_must_be_avg_or_max():
    problems = errors(validate(PRESETS["densenet"].replace(transition_pool="min")))
    assert fields_of(problems) == ["transition_pool"]


def test_switches_that_do_nothing_without_batch_norm_say_so():
    found = warnings(validate(PRESETS["vgg11"].replace(conv_bias=False, norm_in_head=True)))
    assert fields_of(found) == ["conv_bias", "norm_in_head"]
    assert "batch_norm is off" in found[0].message
    assert fields_of(warnings(validate(PRESETS["resnet18"].replace(
        norm_kind="none", norm_affine=False)))) == ["norm_affine"]


def test_no_preset_has_a_problem():
    assert {name: validate(spec) for name, spec in PRESETS.items()} == \
        {name: [] for name in PRESETS}


# --- JSON, code export, diagram, layer table ------------------------------------------------


def test_stored_json_without_the_new_fields_loads_with_the_defaults():
    old = {"family": "lenet", "input_size": 28, "first_padding": 0, "pool": "max",
           "batch_norm": "torch"}
    assert spec_from_data(old) == BN_LENET
    old_densenet = {k: v for k, v in PRESETS["densenet"].to_dict().items()
                    if k not in ("norm_kind", "conv_bias", "norm_affine", "transition_pool")}
    assert spec_from_json(json.dumps(old_densenet)) == PRESETS["densenet"]


VARIANTS = {
    "bn-lenet": dict(conv_bias=False, norm_affine=False, norm_kind="layer", dropout=0.2),
    "bn-lenet-scratch": dict(norm_affine=False, norm_in_head=False),
    "vgg11-small": dict(batch_norm=True, norm_in_head=True, norm_kind="group", head="gap",
                        hidden=(64,)),
    "googlenet": dict(batch_norm=True, norm_kind="layer", conv_bias=False, width=0.25),
    "resnet18": dict(norm_kind="none", preact=True, width=0.25),
    "densenet": dict(transition_pool="max", norm_kind="group", norm_affine=False,
                     conv_bias=False),
}


@pytest.mark.parametrize("name", VARIANTS)
def test_a_switched_spec_round_trips_through_json(name):
    spec = PRESETS[name].replace(**VARIANTS[name])
    assert spec_from_json(spec.to_json()) == spec


@pytest.mark.parametrize("name", VARIANTS)
def test_the_exported_script_builds_a_switched_spec_with_the_same_parameters(name):
    spec = PRESETS[name].replace(**VARIANTS[name])
    exported = generated(spec)["build"]()
    ours = build(spec)
    assert {k: v.shape for k, v in exported.state_dict().items()} == \
        {k: v.shape for k, v in ours.state_dict().items()}
    x = torch.randn(2, spec.in_channels, spec.input_size, spec.input_size)
    exported.load_state_dict(ours.state_dict())
    assert torch.allclose(exported.eval()(x), ours.eval()(x), atol=1e-5)


@pytest.mark.parametrize("name", VARIANTS)
def test_the_meta_table_of_a_switched_spec_matches_the_real_model(name):
    spec = PRESETS[name].replace(**VARIANTS[name])
    table = inspect_spec(spec)
    model = build(spec).eval()
    assert table.total_params == sum(p.numel() for p in model.parameters())
    x = torch.randn(1, spec.in_channels, spec.input_size, spec.input_size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        out = model(x)
    assert table.output_shape == tuple(out.shape[1:])
    assert table.total_flops == counter.get_total_flops() == 2 * table.total_macs


def test_group_and_layer_norm_count_as_other_ops_like_batch_norm():
    counts = {kind: inspect_spec(PRESETS["resnet18"].replace(norm_kind=kind)).total_other_ops
              for kind in ("batch", "group", "layer", "none")}
    assert counts["batch"] == counts["group"] == counts["layer"] > counts["none"]


def test_the_diagram_names_the_norm_in_use():
    assert "GN" in to_dot(BN_LENET.replace(norm_kind="group"))
    assert "LN" in to_dot(PRESETS["resnet18"].replace(norm_kind="layer"))
    resnet = to_dot(PRESETS["resnet18"].replace(norm_kind="none"))
    assert "BN" not in resnet and "Identity" not in resnet
    assert "maxpool2x2/2" in to_dot(PRESETS["densenet"].replace(transition_pool="max"))


# --- MACs ---------------------------------------------------------------------------------


def test_lenet_conv1_macs_are_the_hand_count():
    row = next(r for r in inspect_spec(PRESETS["lenet"]).rows if r.path == "conv1.0")
    assert row.macs == 6 * 1 * 5 * 5 * 28 * 28 and row.flops == 2 * row.macs


def test_macs_are_zero_where_there_is_no_multiply_add_and_sum_to_the_total():
    table = inspect_spec(BN_LENET)
    assert all(r.macs == 0 for r in table.rows if r.kind == "other")
    assert sum(b.macs for b in table.blocks) == table.total_macs
    assert table.to_dict()["total_macs"] == table.total_macs
    assert table.to_dict()["layers"][0]["macs"] == table.rows[0].macs


def test_macs_match_flop_counter_mode_for_a_dense_layer():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
    with FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 3, 2, 2))
    table = inspect_model(model, (1, 3, 2, 2))
    assert table.total_macs == 12 * 5 == counter.get_total_flops() // 2


# --- the smallest input (exercise 7.4.2) --------------------------------------------------


def test_a_network_runs_from_the_smallest_input_and_not_one_pixel_below():
    # Every stride-2 layer of ResNet pads, so it runs on a single pixel; VGG's pools do not.
    assert smallest_input(PRESETS["resnet18"]) == 1
    vgg = PRESETS["vgg11"]
    least = smallest_input(vgg)
    assert least == 32 and inspect_spec(vgg.replace(input_size=least))
    assert fields_of(errors(validate(vgg.replace(input_size=least - 1)))) == ["input_size"]


def test_googlenet_keeps_its_maps_above_1x1_from_33_pixels():
    spec = PRESETS["googlenet"]
    least = smallest_uncollapsed_input(spec)
    assert smallest_input(spec) == 1 and least == 33
    # At one pixel it still builds and runs (padded 3x3/2 pools keep 1x1 at 1x1), with a warning.
    assert inspect_spec(spec.replace(input_size=1)).output_shape == (10,)
    assert fields_of(validate(spec.replace(input_size=1))) == ["input_size"]
    assert not errors(validate(spec.replace(input_size=1)))
    assert collapsed_before_end(inspect_spec(spec.replace(input_size=least))) is None
    assert collapsed_before_end(inspect_spec(spec.replace(input_size=least - 1))) == \
        ("b4.5", "b5.0.p1.0")
    warned = warnings(validate(spec.replace(input_size=least - 1)))
    assert fields_of(warned) == ["input_size"] and "at least 33" in warned[0].fix


@pytest.mark.parametrize("name", ["alexnet", "vgg11-small", "nin-small", "googlenet", "bn-lenet",
                                  "resnet18", "densenet"])
def test_the_smallest_input_searches_do_not_depend_on_the_width(name):
    # Both are cached by the spec at width 1 (search_key): a width edit finds them cached.
    # Searched afresh at each width, the answers agree.
    spec = PRESETS[name].replace(input_size=MAX_INPUT_SIZE)
    answers = {(_smallest_input(spec.replace(width=w)),
                _smallest_uncollapsed_input(spec.replace(width=w))) for w in (0.05, 1.0, 1.5)}
    assert len(answers) == 1
    assert search_key(spec.replace(width=0.5, input_size=64)) == spec.replace(width=1.0)


# --- side by side (exercise 7.4.3) --------------------------------------------------------


def test_compare_specs_puts_the_chapters_networks_side_by_side():
    names = ["alexnet", "vgg11", "nin", "googlenet"]
    rows = compare_specs({name: PRESETS[name] for name in names}, batch_size=128)
    assert rows["model"] == names
    assert rows["params"] == [46_764_746, 128_806_154, 1_992_166, 5_977_530]
    tables = [inspect_spec(PRESETS[name]) for name in names]
    assert rows["MACs"] == [t.total_flops // 2 for t in tables]
    assert rows["smallest input"] == [67, 32, 67, 1]
    assert len(rows["training memory"]) == len(rows["inference memory"]) == 4


def test_the_inside_view_reads_a_scratch_batch_norm_without_gamma_and_beta():
    from cnnlab.views.inside import batch_norm_layers

    layers = batch_norm_layers(build(PRESETS["bn-lenet-scratch"].replace(norm_affine=False)))
    assert len(layers) == 4 and torch.equal(layers[0].gamma, torch.ones(6))
    assert torch.equal(layers[0].beta, torch.zeros(6))
