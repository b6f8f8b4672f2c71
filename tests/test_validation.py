"""Validation reports every problem at once, naming the field and a fix."""

from __future__ import annotations

import json
import time

import pytest

from cnnlab.analysis.smallest_input import smallest_input
from cnnlab.arch.checks import SpecError, check, parse_literal, validate
from cnnlab.arch.parse import spec_from_data, spec_from_json
from cnnlab.arch.presets import PRESETS
from cnnlab.arch.specs import AlexNetSpec, GoogLeNetSpec, VGGSpec
from cnnlab.errors import errors, warnings


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_is_valid(name):
    assert errors(validate(PRESETS[name])) == []


def test_every_preset_round_trips_through_json():
    for spec in PRESETS.values():
        assert spec_from_json(spec.to_json()) == spec


def test_all_problems_are_reported_at_once():
    spec = VGGSpec(conv_arch=((0, 64), (1, -3)), width=-1.0, num_classes=0)
    fields = {p.field for p in errors(validate(spec))}
    assert {"conv_arch[0] num_convs", "conv_arch[1] channels", "width", "num_classes"} <= fields


def test_every_problem_names_a_field_and_a_fix():
    spec = VGGSpec(conv_arch=((1, "64"),), hidden=(0,), dropout=1.5)
    for problem in validate(spec):
        assert problem.field and problem.message and problem.fix


def test_a_bool_is_not_a_channel_count():
    problems = errors(validate(VGGSpec(conv_arch=((True, 64),))))
    assert [p.field for p in problems] == ["conv_arch[0] num_convs"]


def test_a_malformed_tuple_is_reported_not_raised():
    problems = errors(validate(VGGSpec(conv_arch=((1, 64, 3), (2,)))))
    assert problems and problems[0].field == "conv_arch[0]"


def test_too_small_an_input_names_the_layer_and_the_smallest_size():
    problems = errors(validate(PRESETS["vgg11"].replace(input_size=16)))
    assert len(problems) == 1 and problems[0].field == "input_size"
    assert "vgg_block5" in problems[0].message
    assert "at least 32" in problems[0].fix  # five 2x2 max-pools need 2**5 pixels


def test_the_spatial_collapse_is_found_in_networks_with_global_pooling_too():
    problems = errors(validate(PRESETS["nin"].replace(input_size=40)))
    assert problems and problems[0].field == "input_size"
    assert "at least" in problems[0].fix


# VGG-11: five 2x2 pools need 2**5. AlexNet: the last 3x3/2 pool needs 3, the one before 7,
# the first 15, and conv1 (11x11, stride 4) gives 15 from 67. LeNet: conv2 (5x5) needs 6
# after a 2x2 pool for its own pool to leave 1, so 12 in.
@pytest.mark.parametrize(("name", "smallest"), [("vgg11", 32), ("alexnet", 67), ("lenet", 12)])
def test_smallest_input_is_the_arithmetic_answer(name, smallest):
    assert smallest_input(PRESETS[name]) == smallest


def test_a_vgg_block_of_32_convolutions_is_a_warning_not_an_error():
    # Seed 003 typed (32, 512) for (3, 512) and built a 42-conv network.
    spec = VGGSpec(conv_arch=((2, 64), (2, 128), (3, 256), (32, 512), (3, 512)))
    problems = validate(spec)
    assert errors(problems) == []
    [warning] = warnings(problems)
    assert warning.field == "conv_arch[3] num_convs" and "(3, 512)" in warning.fix


def test_googlenet_stages_must_add_up_to_the_inception_blocks():
    spec = GoogLeNetSpec(stages=(2, 5, 1))
    assert [p.field for p in errors(validate(spec))] == ["stages"]


def test_absurd_sizes_are_capped():
    spec = AlexNetSpec(convs=((100_000, 11, 4, 0),), pool_after=(0,), input_size=5000)
    fields = {p.field for p in errors(validate(spec))}
    assert fields == {"convs[0] channels", "input_size"}


def test_a_giant_network_is_refused_before_it_is_built_for_real():
    spec = VGGSpec(hidden=(65536, 65536))
    [problem] = errors(validate(spec))
    assert problem.field == "spec" and "parameters" in problem.message


def test_check_raises_spec_error_with_the_problems():
    with pytest.raises(SpecError) as info:
        check(VGGSpec(conv_arch=()))
    assert info.value.problems[0].field == "conv_arch"


def test_parse_literal_reads_the_textbook_tuple_syntax():
    assert parse_literal("((1, 64), (1, 128), (2, 256))", "conv_arch") == (
        (1, 64), (1, 128), (2, 256))


@pytest.mark.parametrize("text", [
    "__import__('os').system('echo hi')", "((1, 64), (1, 128)", "[x for x in ()]",
    "(" * 500 + ")" * 500, "1" * 5000, "lambda: 1", "open('x')",
])
def test_parse_literal_refuses_code_and_garbage_with_a_spec_error(text):
    with pytest.raises(SpecError) as info:
        parse_literal(text, "conv_arch")
    assert info.value.problems[0].field == "conv_arch"


def test_spec_from_data_names_unknown_fields():
    data = {**PRESETS["vgg11"].to_dict(), "conv_arc": [[1, 64]]}
    with pytest.raises(SpecError) as info:
        spec_from_data(data)
    assert "conv_arc" in str(info.value)


def test_spec_from_data_checks_json_types():
    data = json.loads(PRESETS["resnet18"].to_json())
    data["stages"] = [[2, 64], [2, "128"]]
    with pytest.raises(SpecError) as info:
        spec_from_data(data)
    assert [p.field for p in info.value.problems] == ["stages[1] channels"]


def test_a_network_too_deep_to_inspect_is_refused_at_once_naming_its_depth_field():
    giant = PRESETS["resnet18"].replace(stages=tuple((64, 64) for _ in range(64)))
    start = time.perf_counter()
    problems = validate(giant)
    assert time.perf_counter() - start < 1  # 45 s of meta forward passes before
    assert [p.field for p in errors(problems)] == ["stages"]
    assert "8,257 convolution layers" in errors(problems)[0].message
    deep_vgg = PRESETS["vgg11"].replace(conv_arch=tuple((8, 64) for _ in range(60)))
    assert [p.field for p in errors(validate(deep_vgg))] == ["conv_arch"]


def test_the_deepest_presets_stay_well_inside_the_layer_budget():
    resnet152 = PRESETS["resnet50"].replace(stages=((3, 256), (8, 512), (36, 1024), (3, 2048)))
    densenet264 = PRESETS["densenet121"].replace(block_sizes=(6, 12, 64, 48))
    for spec in (resnet152, densenet264, PRESETS["googlenet"]):
        assert not [p for p in validate(spec) if "convolution layers" in p.message]


def test_every_offered_choice_is_accepted_and_nothing_else():
    """The Architecture page's buttons come from CHOICES, as the checks' accepted values do."""
    from cnnlab.arch.presets import PRESETS
    from cnnlab.arch.specs import CHOICES

    for field, options in CHOICES.items():
        spec = next(s for s in PRESETS.values() if isinstance(getattr(s, field, None), str))
        for option in options:
            assert not [p for p in validate(spec.replace(**{field: option}))
                        if p.field == field and p.severity == "error"], (field, option)
        assert any(p.field == field for p in validate(spec.replace(**{field: "bogus"})))
