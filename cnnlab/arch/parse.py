"""Reading a spec from JSON or decoded JSON: the one path from outside data to a checked spec.

Uploads, spec files on the command line and stored runs all come through here. Whatever
the input (a top-level list, a 5,000-digit number, nesting 900 deep, a 50 MB string), the
only exception that leaves is SpecError, listing the problems; the spec that comes back
has passed `checks.validate`.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from cnnlab.arch.checks import SpecError, check, echo
from cnnlab.arch.families import FAMILIES
from cnnlab.arch.specs import Spec
from cnnlab.errors import Problem

MAX_JSON_BYTES = 100_000  # a spec is a few hundred bytes; anything huge is not one
MAX_DEPTH = 4  # the deepest spec field, GoogLeNet's `inception`, nests 3 levels
FIX = "start from a spec saved with the Architecture page's 'Spec as JSON' button"


def spec_from_json(text: str | bytes, *, source: str = "file",
                   overrides: dict[str, Any] | None = None) -> Spec:
    """The checked spec that JSON `text` describes, `overrides` applied on top. `source`
    names the text in problems about it as a whole ("file", "--spec"). Raises SpecError."""
    return spec_from_data(_decode(text, source), overrides=overrides)


def spec_from_data(data: Any, *, overrides: dict[str, Any] | None = None) -> Spec:
    """The checked spec that decoded JSON `data` (a dict with a "family") describes,
    `overrides` applied on top. Lists become tuples. Raises SpecError."""
    if not isinstance(data, dict):
        raise SpecError([Problem("spec", f"is {_kind(data)}, not an object with a 'family' "
                                 "field", FIX)])
    data = {**data, **(overrides or {})}
    cls = _spec_class(data.get("family"))
    values = {key: freeze(key, value) for key, value in _known_fields(cls, data).items()}
    spec = cls(**values)
    check(spec)
    return spec


def _decode(text: str | bytes, source: str) -> Any:
    """JSON text to Python data, capped at MAX_JSON_BYTES. Raises SpecError naming `source`."""
    if len(text) > MAX_JSON_BYTES:
        raise SpecError([Problem(source, f"is {len(text):,} bytes; a spec is a few hundred",
                                 FIX)])
    try:
        return json.loads(text.decode("utf-8") if isinstance(text, bytes) else text)
    except UnicodeDecodeError:
        why = "it is not UTF-8 text"
    except RecursionError:
        why = "it is nested too deeply"
    except json.JSONDecodeError as exc:  # its message is json's own, a line long
        why = f"not valid JSON ({exc})"
    except ValueError:  # Python reads at most 4,300 digits of a number
        why = "it holds a number too long to read"
    raise SpecError([Problem(source, f"cannot read the spec: {why}", FIX)])


def _kind(data: Any) -> str:
    names = {list: "a list", str: "a string", int: "a number", float: "a number",
             bool: "true or false", type(None): "null"}
    return names.get(type(data), f"a {type(data).__name__}")


def _spec_class(family: Any) -> type[Spec]:
    # Not `family in FAMILIES`: a decoded list or dict would be unhashable there.
    if type(family) is not str or family not in FAMILIES:
        raise SpecError([Problem("spec", f"unknown family {echo(family)}; choose one of: "
                                 f"{', '.join(FAMILIES)}", FIX)])
    return FAMILIES[family].spec


def _known_fields(cls: type[Spec], data: dict[Any, Any]) -> dict[str, Any]:
    """`data` without "family". Raises SpecError naming (a few of) the unknown keys."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(echo(key) for key in data if key not in known and key != "family")
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if unknown[5:] else "")
        raise SpecError([Problem("spec", f"unknown field(s) for {cls.family}: {shown}; known: "
                                 f"{', '.join(sorted(known))}", FIX)])
    return {key: value for key, value in data.items() if key != "family"}


def freeze(field: str, value: Any, depth: int = 0) -> Any:
    """Lists (and tuples) to tuples, all the way down: specs hold tuples, hashable so they
    key caches. Raises SpecError past MAX_DEPTH rather than recursing a thousand levels."""
    if not isinstance(value, (list, tuple)):
        return value
    if depth >= MAX_DEPTH:
        raise SpecError([Problem(field, f"is nested more than {MAX_DEPTH} levels deep",
                                 "write lists of numbers, as in a preset's JSON")])
    return tuple(freeze(field, item, depth + 1) for item in value)

