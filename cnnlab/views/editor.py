"""Editing a spec from a form: text fields, tables of rows and uploaded JSON, turned into specs.

The Architecture page shows a spec's tuples as text (the textbook's syntax) and as tables
(one row per block); this module converts both ways and applies an edit: the candidate spec is
parsed and validated, and comes back only when it has no errors. User text is parsed
(`validation.parse_literal`, plain int parsing), never evaluated. No Streamlit in here.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from collections.abc import Callable, Mapping
from typing import Any

from cnnlab.arch import specs
from cnnlab.arch.checks import MAX_TEXT, SpecError, parse_literal, validate
from cnnlab.arch.families import FAMILIES
from cnnlab.arch.parse import freeze, spec_from_json
from cnnlab.arch.presets import PRESETS, preset_name
from cnnlab.arch.specs import Spec
from cnnlab.errors import Problem, errors
from cnnlab.views import links

# Names as the chapter writes them, in the chapter's order.
FAMILY_TITLES = {name: family.title for name, family in FAMILIES.items()}  # chapter order
DEFAULT_PRESET = "alexnet"  # the page opens on the chapter's first network

Row = dict[str, Any]


# --- presets ---------------------------------------------------------------------------------


def presets_for(family: str) -> list[str]:
    """The preset names of one family, in `PRESETS` order."""
    return [name for name, spec in PRESETS.items() if spec.family == family]


def preset_to_show(spec: Spec, current: str | None) -> str:
    """The preset a picker should show for `spec`: `current` if it still describes it, else
    the preset equal to it, else `current` if it is of the spec's family (the spec is an
    edit of it), else the family's first preset."""
    if current in PRESETS and PRESETS[current] == spec:
        return current
    family = presets_for(spec.family)
    return preset_name(spec) or (current if current in family else family[0])


def changed_fields(base: Spec, spec: Spec) -> list[str]:
    """The fields whose values differ between two specs of one family, in field order."""
    if base.family != spec.family:
        return ["family"]
    return [f.name for f in dataclasses.fields(spec)
            if getattr(base, f.name) != getattr(spec, f.name)]


# --- the spec in the URL ------------------------------------------------------------------------


def from_link(query: Mapping[str, str]) -> tuple[Spec, list[Problem]]:
    """The spec a pasted link names (`?model=vgg11&width=0.5`), else DEFAULT_PRESET's; with the
    problems of a link that cannot be read, each naming the parameter to fix (the page then
    shows DEFAULT_PRESET)."""
    spec, problems = links.spec_from_query(query)
    return spec or PRESETS[DEFAULT_PRESET], problems


def link_query(spec: Spec) -> dict[str, str]:
    """The page's URL parameters: none for DEFAULT_PRESET, else the nearest preset and the
    fields that differ from it."""
    return links.page_spec_query(spec, DEFAULT_PRESET)


# --- text fields -----------------------------------------------------------------------------

_INT = re.compile(r"[+-]?\d+")


def parse_int_list(text: str, field: str, *, allow_empty: bool = False) -> tuple[int, ...]:
    """Whole numbers separated by commas or spaces, e.g. "4, 4, 4, 4" or "(120, 84)".

    Raises SpecError naming `field` for anything that is not a whole number. Ranges are
    `validation.validate`'s job.
    """
    if len(text) > MAX_TEXT:
        raise SpecError([Problem(field, f"the text is {len(text)} characters long",
                                 f"keep it under {MAX_TEXT} characters")])
    inner = text.strip()
    if inner[:1] in "([" and inner[-1:] in ")]":
        inner = inner[1:-1]
    parts = [p for p in re.split(r"[,\s]+", inner) if p]
    bad = [p for p in parts if not _INT.fullmatch(p)]
    if bad:
        raise SpecError([Problem(field, f"{bad[0][:20]!r} is not a whole number",
                                 "write whole numbers separated by commas, like 4, 4, 4, 4")])
    if not parts and not allow_empty:
        raise SpecError([Problem(field, "is empty",
                                 "write whole numbers separated by commas, like 4, 4, 4, 4")])
    return tuple(int(p) for p in parts)


