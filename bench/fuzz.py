"""Fuzz: random specs and random texts through every way a spec gets in. Target: 0 uncaught.

Specs: mutated presets (numbers nudged or blown up, fields swapped for random JSON data, deep
nesting, huge numbers, long strings, unknown keys, lists where tuples go) through
`parse.spec_from_data`; the same values, put straight into a spec object, through
`checks.validate`; and every spec that passes, built on the meta device and inspected.
Texts: random JSON-ish text and bytes through the Architecture page's import
(`editor.spec_from_json_bytes`) and the command line's `summary --spec FILE` (`cli.main`, in
this process). Anything but SpecError from the library, or an exit status other than 0 or 2
from the command line, counts as uncaught.

Run from the repository root:  .venv/bin/python bench/fuzz.py [--specs N] [--texts N]
[--seconds S] [--jobs N] [--seed N]. The specs stop early at three quarters of --seconds
(default 300), the texts at the last quarter: the printed counts say how many inputs ran.
"""

from __future__ import annotations

import os
import sys

# The checkout's root first on sys.path: cnnlab imports without being installed.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from collections import Counter  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402

from cnnlab.analysis.layers import inspect_spec  # noqa: E402
from cnnlab.arch.checks import SpecError, validate  # noqa: E402
from cnnlab.arch.families import FAMILIES  # noqa: E402
from cnnlab.arch.models import build  # noqa: E402
from cnnlab.arch.parse import spec_from_data  # noqa: E402
from cnnlab.arch.presets import PRESETS  # noqa: E402
from cnnlab.cli import main as cli_main  # noqa: E402
from cnnlab.views.editor import spec_from_json_bytes  # noqa: E402

# --- random values ---------------------------------------------------------------------------


def leaf(rng: random.Random) -> Any:
    """One JSON scalar, biased towards the ones that broke things before."""
    return rng.choice([
        lambda: None, lambda: rng.random() < 0.5, lambda: rng.randint(-3, 300),
        lambda: rng.choice([0, -1, 1, 2, 3, 64, 1025, 2**31, 2**63]),
        lambda: rng.choice([1, -1]) * 10 ** rng.randint(19, 6000),
        lambda: rng.choice([0.5, -0.0, 1e-9, 1e308, float("inf"), float("nan"), 2.5]),
        lambda: rng.choice(["", "3", "avg", "max", "relu", "torch", "bottleneck", "vgg"]),
        lambda: "x" * rng.choice([61, 1000, 200_000]),
    ])()


def value(rng: random.Random, depth: int = 0) -> Any:
    """A random JSON-ish value: scalars, lists, tuples and dicts, a few levels deep."""
    kind = rng.random()
    if depth > 3 or kind < 0.45:
        return leaf(rng)
    if kind < 0.55:
        return nested(rng.choice([5, 50, 500, 990, 3000]))
    items = [value(rng, depth + 1) for _ in range(rng.randint(0, 5))]
    if kind < 0.8:
        return items
    if kind < 0.9:
        return tuple(items)
    return {rng.choice(["a", "family", "hidden", "", "0"]): item for item in items}


def nested(depth: int) -> list:
    out: list = [1]
    for _ in range(depth):
        out = [out]
    return out


