"""Property: any spec either fails validation with messages, or builds, and then its
meta-device shapes equal a real forward pass. No other exception escapes."""

from __future__ import annotations

import dataclasses

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnnlab.arch import specs
from cnnlab.arch.checks import validate
from cnnlab.arch.models import build
from cnnlab.errors import Problem, errors
from tests.conftest import block_shapes

BAD = st.sampled_from([0, -1, True, "3", 2.5, None, (), ((1, 2),), 10**9, float("nan")])


def num(low: int, high: int):
    """Whole numbers in a plausible range: the network may still be too deep for its input."""
    return st.integers(low, high)


def tuples(item, min_size=1, max_size=4):
    return st.lists(item, min_size=min_size, max_size=max_size).map(tuple)


common = dict(
    input_size=num(8, 64),
    width=st.floats(0.05, 0.3),
    num_classes=num(2, 12),
    in_channels=num(1, 3),
)

FAMILY_SPECS = [
    st.builds(specs.AlexNetSpec, **common,
              convs=tuples(st.tuples(num(1, 32), num(1, 7), num(1, 3), num(0, 3))),
              pool_after=tuples(st.integers(0, 3), min_size=0),
              hidden=tuples(num(1, 32), min_size=0, max_size=2)),
    st.builds(specs.VGGSpec, **common,
              conv_arch=tuples(st.tuples(num(1, 3), num(1, 64))),
              hidden=tuples(num(1, 32), min_size=0, max_size=2),
              batch_norm=st.booleans()),
    st.builds(specs.NiNSpec, **common,
              blocks=tuples(st.tuples(num(1, 32), num(1, 5), num(1, 2), num(0, 2),
                                      num(1, 3), num(1, 2)), max_size=3),
              one_by_one=num(0, 2)),
    st.builds(specs.GoogLeNetSpec, **common,
              inception=tuples(st.tuples(num(1, 64), st.tuples(num(1, 64), num(1, 64)),
                                         st.tuples(num(1, 32), num(1, 32)), num(1, 32)),
                               max_size=5),
              stages=tuples(st.integers(1, 2), max_size=3),
              batch_norm=st.booleans()),
    st.builds(specs.LeNetSpec, **common,
              conv_channels=st.tuples(num(1, 16), num(1, 32)),
              first_padding=num(0, 2),
              pool=st.sampled_from(["avg", "max"]),
              activation=st.sampled_from(["sigmoid", "relu"]),
              batch_norm=st.sampled_from(["none", "scratch", "torch"])),
    st.builds(specs.ResNetSpec, **common,
              stem_channels=num(1, 64),
              stages=tuples(st.tuples(num(1, 2), num(1, 128)), max_size=4),
              block=st.sampled_from(["basic", "bottleneck"]),
              preact=st.booleans()),
    st.builds(specs.DenseNetSpec, **common,
              stem_channels=num(1, 64), growth_rate=num(1, 48),
              block_sizes=tuples(num(1, 4), max_size=4),
              compression=st.floats(0.1, 1.0),
              bottleneck=st.booleans()),
]




@st.composite
def corrupted(draw, spec_strategy):
    """A plausible spec with one field, or one number inside a tuple field, made bad."""
    spec = draw(spec_strategy)
    field = draw(st.sampled_from([f.name for f in dataclasses.fields(spec)]))
    value = getattr(spec, field)
    if isinstance(value, tuple) and value and draw(st.booleans()):
        i = draw(st.integers(0, len(value) - 1))
        value = value[:i] + (draw(BAD),) + value[i + 1:]
    else:
        value = draw(BAD)
    return dataclasses.replace(spec, **{field: value})


ANY_SPEC = st.one_of(st.one_of(FAMILY_SPECS), corrupted(st.one_of(FAMILY_SPECS)))


def real_block_shapes(spec) -> dict[str, tuple[int, ...]]:
    torch.manual_seed(0)
    model = build(spec).eval()
    x = torch.rand(2, spec.in_channels, spec.input_size, spec.input_size)
    shapes = {}
    with torch.no_grad():
        for name, block in model.named_children():
            x = block(x)
            shapes[name] = tuple(x.shape[1:])
    return shapes


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=ANY_SPEC)
def test_a_spec_is_either_rejected_with_messages_or_builds_with_matching_shapes(spec):
    problems = validate(spec)
    assert all(isinstance(p, Problem) and p.field and p.fix for p in problems)
    if errors(problems):
        return
    meta = block_shapes(spec)
    assert meta == real_block_shapes(spec)
    assert list(meta.values())[-1] == (spec.num_classes,)