def format_int_list(values: tuple[int, ...]) -> str:
    """(4, 4, 4, 4) -> "4, 4, 4, 4", the form `parse_int_list` reads back."""
    return ", ".join(str(v) for v in values)


def parse_tuple(text: str, field: str) -> Any:
    """A nested tuple in the textbook's syntax, e.g. "((1, 64), (1, 128), (2, 256))".

    Lists become tuples. Raises SpecError naming `field` when the text is not a literal;
    the shape and the types inside are checked by `validation.validate`.
    """
    return freeze(field, parse_literal(text, field))


def format_tuple(value: tuple) -> str:
    """((1, 64), (1, 128)) -> "((1, 64), (1, 128))", the textbook's way to write `conv_arch`."""
    return repr(tuple(value))


# --- table cells -----------------------------------------------------------------------------


def _missing(value: Any) -> bool:
    """An empty cell: None, "", NaN, or pandas' NA (whose comparisons are neither true
    nor false, so `bool` raises on them)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return True
    try:
        return bool(value != value)  # only NaN differs from itself
    except (TypeError, ValueError):
        return True


def _cell_int(row: Row, column: str, where: str) -> int:
    """A whole number from a table cell. Editors hand back floats (64.0) when a column holds
    an empty cell, and None, NaN or NA for the empty cell itself. Raises SpecError."""
    value = row.get(column)
    fix = "type a whole number in every cell"
    if _missing(value):
        raise SpecError([Problem(f"{where} {column}", "is empty", fix)])
    if isinstance(value, bool):
        raise SpecError([Problem(f"{where} {column}", f"{value!r} is not a whole number", fix)])
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer():
        return int(value)
    if isinstance(value, str) and _INT.fullmatch(value.strip()):
        return int(value.strip())
    raise SpecError([Problem(f"{where} {column}", f"{str(value)[:20]!r} is not a whole number",
                             fix)])


def _cell_flag(row: Row, column: str) -> bool:
    value = row.get(column)
    return False if _missing(value) else bool(value)


def _read_rows(rows: list[Row], field: str, read: Callable[[Row, str], Any]) -> tuple:
    """`read(row, where)` for every row, collecting every cell problem before raising."""
    values, problems = [], []
    for i, row in enumerate(rows):
        try:
            values.append(read(row, f"{field}[{i}]"))
        except SpecError as exc:
            problems += exc.problems
    if problems:
        raise SpecError(problems)
    return tuple(values)


def _ints(row: Row, columns: tuple[str, ...], where: str) -> tuple[int, ...]:
    values, problems = [], []
    for column in columns:
        try:
            values.append(_cell_int(row, column, where))
        except SpecError as exc:
            problems += exc.problems
    if problems:
        raise SpecError(problems)
    return tuple(values)


# --- tables, one per family ------------------------------------------------------------------

VGG_COLUMNS = ("num_convs", "channels")
RESNET_COLUMNS = ("num_residuals", "channels")
NIN_COLUMNS = ("channels", "kernel", "stride", "padding", "pool_kernel", "pool_stride")
ALEXNET_COLUMNS = ("channels", "kernel", "stride", "padding")
INCEPTION_COLUMNS = ("c1", "c2a", "c2b", "c3a", "c3b", "c4")


def rows_from_conv_arch(conv_arch: tuple[tuple[int, int], ...]) -> list[Row]:
    """VGG's `conv_arch` as rows: one `vgg_block` per row, (num_convs, channels)."""
    return [dict(zip(VGG_COLUMNS, pair)) for pair in conv_arch]


def conv_arch_from_rows(rows: list[Row]) -> tuple[tuple[int, int], ...]:
    """Rows of (num_convs, channels) back to `conv_arch`. Raises SpecError for a bad cell."""
    return _read_rows(rows, "conv_arch", lambda row, where: _ints(row, VGG_COLUMNS, where))


