"""Checking specs: every problem at once, each naming the field, what is wrong and a fix.

Errors make a spec unbuildable; warnings flag legal but suspicious choices (a VGG block of
32 convolutions is usually a typo for 3). User text is parsed here, never evaluated.
"""

from __future__ import annotations

import ast
import math
import reprlib
from typing import Any

from cnnlab.arch.specs import CHOICES, NormSwitches, Spec
from cnnlab.errors import CnnlabError, Problem, errors, warnings

# Generous caps: far beyond the chapter's networks, small enough to stay on a laptop.
MAX_INPUT_SIZE = 1024
MAX_CHANNELS = 8192
MAX_UNITS = 65536
MAX_CONVS_PER_BLOCK = 64
MAX_BLOCKS = 64
MAX_PARAMS = 2_000_000_000
# Convolutions in one network: inspecting one costs about 5 ms of server CPU per layer (a ResNet
# of 64 stages of 64 blocks, 8,000 convolutions, took 45 s), and every student's edit does it.
# Well above the deepest classic networks: ResNet-152 has 155, DenseNet-264 about 260.
MAX_CONVS = 400
MAX_TEXT = 2000  # characters of user text we are willing to parse
MAX_ECHO = 60  # characters of a user's value quoted back in a message


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
            field, f"could not read {echo(text.strip())} ({type(exc).__name__})",
            "write numbers in nested tuples, like ((1, 64), (1, 128), (2, 256))")]) from None


# --- field checks --------------------------------------------------------------------------


def is_int(v: Any) -> bool:
    """A whole number, not a bool (bool is an int subclass; True is not a channel count)."""
    return type(v) is int


def is_number(v: Any) -> bool:
    """A finite int or float (JSON and literal_eval accept 1e309, which is inf). Ints are
    always finite; asking `math.isfinite` about a 5,000-digit one raises OverflowError."""
    return type(v) is int or (type(v) is float and math.isfinite(v))


# Cuts nested values short by level and length, so quoting never walks a 5,000-deep tuple.
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 3, MAX_ECHO, MAX_ECHO, MAX_ECHO
_REPR.maxtuple = _REPR.maxlist = _REPR.maxdict = _REPR.maxset = 8


def echo(value: Any) -> str:
    """`value` quoted for a message, at most MAX_ECHO characters: user input may be a 50 MB
    string, a 5,000-digit number (whose repr raises ValueError) or nested 5,000 deep."""
    if type(value) is int and value.bit_length() > 200:
        return f"a {value.bit_length()}-bit whole number"
    try:
        text = _REPR.repr(value)
    except (ValueError, RecursionError):  # a huge int nested inside a tuple, say
        text = f"a {type(value).__name__}"
    return text if len(text) <= MAX_ECHO else text[:MAX_ECHO - 3] + "..."


