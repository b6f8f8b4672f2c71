"""One path from JSON to a checked spec: whatever comes in, only SpecError goes out."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnnlab.analysis.layers import inspect_spec
from cnnlab.arch.checks import SpecError, validate
from cnnlab.arch.families import FAMILIES
from cnnlab.arch.parse import MAX_JSON_BYTES, spec_from_data, spec_from_json
from cnnlab.arch.presets import PRESETS
from cnnlab.arch.specs import Spec, VGGSpec
from cnnlab.cli import main
from cnnlab.errors import Problem, errors

HUGE = 10**5000  # past Python's 4,300-digit limit for int <-> str


def nested(depth: int, leaf: object = 1) -> object:
    for _ in range(depth):
        leaf = [leaf]
    return leaf


def nested_tuple(depth: int, leaf: object = (1, 64)) -> object:
    for _ in range(depth):
        leaf = (leaf,)
    return leaf


def messages(exc: SpecError) -> list[str]:
    return [str(p) for p in exc.problems]


# --- regressions: each of these escaped as something other than SpecError -------------------


@pytest.mark.parametrize("text", ["[]", "[1, 2]", '"vgg"', "3", "2.5", "null", "true"])
def test_json_that_is_not_an_object_is_a_spec_error(text):
    with pytest.raises(SpecError) as info:
        spec_from_json(text)
    assert info.value.problems[0].field == "spec" and "not an object" in str(info.value)


def test_a_5000_digit_number_in_json_is_a_spec_error():
    text = PRESETS["vgg11"].to_json().replace('"input_size": 224', '"input_size": ' + "9" * 5000)
    with pytest.raises(SpecError) as info:
        spec_from_json(text)
    assert "too long" in str(info.value)


@pytest.mark.parametrize("depth", [500, 700, 990, 50_000])
def test_deep_nesting_is_a_spec_error(depth):
    inner = "[" * depth + "]" * depth
    for text in (inner, json.dumps({**PRESETS["vgg11"].to_dict(), "hidden": 0})
                 .replace('"hidden": 0', f'"hidden": {inner}')):
        with pytest.raises(SpecError):
            spec_from_json(text)


def test_lists_inside_decoded_tuples_become_tuples_so_the_spec_hashes():
    # A tuple holding lists used to pass `validate` and then fail in the cached inspection.
    spec = spec_from_data({**PRESETS["vgg11-small"].to_dict(),
                           "conv_arch": ([1, 64], [1, 128], [2, 256], [2, 512], [2, 512])})
    assert spec == PRESETS["vgg11-small"]
    inspect_spec(spec)


def test_validate_refuses_lists_a_spec_cannot_hash():
    problems = errors(validate(VGGSpec(conv_arch=([1, 64],))))
    assert [p.field for p in problems] == ["conv_arch[0]"]


def test_a_50_mb_string_is_not_echoed_whole():
    for field in ("family", "pool", "x" * 50_000_000):
        data = {**PRESETS["lenet"].to_dict(), field: "x" * 50_000_000}
        with pytest.raises(SpecError) as info:
            spec_from_data(data)
        assert all(len(m) < 400 for m in messages(info.value))


def test_more_than_100_kb_of_json_is_refused_unread():
    for text in (" " * (MAX_JSON_BYTES + 1), b" " * (MAX_JSON_BYTES + 1)):
        with pytest.raises(SpecError) as info:
            spec_from_json(text)
        assert "bytes" in str(info.value)


def test_keys_that_are_not_strings_are_unknown_fields():
    with pytest.raises(SpecError) as info:
        spec_from_data({**PRESETS["vgg11"].to_dict(), 1: 2, (3,): 4})
    assert "unknown field" in str(info.value)


@pytest.mark.parametrize("family", [[1], {"a": 1}, None, 3, "lenet5"])
def test_an_unknown_or_unhashable_family_is_a_spec_error(family):
    with pytest.raises(SpecError) as info:
        spec_from_data({"family": family})
    assert "unknown family" in str(info.value)


@pytest.mark.parametrize("spec, field", [
    (VGGSpec(input_size=HUGE), "input_size"),
    (VGGSpec(width=HUGE), "width"),
    (VGGSpec(width=-HUGE), "width"),
    (VGGSpec(conv_arch=nested_tuple(5000)), "conv_arch[0]"),
    (VGGSpec(hidden=(HUGE,)), "hidden[0]"),
])
def test_validate_reports_what_used_to_raise(spec, field):
    problems = errors(validate(spec))
    assert [p.field for p in problems] == [field]
    assert all(len(str(p)) < 400 for p in problems)


def test_overrides_apply_before_the_check():
    data = PRESETS["vgg11"].replace(input_size=16).to_dict()  # too small on its own
    assert spec_from_data(data, overrides={"input_size": 32}).input_size == 32


def test_a_valid_spec_comes_back_checked_and_hashable():
    for name, preset in PRESETS.items():
        spec = spec_from_json(preset.to_json().encode())
        assert spec == preset, name
        hash(spec)


@pytest.mark.parametrize("content", [
    b"[1]", b"null", b"{}", ("[" * 900 + "]" * 900).encode(),
    PRESETS["vgg11"].to_json().replace("224", "9" * 5000).encode(), b"\xff\xfe\x00",
])
def test_the_cli_exits_2_on_any_bad_spec_file(capsys, tmp_path, content):
    path = tmp_path / "spec.json"
    path.write_bytes(content)
    assert main(["summary", "--spec", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err


# --- properties ------------------------------------------------------------------------------

LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(-300, 300), st.integers(),
    # Built lazily: hypothesis cannot print a 5,000-digit constant in a strategy's repr.
    st.tuples(st.sampled_from([1, -1]), st.integers(19, 5000)).map(lambda t: t[0] * 10 ** t[1]),
    st.floats(), st.text(max_size=12),
    st.sampled_from(["avg", "max", "relu", "none", "torch", "basic", "bottleneck"]),
)
DATA = st.recursive(
    LEAVES,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.lists(inner, max_size=4).map(tuple),
                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=24,
)
DEEP = st.integers(0, 1200).map(nested)


@st.composite
def mutated_presets(draw) -> dict:
    """A preset's dict with a few fields (or the family) swapped for random data."""
    data = draw(st.sampled_from(list(PRESETS.values()))).to_dict()
    keys = list(data) + ["extra"]
    for key in draw(st.lists(st.sampled_from(keys), max_size=3)):
        data[key] = draw(st.one_of(DATA, DEEP))
    return data


