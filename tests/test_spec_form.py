"""The Architecture page's form as data (cnnlab.views.spec_form): every field of every family
has one widget that can show and read it, and nothing else has one."""

from __future__ import annotations

import dataclasses

import pytest

from cnnlab.arch.families import FAMILIES
from cnnlab.arch.presets import PRESETS
from cnnlab.arch.specs import CHOICES
from cnnlab.views import editor as editing
from cnnlab.views import spec_form


def widgets(family: str) -> tuple[spec_form.Field, ...]:
    form = spec_form.FAMILY_FORMS[family]
    norm = spec_form.norm_fields(form.norm) if form.norm is not None else ()
    return spec_form.COMMON + form.left + form.right + norm


def first_preset(family: str):
    return next(spec for spec in PRESETS.values() if spec.family == family)


def test_every_family_has_a_form():
    assert set(spec_form.FAMILY_FORMS) == set(FAMILIES)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_spec_field_has_a_widget_and_every_widget_a_spec_field(family):
    spec = first_preset(family)
    fields = {f.name for f in dataclasses.fields(spec)}
    edited = {f.name for f in widgets(family)}
    by_another = {field for (fam, field) in editing.EDITED_BY if fam == family}
    assert edited == fields - by_another  # AlexNet's pool column sets pool_after


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_widget_can_show_its_field(family):
    spec = first_preset(family)
    for field in widgets(family):
        assert field.kind in spec_form.KINDS
        if field.kind == "choice":
            assert getattr(spec, field.name) in CHOICES[field.name]
        elif field.kind == "table":
            assert editing.rows_of(spec, field.name)
        elif field.kind == "text":
            assert isinstance(editing.text_of(spec, field.name), str)
        elif field.kind == "toggle":
            assert type(getattr(spec, field.name)) is bool
        else:  # a float step for a float field, a whole step for a whole one
            assert isinstance(field.step, float) == (type(getattr(spec, field.name)) is float)


def test_the_norm_switches_say_what_turns_them_on():
    kind = spec_form.norm_fields("batch norm on")[0]
    assert kind.name == "norm_kind" and "BatchNorm (with batch norm on): batch" in kind.help
    assert "BatchNorm: batch" in spec_form.norm_fields("")[0].help


def test_googlenets_caption_names_each_stages_blocks_and_channels():
    caption = spec_form.stage_caption(PRESETS["googlenet"])
    assert caption.startswith("**b3**: 2 blocks → 480 channels · **b4**: 5 blocks")