def rows_from_resnet_stages(stages: tuple[tuple[int, int], ...]) -> list[Row]:
    """ResNet's `stages` as rows of (num_residuals, channels), one `resnet_block` each."""
    return [dict(zip(RESNET_COLUMNS, pair)) for pair in stages]


def resnet_stages_from_rows(rows: list[Row]) -> tuple[tuple[int, int], ...]:
    return _read_rows(rows, "stages", lambda row, where: _ints(row, RESNET_COLUMNS, where))


def rows_from_nin_blocks(blocks: tuple[tuple[int, ...], ...]) -> list[Row]:
    """NiN's `blocks` as rows: the block's conv, then the max-pool after it."""
    return [dict(zip(NIN_COLUMNS, block)) for block in blocks]


def nin_blocks_from_rows(rows: list[Row]) -> tuple[tuple[int, ...], ...]:
    return _read_rows(rows, "blocks", lambda row, where: _ints(row, NIN_COLUMNS, where))


def rows_from_alexnet_convs(convs: tuple[tuple[int, int, int, int], ...],
                            pool_after: tuple[int, ...]) -> list[Row]:
    """AlexNet's `convs` as rows, with a `pool` column: whether a 3x3/2 max-pool follows."""
    return [{**dict(zip(ALEXNET_COLUMNS, conv)), "pool": i in pool_after}
            for i, conv in enumerate(convs)]


def alexnet_convs_from_rows(rows: list[Row]) -> tuple[tuple[tuple[int, ...], ...], tuple[int, ...]]:
    """Rows back to (`convs`, `pool_after`). Raises SpecError for a bad cell."""
    convs = _read_rows(rows, "convs", lambda row, where: _ints(row, ALEXNET_COLUMNS, where))
    return convs, tuple(i for i, row in enumerate(rows) if _cell_flag(row, "pool"))


def inception_out_channels(split: specs.InceptionSplit) -> int:
    """An Inception block's output channels: its four paths concatenated, c1 + c2b + c3b + c4."""
    c1, (_, c2b), (_, c3b), c4 = split
    return c1 + c2b + c3b + c4


def _stage_names(stages: tuple[int, ...], count: int) -> list[str | None]:
    """GoogLeNet's stage of each Inception block: b3, b4, ... (None past the stages' sum)."""
    names: list[str | None] = [f"b{s + 3}" for s, size in enumerate(stages) for _ in range(size)]
    return (names + [None] * count)[:count]


def rows_from_inception(inception: tuple[specs.InceptionSplit, ...],
                        stages: tuple[int, ...]) -> list[Row]:
    """GoogLeNet's splits as rows (c1, c2a, c2b, c3a, c3b, c4), with two computed columns:
    `stage` (b3, b4, b5) and `out_channels` (c1 + c2b + c3b + c4)."""
    names = _stage_names(stages, len(inception))
    rows = []
    for stage, split in zip(names, inception):
        c1, (c2a, c2b), (c3a, c3b), c4 = split
        rows.append({"stage": stage, **dict(zip(INCEPTION_COLUMNS, (c1, c2a, c2b, c3a, c3b, c4))),
                     "out_channels": inception_out_channels(split)})
    return rows


def inception_from_rows(rows: list[Row]) -> tuple[specs.InceptionSplit, ...]:
    """Rows back to `inception` (the computed columns are ignored). Raises SpecError."""
    def read(row: Row, where: str) -> specs.InceptionSplit:
        c1, c2a, c2b, c3a, c3b, c4 = _ints(row, INCEPTION_COLUMNS, where)
        return c1, (c2a, c2b), (c3a, c3b), c4
    return _read_rows(rows, "inception", read)


def stage_channels(spec: specs.GoogLeNetSpec) -> list[tuple[str, int, int]]:
    """(stage, Inception blocks, output channels of its last block) for b3, b4, b5, ...
    before the width multiplier."""
    result, start = [], 0
    for s, size in enumerate(spec.stages):
        last = spec.inception[start + size - 1]
        result.append((f"b{s + 3}", size, inception_out_channels(last)))
        start += size
    return result