class Checker:
    """Collects problems for one spec. Each method checks one field and never raises."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def error(self, field: str, message: str, fix: str) -> None:
        self.problems.append(Problem(field, message, fix))

    def warn(self, field: str, message: str, fix: str) -> None:
        self.problems.append(Problem(field, message, fix, "warning"))

    def int_in(self, field: str, v: Any, low: int, high: int, what: str = "a whole number") -> bool:
        if not is_int(v):
            self.error(field, f"{echo(v)} is not {what}",
                       f"use a whole number from {low} to {high}")
            return False
        if not low <= v <= high:
            self.error(field, f"{echo(v)} is out of range",
                       f"use a whole number from {low} to {high}")
            return False
        return True

    def number_in(self, field: str, v: Any, low: float, high: float, *, low_open: bool = False,
                  high_open: bool = False) -> bool:
        ok = is_number(v) and not isinstance(v, bool)
        ok = ok and (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
        if not ok:
            lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
            self.error(field, f"{echo(v)} is not a number in {lo}{low}, {high}{hi}",
                       f"use a number in {lo}{low}, {high}{hi}")
        return ok

    def choice(self, field: str, v: Any, options: tuple[str, ...]) -> bool:
        if v not in options:
            self.error(field, f"{echo(v)} is not one of {', '.join(options)}",
                       f"choose one of {', '.join(options)}")
            return False
        return True

    def flag(self, field: str, v: Any) -> None:
        if type(v) is not bool:
            self.error(field, f"{echo(v)} is not true or false", "use true or false")

    def tuple_of(self, field: str, v: Any, length: int | None, example: str,
                 max_items: int = MAX_BLOCKS, min_items: int = 1) -> bool:
        """`v` is a tuple of `min_items` to `max_items` items, each a tuple of `length`.
        Lists are refused: a spec keys caches, so everything in it must be hashable."""
        fix = f"write it like {example}"
        if not isinstance(v, tuple):
            self.error(field, f"{echo(v)} is not a tuple", fix)
            return False
        if not min_items <= len(v) <= max_items:
            self.error(field, f"has {len(v)} entries", f"use {min_items} to {max_items} entries")
            return False
        if length is not None:
            for i, item in enumerate(v):
                if not isinstance(item, tuple) or len(item) != length:
                    self.error(f"{field}[{i}]", f"{echo(item)} is not a tuple of {length}", fix)
                    return False
        return True

    def conv_budget(self, field: str, convs: int) -> None:
        """Refuse more than MAX_CONVS convolutions: the work to inspect a network grows with
        them. `field` is the one that sets the depth, `convs` its count (an upper bound)."""
        if convs > MAX_CONVS:
            self.error(field, f"makes {convs:,} convolution layers",
                       f"use at most {MAX_CONVS:,}: fewer blocks or fewer layers per block")

    def units(self, field: str, values: Any, high: int = MAX_UNITS) -> None:
        if self.tuple_of(field, values, None, "(4096, 4096)", min_items=0):
            for i, v in enumerate(values):
                self.int_in(f"{field}[{i}]", v, 1, high)


def check_norm(c: Checker, s: NormSwitches, inactive: str = "") -> None:
    """The normalization switches (`NormSwitches`). `inactive` says why they do nothing in this
    spec ("batch_norm is off"), which a warning repeats for each switch moved off its default:
    a student who unticks conv_bias on a VGG without batch norm should know nothing changed."""
    c.choice("norm_kind", s.norm_kind, CHOICES["norm_kind"])
    c.flag("conv_bias", s.conv_bias)
    c.flag("norm_affine", s.norm_affine)
    defaults = {"norm_kind": "batch", "conv_bias": True, "norm_affine": True}
    if not inactive and s.norm_kind == "none":  # no norm: nothing absorbs or scales
        inactive = "norm_kind is 'none'"
        del defaults["norm_kind"]
    if not inactive:
        return
    for field, default in defaults.items():
        if getattr(s, field) != default:
            c.warn(field, f"has no effect while {inactive}", f"turn normalization on, or "
                   f"set {field} back to {echo(default)}")


def _check_common(c: Checker, spec: Spec) -> None:
    c.int_in("input_size", spec.input_size, 1, MAX_INPUT_SIZE)
    c.int_in("in_channels", spec.in_channels, 1, 64)
    c.int_in("num_classes", spec.num_classes, 1, 100_000)
    if c.number_in("width", spec.width, 0, 16, low_open=True) and spec.width < 0.01:
        c.warn("width", f"{spec.width} shrinks most layers to a single channel",
               "use a width of 0.05 or more")


# --- building checks ---------------------------------------------------------------------


def _check_build(c: Checker, spec: Spec) -> None:
    """Build on meta and push an input through: catches the spatial collapse and giant nets."""
    from cnnlab.analysis.layers import InspectionError, inspect_spec
    from cnnlab.analysis.smallest_input import (
        collapsed_before_end,
        smallest_input,
        smallest_uncollapsed_input,
    )
    from cnnlab.arch.models.common import SpatialCollapse

    size = spec.input_size
    failure = None
    try:
        # The cached table the summary and the pages show next: one meta forward for all.
        table = inspect_spec(spec)
        params = table.total_params
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
    collapse = collapsed_before_end(table)
    if collapse is not None:
        c.warn("input_size", f"at {size}x{size} the feature maps are 1x1 after layer "
               f"'{collapse[0]}', so '{collapse[1]}' and the convolutions after it see a single "
               "pixel", fix_collapse(smallest_uncollapsed_input(spec)))


def fix_collapse(least: int | None) -> str:
    """The fix for maps that reach 1x1 early; no input size helps a network that halves them
    more often than MAX_INPUT_SIZE allows."""
    if least is None:
        return "use fewer downsampling layers (fewer stages or blocks)"
    return f"use an input size of at least {least}, or fewer downsampling layers"


def validate(spec: Spec) -> list[Problem]:
    """Every problem with `spec`, errors and warnings, in field order. Never raises."""
    # Imported here: the family modules import this one for `Checker`.
    from cnnlab.arch.families import FAMILIES

    c = Checker()
    _check_common(c, spec)
    FAMILIES[spec.family].check(c, spec)
    if not errors(c.problems):
        _check_build(c, spec)
    return c.problems


def check(spec: Spec) -> list[Problem]:
    """Raise SpecError listing the errors; return the warnings when there are none."""
    found = validate(spec)
    if errors(found):
        raise SpecError(errors(found))
    return warnings(found)
