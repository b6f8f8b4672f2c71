"""Checking specs: every problem at once, each naming the field, what is wrong and a fix.

Errors make a spec unbuildable; warnings flag legal but suspicious choices (a VGG block of
32 convolutions is usually a typo for 3). User text is parsed here, never evaluated.
"""

from __future__ import annotations

import ast
import math
from typing import Any, Callable

from cnnlab.arch import specs
from cnnlab.arch.specs import Spec
from cnnlab.errors import CnnlabError, Problem, errors, warnings

# Generous caps: far beyond the chapter's networks, small enough to stay on a laptop.
MAX_INPUT_SIZE = 1024
MAX_CHANNELS = 8192
MAX_UNITS = 65536
MAX_CONVS_PER_BLOCK = 64
MAX_BLOCKS = 64
MAX_PARAMS = 2_000_000_000
MAX_TEXT = 2000  # characters of user text we are willing to parse


class SpecError(CnnlabError, ValueError):
    """A spec that cannot be built. `problems` lists every error found."""

    def __init__(self, problems: list[Problem]):
        super().__init__(problems=problems)


# --- parsing user text -------------------------------------------------------------------


def parse_literal(text: str, field: str) -> Any:
    """A Python literal (numbers, tuples, lists) from user text, e.g. "((1, 64), (2, 128))".

    Raises SpecError naming `field` when the text is too long or not a literal. Types and
    ranges are checked by `validate` afterwards: `literal_eval` accepts True, 1e309 and -3.
    """
    if len(text) > MAX_TEXT:
        raise SpecError([Problem(field, f"the text is {len(text)} characters long",
                                 f"keep it under {MAX_TEXT} characters")])
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as exc:
        raise SpecError([Problem(
            field, f"could not read {text.strip()[:60]!r} ({type(exc).__name__})",
            "write numbers in nested tuples, like ((1, 64), (1, 128), (2, 256))")]) from None


def spec_from_dict(data: Any) -> Spec:
    """`specs.from_dict` that raises SpecError (with all field problems) instead of ValueError."""
    try:
        spec = specs.from_dict(data)
    except (ValueError, TypeError) as exc:
        raise SpecError([Problem("spec", str(exc), "start from a preset's JSON")]) from None
    found = errors(validate(spec))
    if found:
        raise SpecError(found)
    return spec


# --- field checks --------------------------------------------------------------------------


def is_int(v: Any) -> bool:
    """A whole number, not a bool (bool is an int subclass; True is not a channel count)."""
    return type(v) is int


def is_number(v: Any) -> bool:
    """A finite int or float (JSON and literal_eval accept 1e309, which is inf)."""
    return type(v) in (int, float) and math.isfinite(v)


