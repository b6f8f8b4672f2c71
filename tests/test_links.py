"""Links: a spec and a training config to URL query parameters and back, whatever the URL."""

from __future__ import annotations

import pytest

from cnnlab.arch.presets import PRESETS, VGG_D
from cnnlab.training.config import TrainConfig
from cnnlab.training.recipes import textbook_config
from cnnlab.views.links import (
    CONFIG_FIELDS,
    MODEL,
    SPEC_FIELDS,
    config_from_query,
    config_query,
    spec_from_query,
    spec_query,
)


@pytest.mark.parametrize("name", list(PRESETS))
def test_a_preset_is_its_name_alone(name):
    assert spec_query(PRESETS[name]) == {MODEL: name}
    assert spec_from_query({MODEL: name}) == (PRESETS[name], [])


def test_an_edit_is_the_nearest_preset_and_the_fields_that_differ():
    vgg16_half = PRESETS["vgg11"].replace(conv_arch=VGG_D, width=0.5)
    query = spec_query(vgg16_half)
    assert query[MODEL] in PRESETS and PRESETS[query[MODEL]].family == "vgg"
    assert query["width"] == "0.5"
    assert " " not in "".join(query.values())  # readable and compact in a URL
    assert spec_from_query(query) == (vgg16_half, [])


def test_text_fields_are_bare_words_and_every_field_round_trips():
    lenet = PRESETS["lenet"].replace(pool="max", activation="relu", hidden=(64,))
    query = spec_query(lenet)
    assert query["pool"] == "max" and query["activation"] == "relu"
    assert query["hidden"] == "(64,)"
    assert spec_from_query(query)[0] == lenet
    resnet = PRESETS["resnet18"].replace(block="bottleneck", preact=True, stages=((1, 32),))
    assert spec_from_query(spec_query(resnet))[0] == resnet


def test_without_a_model_the_page_keeps_its_default():
    assert spec_from_query({}) == (None, [])
    assert spec_from_query({"run": "20261130-000000-abcdef"}) == (None, [])


@pytest.mark.parametrize("query, field", [
    ({MODEL: "vgg99"}, MODEL),
    ({MODEL: "vgg11", "width": "__import__('os')"}, "width"),  # parsed, never evaluated
    ({MODEL: "vgg11", "width": "-1"}, "width"),
    ({MODEL: "vgg11", "conv_arch": "((1,64),(0,128))"}, "conv_arch[1] num_convs"),
    ({MODEL: "vgg11", "growth_rate": "12"}, "growth_rate"),  # a DenseNet field on a VGG
    ({MODEL: "vgg11", "width": "9" * 5000}, "width"),
    ({MODEL: "vgg11", "conv_arch": "(" * 600 + ")" * 600}, "conv_arch"),
    ({MODEL: "lenet", "pool": "median"}, "pool"),
])
def test_a_bad_link_names_the_parameter_and_never_raises(query, field):
    spec, problems = spec_from_query(query)
    assert spec is None and problems
    assert any(p.field.startswith(field) for p in problems), problems


def test_a_config_link_holds_what_differs_from_the_recipe_and_comes_back():
    recipe = textbook_config("bn-lenet")
    config = recipe.replace(lr=0.5, epochs=3, data="sample", optimizer="adam")
    query = config_query(config, recipe)
    assert query == {"lr": "0.5", "epochs": "3", "data": "sample", "optimizer": "adam"}
    assert config_from_query(query, recipe) == (config, [])
    assert config_from_query({}, recipe) == (recipe, [])


@pytest.mark.parametrize("query, field", [
    ({"lr": "-1"}, "lr"), ({"epochs": "ten"}, "epochs"), ({"optimizer": "rmsprop"}, "optimizer"),
    ({"batch_size": "1e999"}, "batch_size"),
])
def test_a_bad_config_link_names_the_parameter(query, field):
    config, problems = config_from_query(query, TrainConfig())
    assert config is None and any(p.field == field for p in problems), problems


def test_spec_and_config_parameters_never_share_a_name():
    """One URL carries both on the Train page; a shared name would be read twice."""
    assert not SPEC_FIELDS & CONFIG_FIELDS
    assert MODEL not in SPEC_FIELDS | CONFIG_FIELDS


def test_a_share_link_is_the_page_address_with_the_views_parameters():
    from cnnlab.views.links import share_link

    link = share_link("http://lab:8501/train?old=1#top", {"model": "vgg11",
                                                          "conv_arch": "((1,64),(2,128))"})
    assert link == "http://lab:8501/train?model=vgg11&conv_arch=((1,64),(2,128))"
    assert share_link("http://lab:8501/", {}) == "http://lab:8501/"
    assert "%26" in share_link("http://lab/", {"name": "a&b"})  # values cannot add parameters


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

PARAM_NAMES = st.sampled_from(sorted(SPEC_FIELDS | CONFIG_FIELDS | {MODEL, "run", "x"}))
PARAM_TEXT = st.one_of(st.text(max_size=40), st.sampled_from(
    ["0", "-1", "1e999", "nan", "True", "None", "()", "((1,64),)", "[[1]]", "'a'", "9" * 400,
     "(" * 300, "max", "vgg11", "lenet", "resnet18"]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(query=st.dictionaries(PARAM_NAMES, PARAM_TEXT, max_size=6))
def test_any_link_gives_a_checked_spec_and_config_or_problems(query):
    spec, problems = spec_from_query(query)
    assert (spec is None) or not problems
    config, config_problems = config_from_query(query, TrainConfig())
    assert (config is None) == bool(config_problems)