def nudge(rng: random.Random, v: Any) -> Any:
    """A small change to a preset's value: a number off by a little or a lot, a tuple with an
    item changed, dropped or repeated, or the tuple written as a list."""
    if isinstance(v, bool) or not isinstance(v, (int, float, tuple)):
        return value(rng)
    if isinstance(v, (int, float)):
        return rng.choice([v + 1, v - 1, v * 2, v // 2 if isinstance(v, int) else v / 2, 0, -v])
    if not v:
        return (value(rng),)
    i = rng.randrange(len(v))
    return rng.choice([
        v[:i] + (nudge(rng, v[i]),) + v[i + 1:], v[:i] + v[i + 1:], v + (v[i],), list(v),
        tuple(list(x) if isinstance(x, tuple) else x for x in v),
    ])


def mutated(rng: random.Random) -> dict[str, Any]:
    """A preset's dict form with one to three changes (the family and unknown keys too)."""
    data = rng.choice(list(PRESETS.values())).to_dict()
    for _ in range(rng.randint(1, 3)):
        key = rng.choice(list(data) + ["extra"])
        if key == "family":
            data[key] = rng.choice(list(FAMILIES) + [value(rng)])
        elif rng.random() < 0.15 and key in data:
            del data[key]
        elif key in data and rng.random() < 0.6:
            data[key] = nudge(rng, data[key])
        else:
            data[key] = value(rng)
    return data


def as_text(rng: random.Random) -> str | bytes:
    """Random text: spec JSON (whole, cut short or with a huge number), scalars, garbage."""
    spec_json = json_of(mutated(rng))
    choices = [
        lambda: spec_json, lambda: spec_json[:rng.randrange(max(1, len(spec_json)))],
        lambda: spec_json.replace("1", "9" * rng.choice([10, 4400, 6000]), 1),
        lambda: json_of(value(rng)), lambda: "[" * (n := rng.randint(1, 60_000)) + "]" * n,
        lambda: rng.choice(["null", "3", '"vgg"', "[]", "{}", "true", "NaN", "", "\ufeff{}"]),
        lambda: "".join(chr(rng.randint(1, 0x2FF)) for _ in range(rng.randint(0, 80))),
        lambda: bytes(rng.randint(0, 255) for _ in range(rng.randint(0, 80))),
        lambda: " " * 100_001,
    ]
    return rng.choice(choices)()


def json_of(data: Any) -> str:
    try:
        return json.dumps(data)
    except (ValueError, RecursionError):  # numbers past 4,300 digits have no decimal form
        return "9" * 5000


# --- the runs --------------------------------------------------------------------------------


class Tally:
    """Counts outcomes; keeps the first few uncaught exceptions with what caused them."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.uncaught: list[str] = []

    def bug(self, where: str, cause: Any) -> None:
        self.counts["uncaught"] += 1
        if len(self.uncaught) < 10:
            text = repr(cause) if not isinstance(cause, (str, bytes)) else repr(cause[:200])
            self.uncaught.append(f"{where}: {traceback.format_exc(limit=3)}input: {text[:300]}")


def library(data: dict[str, Any], tally: Tally) -> None:
    """Parse, validate the raw object too, and build and inspect what passes."""
    try:
        spec = spec_from_data(data)
    except SpecError:
        tally.counts["rejected"] += 1
        spec = None
    except Exception:
        return tally.bug("spec_from_data", data)
    raw = raw_spec(data)
    if raw is not None and raw != spec:  # equal: spec_from_data has just validated it
        try:
            validate(raw)
        except Exception:
            return tally.bug("validate", data)
    if spec is None:
        return
    try:
        with torch.device("meta"):
            build(spec)
        inspect_spec(spec)
        tally.counts["built"] += 1
    except Exception:
        tally.bug("build/inspect", data)


def raw_spec(data: dict[str, Any]) -> Any:
    """The spec object with `data`'s values as they are (lists and all), when the family
    and field names are right; validate must cope with whatever is inside."""
    family = FAMILIES.get(data.get("family")) if isinstance(data.get("family"), str) else None
    if family is None:
        return None
    names = {f.name for f in dataclasses.fields(family.spec)}
    fields = {k: v for k, v in data.items() if k != "family"}
    return family.spec(**fields) if set(fields) <= names else None


def import_and_cli(text: str | bytes, path: Path, tally: Tally) -> None:
    try:
        spec, problems = spec_from_json_bytes(text if isinstance(text, bytes) else
                                              text.encode("utf-8", "surrogatepass"))
        tally.counts["imported" if spec is not None else "refused"] += 1
    except Exception:
        tally.bug("import", text)
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            code = cli_main(["summary", "--spec", str(path)])
    except BaseException:  # SystemExit too: argparse would mean we called it wrong
        return tally.bug("cli", text)
    if code not in (0, 2):
        tally.counts["uncaught"] += 1
        tally.uncaught.append(f"cli exit {code}: {out.getvalue()[-300:]}")
    tally.counts[f"cli exit {code}"] += 1


def worker(kind: str, count: int, seconds: float, seed: int) -> tuple[int, Tally]:
    """Up to `count` inputs of `kind` ("specs" or "texts"), or until `seconds` pass."""
    torch.set_num_threads(1)
    rng, tally, done = random.Random(seed), Tally(), 0
    deadline = time.perf_counter() + seconds
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "spec.json"
        while done < count and time.perf_counter() < deadline:
            if kind == "specs":
                library(mutated(rng), tally)
            else:
                import_and_cli(as_text(rng), path, tally)
            done += 1
    return done, tally


def run(kind: str, count: int, seconds: float, jobs: int, seed: int, total: Tally) -> None:
    """`count` inputs of `kind` split over `jobs` processes, each with its own seed."""
    start = time.perf_counter()
    shares = [count // jobs + (i < count % jobs) for i in range(jobs)]
    with ProcessPoolExecutor(jobs) as pool:
        results = list(pool.map(worker, [kind] * jobs, shares, [seconds] * jobs,
                                [seed * 1000 + i for i in range(jobs)]))
    for _, tally in results:
        total.counts.update(tally.counts)
        total.uncaught += tally.uncaught
    done = sum(n for n, _ in results)
    print(f"{kind}: {done:,} of {count:,} in {time.perf_counter() - start:.0f} s", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--specs", type=int, default=10_000, help="mutated presets (10,000)")
    parser.add_argument("--texts", type=int, default=5_000, help="random texts (5,000)")
    parser.add_argument("--seconds", type=float, default=300,
                        help="time budget for specs and texts together (default 300)")
    parser.add_argument("--jobs", type=int, default=2, help="processes (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    tally = Tally()
    # Specs cost most (meta builds and inspections): 10,000 took 181 s on 2 busy cores.
    run("specs", args.specs, args.seconds * 3 / 4, args.jobs, args.seed, tally)
    run("texts", args.texts, args.seconds / 4, args.jobs, args.seed + 1, tally)
    print(", ".join(f"{k}: {v:,}" for k, v in sorted(tally.counts.items())))
    for report in tally.uncaught:
        print(report)
    print(f"uncaught exceptions: {tally.counts['uncaught']}")
    return 1 if tally.counts["uncaught"] else 0


if __name__ == "__main__":
    sys.exit(main())