class _Checker:
    """Collects problems for one spec. Each method checks one field and never raises."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def error(self, field: str, message: str, fix: str) -> None:
        self.problems.append(Problem(field, message, fix))

    def warn(self, field: str, message: str, fix: str) -> None:
        self.problems.append(Problem(field, message, fix, "warning"))

    def int_in(self, field: str, v: Any, low: int, high: int, what: str = "a whole number") -> bool:
        if not is_int(v):
            self.error(field, f"{v!r} is not {what}", f"use a whole number from {low} to {high}")
            return False
        if not low <= v <= high:
            self.error(field, f"{v} is out of range", f"use a whole number from {low} to {high}")
            return False
        return True

    def number_in(self, field: str, v: Any, low: float, high: float, *, low_open: bool = False,
                  high_open: bool = False) -> bool:
        ok = is_number(v) and not isinstance(v, bool)
        ok = ok and (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
        if not ok:
            lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
            self.error(field, f"{v!r} is not a number in {lo}{low}, {high}{hi}",
                       f"use a number in {lo}{low}, {high}{hi}")
        return ok

    def choice(self, field: str, v: Any, options: tuple[str, ...]) -> bool:
        if v not in options:
            self.error(field, f"{v!r} is not one of {', '.join(options)}",
                       f"choose one of {', '.join(options)}")
            return False
        return True

    def flag(self, field: str, v: Any) -> None:
        if type(v) is not bool:
            self.error(field, f"{v!r} is not true or false", "use true or false")

    def tuple_of(self, field: str, v: Any, length: int | None, example: str,
                 max_items: int = MAX_BLOCKS, min_items: int = 1) -> bool:
        """`v` is a tuple (or list) of `min_items` to `max_items` items, each of `length`."""
        fix = f"write it like {example}"
        if not isinstance(v, (tuple, list)):
            self.error(field, f"{_short(v)} is not a tuple", fix)
            return False
        if not min_items <= len(v) <= max_items:
            self.error(field, f"has {len(v)} entries", f"use {min_items} to {max_items} entries")
            return False
        if length is not None:
            for i, item in enumerate(v):
                if not isinstance(item, (tuple, list)) or len(item) != length:
                    self.error(f"{field}[{i}]", f"{_short(item)} is not a tuple of {length}", fix)
                    return False
        return True

    def units(self, field: str, values: Any, high: int = MAX_UNITS) -> None:
        if self.tuple_of(field, values, None, "(4096, 4096)", min_items=0):
            for i, v in enumerate(values):
                self.int_in(f"{field}[{i}]", v, 1, high)


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_common(c: _Checker, spec: Spec) -> None:
    c.int_in("input_size", spec.input_size, 1, MAX_INPUT_SIZE)
    c.int_in("in_channels", spec.in_channels, 1, 64)
    c.int_in("num_classes", spec.num_classes, 1, 100_000)
    if c.number_in("width", spec.width, 0, 16, low_open=True) and spec.width < 0.01:
        c.warn("width", f"{spec.width} shrinks most layers to a single channel",
               "use a width of 0.05 or more")


def _check_alexnet(c: _Checker, s: specs.AlexNetSpec) -> None:
    if c.tuple_of("convs", s.convs, 4, "((96, 11, 4, 0), (256, 5, 1, 2))"):
        for i, (ch, k, st, p) in enumerate(s.convs):
            f = f"convs[{i}]"
            c.int_in(f + " channels", ch, 1, MAX_CHANNELS)
            c.int_in(f + " kernel", k, 1, 31)
            c.int_in(f + " stride", st, 1, 16)
            c.int_in(f + " padding", p, 0, 15)
        if c.tuple_of("pool_after", s.pool_after, None, "(0, 1, 4)", min_items=0):
            for i, v in enumerate(s.pool_after):
                c.int_in(f"pool_after[{i}]", v, 0, len(s.convs) - 1, "a conv index")
    c.units("hidden", s.hidden)
    c.number_in("dropout", s.dropout, 0, 1, high_open=True)


def _check_vgg(c: _Checker, s: specs.VGGSpec) -> None:
    if c.tuple_of("conv_arch", s.conv_arch, 2, "((1, 64), (1, 128), (2, 256))"):
        for i, (n, ch) in enumerate(s.conv_arch):
            f = f"conv_arch[{i}]"
            if c.int_in(f + " num_convs", n, 1, MAX_CONVS_PER_BLOCK) and n > 8:
                c.warn(f + " num_convs", f"a vgg_block of {n} convolutions is unusually deep "
                       "(VGG-19 has at most 4 per block)", f"did you mean ({n // 10}, {ch})?"
                       if n >= 10 else "check the first number of the pair")
            c.int_in(f + " channels", ch, 1, MAX_CHANNELS)
    c.units("hidden", s.hidden)
    c.number_in("dropout", s.dropout, 0, 1, high_open=True)
    c.flag("batch_norm", s.batch_norm)


def _check_nin(c: _Checker, s: specs.NiNSpec) -> None:
    if c.tuple_of("blocks", s.blocks, 6, "((96, 11, 4, 0, 3, 2), (256, 5, 1, 2, 3, 2))"):
        names = ("channels", "kernel", "stride", "padding", "pool_kernel", "pool_stride")
        highs = (MAX_CHANNELS, 31, 16, 15, 15, 15)
        for i, block in enumerate(s.blocks):
            for name, v, high in zip(names, block, highs):
                c.int_in(f"blocks[{i}] {name}", v, 0 if name == "padding" else 1, high)
    c.int_in("one_by_one", s.one_by_one, 0, 8)
    c.number_in("dropout", s.dropout, 0, 1, high_open=True)


def _check_googlenet(c: _Checker, s: specs.GoogLeNetSpec) -> None:
    example = "(64, (96, 128), (16, 32), 32)"
    if c.tuple_of("inception", s.inception, 4, f"({example}, ...)"):
        for i, (c1, c2, c3, c4) in enumerate(s.inception):
            f = f"inception[{i}]"
            c.int_in(f + " c1", c1, 1, MAX_CHANNELS)
            for name, pair in (("c2", c2), ("c3", c3)):
                if c.tuple_of(f + " " + name, pair, None, example, max_items=2, min_items=2):
                    for j, v in enumerate(pair):
                        c.int_in(f"{f} {name}[{j}]", v, 1, MAX_CHANNELS)
            c.int_in(f + " c4", c4, 1, MAX_CHANNELS)
    if c.tuple_of("stages", s.stages, None, "(2, 5, 2)", max_items=8):
        counted = [c.int_in(f"stages[{i}]", v, 1, 32) for i, v in enumerate(s.stages)]
        if all(counted) and isinstance(s.inception, (tuple, list)) \
                and sum(s.stages) != len(s.inception):
            c.error("stages", f"the stages hold {sum(s.stages)} Inception blocks but "
                    f"`inception` lists {len(s.inception)}",
                    "make the stage sizes add up to the number of Inception blocks")
    c.flag("batch_norm", s.batch_norm)


def _check_lenet(c: _Checker, s: specs.LeNetSpec) -> None:
    if c.tuple_of("conv_channels", s.conv_channels, None, "(6, 16)", max_items=2, min_items=2):
        for i, v in enumerate(s.conv_channels):
            c.int_in(f"conv_channels[{i}]", v, 1, MAX_CHANNELS)
    c.units("hidden", s.hidden)
    c.int_in("first_padding", s.first_padding, 0, 4)
    c.choice("pool", s.pool, ("avg", "max"))
    c.choice("activation", s.activation, ("sigmoid", "relu"))
    c.choice("batch_norm", s.batch_norm, ("none", "scratch", "torch"))


def _check_resnet(c: _Checker, s: specs.ResNetSpec) -> None:
    c.int_in("stem_channels", s.stem_channels, 1, MAX_CHANNELS)
    if c.tuple_of("stages", s.stages, 2, "((2, 64), (2, 128), (2, 256), (2, 512))"):
        for i, (n, ch) in enumerate(s.stages):
            c.int_in(f"stages[{i}] num_residuals", n, 1, MAX_CONVS_PER_BLOCK)
            c.int_in(f"stages[{i}] channels", ch, 1, MAX_CHANNELS)
            if s.block == "bottleneck" and is_int(ch) and ch % 4:
                c.warn(f"stages[{i}] channels", f"{ch} is not a multiple of 4, so the "
                       "bottleneck width is rounded down", "use a multiple of 4")
    c.choice("block", s.block, ("basic", "bottleneck"))
    c.flag("preact", s.preact)


def _check_densenet(c: _Checker, s: specs.DenseNetSpec) -> None:
    c.int_in("stem_channels", s.stem_channels, 1, MAX_CHANNELS)
    c.int_in("growth_rate", s.growth_rate, 1, 1024)
    if c.tuple_of("block_sizes", s.block_sizes, None, "(4, 4, 4, 4)", max_items=16):
        for i, v in enumerate(s.block_sizes):
            c.int_in(f"block_sizes[{i}]", v, 1, 128)
    c.number_in("compression", s.compression, 0, 1, low_open=True)
    c.flag("bottleneck", s.bottleneck)


FAMILY_CHECKS: dict[str, Callable[[_Checker, Any], None]] = {
    "alexnet": _check_alexnet, "vgg": _check_vgg, "nin": _check_nin,
    "googlenet": _check_googlenet, "lenet": _check_lenet, "resnet": _check_resnet,
    "densenet": _check_densenet,
}


# --- building checks ---------------------------------------------------------------------


def smallest_input(spec: Spec, upper: int = MAX_INPUT_SIZE) -> int | None:
    """The smallest square input size this spec's network accepts, or None up to `upper`."""
    from cnnlab.analysis.layers import smallest_input_size
    from cnnlab.arch.models import build

    # A factory rebuilds the dense head for each size, as the spec would at that size.
    return smallest_input_size(lambda size: build(spec.replace(input_size=size)),
                               spec.in_channels, upper)


