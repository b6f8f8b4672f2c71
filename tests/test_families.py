"""Each family registered once with all its pieces; presets named once."""

from __future__ import annotations

import dataclasses

import pytest

from cnnlab.arch import families
from cnnlab.arch.families import FAMILIES, Family, register
from cnnlab.arch.models import build
from cnnlab.arch.presets import PRESETS, preset_name
from cnnlab.arch.specs import Spec, VGGSpec
from cnnlab.training.recipes import TEXTBOOK_RECIPES, default_config, textbook_config
from tests.conftest import meta_model


def test_the_families_are_the_chapters_in_its_order():
    assert list(FAMILIES) == ["alexnet", "vgg", "nin", "googlenet", "lenet", "resnet",
                              "densenet"]
    assert set(FAMILIES) == {spec.family for spec in PRESETS.values()}


@pytest.mark.parametrize("family", list(FAMILIES.values()), ids=list(FAMILIES))
def test_a_family_has_every_piece(family):
    assert family.title and family.spec.family == family.name
    module = f"cnnlab.arch.models.{family.name}"  # all of it registered from one place
    assert family.build.__module__ == family.check.__module__ == module
    spec = family.spec()
    assert family.recipe(spec) in TEXTBOOK_RECIPES
    assert meta_model(spec) is not None  # the defaults build


def test_a_second_registration_of_a_name_is_refused():
    before = dict(FAMILIES)
    with pytest.raises(ValueError, match="already registered"):
        register(dataclasses.replace(FAMILIES["vgg"], title="VGG again"))
    assert FAMILIES == before


def test_a_spec_class_of_another_family_is_refused():
    with pytest.raises(ValueError, match="spec class"):
        register(dataclasses.replace(FAMILIES["vgg"], name="vgg-too"))
    assert "vgg-too" not in FAMILIES


def test_build_uses_the_registered_builder(monkeypatch):
    calls: list[Spec] = []
    vgg = FAMILIES["vgg"]
    monkeypatch.setitem(families.FAMILIES, "vgg", dataclasses.replace(
        vgg, build=lambda spec: calls.append(spec) or vgg.build(spec)))
    build(PRESETS["vgg11-small"])
    assert calls == [PRESETS["vgg11-small"]]


@pytest.mark.parametrize("name", list(PRESETS))
def test_an_edited_spec_trains_with_its_familys_recipe(name):
    spec = PRESETS[name].replace(num_classes=7)  # equal to no preset: the family's recipe
    assert default_config(spec) == textbook_config(FAMILIES[spec.family].recipe(spec))


def test_family_is_a_frozen_record():
    with pytest.raises(dataclasses.FrozenInstanceError):
        FAMILIES["vgg"].title = "V"  # type: ignore[misc]
    assert isinstance(FAMILIES["vgg"], Family)


# --- preset names ----------------------------------------------------------------------------


def test_preset_name_finds_equal_specs_only():
    assert preset_name(VGGSpec(conv_arch=PRESETS["vgg16"].conv_arch)) == "vgg16"
    assert preset_name(PRESETS["vgg11"].replace(input_size=96)) is None
    assert preset_name(PRESETS["vgg11"].replace(input_size=96), any_input_size=True) == "vgg11"


def test_no_two_presets_differ_only_in_input_size():
    # `preset_name(..., any_input_size=True)` relies on it.
    for name, spec in PRESETS.items():
        assert preset_name(spec.replace(input_size=7), any_input_size=True) == name