@st.composite
def spec_objects(draw) -> Spec:
    """A spec of some family with random data in some fields, as `validate` may be handed."""
    family = draw(st.sampled_from(list(FAMILIES.values())))
    base = draw(st.sampled_from([p for p in PRESETS.values() if p.family == family.name]))
    names = [f.name for f in dataclasses.fields(family.spec)]
    changes = draw(st.dictionaries(st.sampled_from(names), st.one_of(DATA, DEEP), max_size=3))
    return dataclasses.replace(base, **changes)


def _text(data: object) -> str:
    try:
        return json.dumps(data)
    except ValueError:  # HUGE has no decimal form; write a long number by hand
        return "9" * 5000


TEXTS = st.one_of(
    st.text(max_size=200), st.binary(max_size=200),
    st.one_of(DATA, mutated_presets()).map(_text),
    st.integers(0, 60_000).map(lambda n: "[" * n + "]" * n),
)

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@SETTINGS
@given(data=st.one_of(DATA, DEEP, mutated_presets()))
def test_only_spec_errors_escape_spec_from_data(data):
    try:
        spec = spec_from_data(data)
    except SpecError as exc:
        assert exc.problems and all(isinstance(p, Problem) for p in exc.problems)
        return
    hash(spec)


@SETTINGS
@given(text=TEXTS)
def test_only_spec_errors_escape_spec_from_json(text):
    try:
        hash(spec_from_json(text))
    except SpecError as exc:
        assert exc.problems


@SETTINGS
@given(spec=spec_objects())
def test_validate_never_raises(spec):
    problems = validate(spec)
    assert all(isinstance(p, Problem) and p.field and p.fix for p in problems)
    assert all(len(p.message) < 400 for p in problems)