# --- which widget edits which field ----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TextField:
    """A spec field edited as text: how to write the value, how to read it back."""

    format: Callable[[Any], str]
    parse: Callable[[str, str], Any]


def _int_list(allow_empty: bool) -> TextField:
    return TextField(format_int_list,
                     lambda text, field: parse_int_list(text, field, allow_empty=allow_empty))


# (family, field) -> how the text field shows and reads it.
TEXT_FIELDS: dict[tuple[str, str], TextField] = {
    ("vgg", "conv_arch"): TextField(format_tuple, parse_tuple),
    ("vgg", "hidden"): _int_list(allow_empty=True),
    ("alexnet", "hidden"): _int_list(allow_empty=True),
    ("lenet", "hidden"): _int_list(allow_empty=True),
    ("lenet", "conv_channels"): _int_list(allow_empty=False),
    ("googlenet", "stages"): _int_list(allow_empty=False),
    ("densenet", "block_sizes"): _int_list(allow_empty=False),
}


@dataclasses.dataclass(frozen=True)
class TableField:
    """A spec field edited as a table. `columns` are editable whole numbers, `flags` editable
    booleans, `computed` read-only; `read` turns rows into the spec fields they set."""

    columns: tuple[str, ...]
    rows: Callable[[Any], list[Row]]
    read: Callable[[list[Row]], dict[str, Any]]
    flags: tuple[str, ...] = ()
    computed: tuple[str, ...] = ()


def _alexnet_read(rows: list[Row]) -> dict[str, Any]:
    convs, pool_after = alexnet_convs_from_rows(rows)
    return {"convs": convs, "pool_after": pool_after}


TABLE_FIELDS: dict[tuple[str, str], TableField] = {
    ("vgg", "conv_arch"): TableField(
        VGG_COLUMNS, lambda s: rows_from_conv_arch(s.conv_arch),
        lambda rows: {"conv_arch": conv_arch_from_rows(rows)}),
    ("resnet", "stages"): TableField(
        RESNET_COLUMNS, lambda s: rows_from_resnet_stages(s.stages),
        lambda rows: {"stages": resnet_stages_from_rows(rows)}),
    ("nin", "blocks"): TableField(
        NIN_COLUMNS, lambda s: rows_from_nin_blocks(s.blocks),
        lambda rows: {"blocks": nin_blocks_from_rows(rows)}),
    ("alexnet", "convs"): TableField(
        ALEXNET_COLUMNS, lambda s: rows_from_alexnet_convs(s.convs, s.pool_after),
        _alexnet_read, flags=("pool",)),
    ("googlenet", "inception"): TableField(
        INCEPTION_COLUMNS, lambda s: rows_from_inception(s.inception, s.stages),
        lambda rows: {"inception": inception_from_rows(rows)},
        computed=("stage", "out_channels")),
}

# Spec fields that a widget of another name edits (AlexNet's pool column sets `pool_after`).
EDITED_BY: dict[tuple[str, str], str] = {("alexnet", "pool_after"): "convs"}


def text_of(spec: Spec, field: str) -> str:
    """What the text field for `field` shows for `spec`."""
    return TEXT_FIELDS[spec.family, field].format(getattr(spec, field))


def rows_of(spec: Spec, field: str) -> list[Row]:
    """What the table for `field` shows for `spec`."""
    return TABLE_FIELDS[spec.family, field].rows(spec)


def apply_table_delta(rows: list[Row], delta: dict[str, Any]) -> list[Row]:
    """A table's rows after a data editor's edits, as Streamlit keeps them in session state:
    {"edited_rows": {"1": {"channels": 256}}, "added_rows": [{...}], "deleted_rows": [0]}.
    Edits and deletions name rows by their index before the change; added rows go last."""
    rows = [dict(row) for row in rows]
    for index, changes in (delta.get("edited_rows") or {}).items():
        if 0 <= int(index) < len(rows):
            rows[int(index)].update(changes)
    rows += [dict(row) for row in delta.get("added_rows") or []]
    deleted = {int(i) for i in delta.get("deleted_rows") or []}
    return [row for i, row in enumerate(rows) if i not in deleted]


