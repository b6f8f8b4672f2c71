"""Links that open the same view: a spec and a training config as URL query parameters, and
back.

A link names a preset and only the fields that differ from it, each as its own readable
parameter: `?model=vgg11&width=0.5&conv_arch=((1,64),(2,128))`. Text fields are written bare
(`pool=max`), everything else as a Python literal without spaces, read back with the same
literal parser the Architecture page's text fields use (never evaluated). Whatever the URL
holds, reading it gives a spec (or config) that passed the one check path, or the problems,
each naming the parameter and a fix: a pasted or hand-edited link never raises.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from cnnlab.arch.checks import SpecError, check, parse_literal
from cnnlab.arch.presets import PRESETS
from cnnlab.arch.specs import Spec
from cnnlab.errors import CnnlabError, Problem
from cnnlab.training.config import TrainConfig

MODEL = "model"  # the parameter naming the preset a link starts from


def _fields(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


# Every spec field of every family (each has a preset): a parameter so named is the spec's.
SPEC_FIELDS = frozenset(name for spec in PRESETS.values() for name in _fields(type(spec)))
CONFIG_FIELDS = frozenset(_fields(TrainConfig))
SPEC_KEYS = SPEC_FIELDS | {MODEL}  # the parameters the Architecture page writes
TRAIN_KEYS = SPEC_KEYS | CONFIG_FIELDS  # and the Train page


# --- writing ----------------------------------------------------------------------------------


def as_text(value: Any) -> str:
    """A field's value as it appears in a link: bare text, or a literal without spaces."""
    if isinstance(value, str):
        return value
    return repr(value).replace(" ", "")


def changed_fields(value: Any, base: Any) -> dict[str, str]:
    """The fields of dataclass `value` that differ from `base`'s, as link text."""
    return {name: as_text(getattr(value, name)) for name in _fields(type(value))
            if getattr(value, name) != getattr(base, name)}


def nearest_preset(spec: Spec) -> str:
    """The preset of the spec's family from which it differs in the fewest fields."""
    family = [name for name, preset in PRESETS.items() if preset.family == spec.family]
    return min(family, key=lambda name: len(changed_fields(spec, PRESETS[name])))


def spec_query(spec: Spec) -> dict[str, str]:
    """The query parameters that describe `spec`: its nearest preset and what differs."""
    base = nearest_preset(spec)
    return {MODEL: base, **changed_fields(spec, PRESETS[base])}


def page_spec_query(spec: Spec, default: str) -> dict[str, str]:
    """`spec_query`, or nothing for the page's `default` preset: a plain page has a plain URL."""
    return {} if spec == PRESETS[default] else spec_query(spec)


def config_query(config: TrainConfig, base: TrainConfig) -> dict[str, str]:
    """The query parameters that describe `config`: what differs from `base` (the recipe)."""
    return changed_fields(config, base)


# --- reading ----------------------------------------------------------------------------------


def _value(field: str, text: str, default: Any) -> Any:
    """A parameter's value, typed like the field's `default`. Raises SpecError naming it."""
    if isinstance(default, str):
        return text
    return parse_literal(text, field)


def _read_fields(query: Mapping[str, str], names: frozenset[str] | list[str], base: Any,
                 problems: list[Problem]) -> dict[str, Any]:
    changes = {}
    for name in names:
        if name not in query:
            continue
        try:
            changes[name] = _value(name, query[name], getattr(base, name))
        except SpecError as exc:
            problems.extend(exc.problems)
    return changes


def spec_from_query(query: Mapping[str, str]) -> tuple[Spec | None, list[Problem]]:
    """The spec a link describes, or None when it names no model (the page's default then).
    With problems, the spec is None and each problem names the parameter to fix."""
    if MODEL not in query:
        return None, []
    name = query[MODEL]
    if name not in PRESETS:
        return None, [Problem(MODEL, f"there is no model {name[:60]!r}",
                              f"use one of {', '.join(PRESETS)}")]
    base = PRESETS[name]
    own = _fields(type(base))
    problems = [Problem(field, f"{base.family} has no field {field!r}",
                        "remove it from the link, or pick a model that has it")
                for field in sorted(SPEC_FIELDS.intersection(query).difference(own))]
    changes = _read_fields(query, own, base, problems)
    if problems:
        return None, problems
    try:
        spec = base.replace(**changes)
        check(spec)
    except SpecError as exc:
        return None, exc.problems
    except TypeError as exc:  # a value of a type the spec's constructor refuses outright
        return None, [Problem(MODEL, f"the link's fields do not make a spec ({exc})",
                              "remove the changed fields from the link")]
    return spec, []


def config_from_query(query: Mapping[str, str], base: TrainConfig
                      ) -> tuple[TrainConfig | None, list[Problem]]:
    """`base` with the config fields the link changes, or None and the problems."""
    problems: list[Problem] = []
    changes = _read_fields(query, CONFIG_FIELDS, base, problems)
    if problems:
        return None, problems
    try:
        return base.replace(**changes), []
    except CnnlabError as exc:  # ConfigError: TrainConfig checks itself
        return None, exc.problems


def query_changes(query: Mapping[str, str], wanted: Mapping[str, str],
                  owned: frozenset[str]) -> tuple[dict[str, str], list[str]]:
    """What to set and what to remove so that the `owned` parameters of `query` are `wanted`;
    the others (another widget's, `run`) stay. Nothing when the URL already says it."""
    to_set = {name: text for name, text in wanted.items() if query.get(name) != text}
    stale = sorted(name for name in owned.intersection(query) if name not in wanted)
    return to_set, stale


def share_link(page_url: str, query: Mapping[str, str]) -> str:
    """The link to send someone: the page's address with the view's query parameters."""
    from urllib.parse import urlencode, urlsplit, urlunsplit

    parts = urlsplit(page_url)
    return urlunsplit(parts._replace(query=urlencode(dict(query), safe="(),"), fragment=""))