def _check_build(c: _Checker, spec: Spec) -> None:
    """Build on meta and push an input through: catches the spatial collapse and giant nets."""
    from cnnlab.analysis.layers import InspectionError, inspect_spec
    from cnnlab.arch.models.common import SpatialCollapse

    size = spec.input_size
    failure = None
    try:
        # The cached table the summary and the pages show next: one meta forward for all.
        params = inspect_spec(spec).total_params
    except InspectionError as exc:
        failure = (exc.layer, exc.message)
    except SpatialCollapse as exc:  # the dense head found no features left to size itself
        failure = (exc.layer, str(exc))
    if failure is not None:
        layer, _ = failure
        where = f" at layer '{layer}'" if layer else ""
        smallest = smallest_input(spec)
        fix = (f"use an input size of at least {smallest}, or remove a downsampling layer"
               if smallest else "remove downsampling layers or use fewer blocks")
        c.error("input_size", f"a {size}x{size} input is too small for this network: the "
                f"feature map shrinks to nothing{where}", fix)
        return
    if params > MAX_PARAMS:
        c.error("spec", f"the network has {params:,} parameters",
                f"stay under {MAX_PARAMS:,}: lower the width, channels or dense sizes")


def validate(spec: Spec) -> list[Problem]:
    """Every problem with `spec`, errors and warnings, in field order. Never raises."""
    c = _Checker()
    _check_common(c, spec)
    FAMILY_CHECKS[spec.family](c, spec)
    if not errors(c.problems):
        _check_build(c, spec)
    return c.problems


def check(spec: Spec) -> list[Problem]:
    """Raise SpecError listing the errors; return the warnings when there are none."""
    found = validate(spec)
    if errors(found):
        raise SpecError(errors(found))
    return warnings(found)