def widget_field(family: str, problem_field: str) -> str:
    """The widget a problem belongs next to: "conv_arch[2] channels" -> "conv_arch"."""
    base = re.split(r"[\[ ]", problem_field, maxsplit=1)[0]
    return EDITED_BY.get((family, base), base)


# --- applying edits --------------------------------------------------------------------------


def _changes(spec: Spec, field: str, value: Any) -> dict[str, Any]:
    """The spec fields an edit of one widget sets. Raises SpecError when it cannot be read."""
    key = (spec.family, field)
    if isinstance(value, str) and key in TEXT_FIELDS:
        return {field: TEXT_FIELDS[key].parse(value, field)}
    if isinstance(value, list) and key in TABLE_FIELDS:
        return TABLE_FIELDS[key].read(value)
    names = {f.name for f in dataclasses.fields(spec)}
    if field not in names:
        raise SpecError([Problem(field, f"is not a field of a {spec.family} spec",
                                 f"use one of {', '.join(sorted(names))}")])
    return {field: freeze(field, value)}


def apply_edits(spec: Spec, edits: dict[str, Any]) -> tuple[Spec | None, list[Problem]]:
    """`spec` with every edit applied, and its problems; None instead of a spec when there
    are errors. An edit maps a field to a widget value: text for the fields in
    `TEXT_FIELDS`, a list of row dicts for `TABLE_FIELDS`, else the value itself."""
    changes: dict[str, Any] = {}
    problems: list[Problem] = []
    for field, value in edits.items():
        try:
            changes.update(_changes(spec, field, value))
        except SpecError as exc:
            problems += exc.problems
    if problems:
        return None, problems
    candidate = spec.replace(**changes)
    problems = validate(candidate)
    return (None if errors(problems) else candidate), problems


# --- importing -------------------------------------------------------------------------------


def spec_from_json_bytes(data: bytes) -> tuple[Spec | None, list[Problem]]:
    """A spec from an uploaded JSON file, or None and the problems that stop it (warnings
    are the current spec's to show, through `validate`)."""
    try:
        return spec_from_json(data), []
    except SpecError as exc:
        return None, exc.problems


# --- resolving a form's edits ------------------------------------------------------------------

Edit = tuple[str, Any]  # (widget key, the value it holds)


@dataclasses.dataclass(frozen=True)
class Resolution:
    """What a form's edits come to: the spec to show next (None when no attempt worked), the
    problems to show, and the edit each problem belongs to (field -> (widget key, value))."""

    applied: Spec | None
    problems: list[Problem]
    used: dict[str, Edit]


def attempts(edits: dict[str, list[Edit]], last_edited: str | None) -> list[dict[str, Edit]]:
    """Edits to try, field -> (widget key, value). A field edited in two widgets at once
    (VGG's conv_arch as text and as a table) is tried from the widget touched last first, then
    from the other one."""
    ordered = {f: sorted(s, key=lambda item: item[0] != last_edited) for f, s in edits.items()}
    tries = [{f: s[0] for f, s in ordered.items()}]
    if any(len(s) > 1 for s in ordered.values()):
        tries.append({f: s[-1] for f, s in ordered.items()})
    return tries


def resolve_edits(spec: Spec, edits: dict[str, list[Edit]],
                  last_edited: str | None = None) -> Resolution:
    """Try the edits on a copy of `spec`: the first attempt without errors is applied. When
    none works, the spec stays and the first attempt's problems are shown. `edits` maps a
    field to the widgets whose values differ from the spec, [(widget key, value)]."""
    applied, problems, used = None, [], {}
    for attempt in attempts(edits, last_edited) if edits else []:
        candidate, found = apply_edits(spec, {f: v for f, (_, v) in attempt.items()})
        if not used:
            problems, used = found, attempt
        if candidate is not None:
            applied = candidate
            break
    return Resolution(applied, problems, used)
