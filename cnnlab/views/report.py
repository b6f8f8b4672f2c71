"""Runs as files a student keeps or hands in: the runs as JSON or CSV, a run's per-epoch
metrics as CSV, and a one-page HTML report (spec, config, curves, final numbers, memory).

Pure functions from runs and metric events to text; the CLI writes them to files, the pages
offer them as downloads. The report is self-contained: its curves are inline SVG, so it
opens offline and prints as it looks.
"""

from __future__ import annotations

import csv
import html
import io
import json
import time
from collections.abc import Sequence
from typing import Any

from cnnlab.analysis.table_text import human_bytes
from cnnlab.arch.checks import is_number
from cnnlab.runs.metrics import Event
from cnnlab.runs.store import Run
from cnnlab.views.style import BLUE, GREEN, SKY, VERMILLION
from cnnlab.views.text import data_label

# One run's columns in `cnnlab runs --json / --csv`, in order.
RUN_FIELDS = ("id", "name", "group", "model", "status", "created", "data", "subset", "epochs",
              "batch_size", "lr", "optimizer", "seed", "device", "test_acc", "best_test_acc",
              "train_loss", "examples_per_s", "seconds", "memory_estimated", "memory_measured",
              "memory_measured_what", "message")
EPOCH_FIELDS = ("epoch", "step", "train_loss", "train_acc", "test_loss", "test_acc",
                "examples_per_s", "eval_s", "elapsed")


def data_text(run: Run) -> str:
    """What the run trained on: 'full', 'sample' (3,000 images), 'full, subset of 3,000'.
    Before the worker chose, what the config asked for ('auto')."""
    data = data_label(run) or run.config.get("data", "auto")
    subset = run.config.get("subset")
    if subset:
        return f"{data}, subset of {subset:,}"
    return data


def comparable_with_book(run: Run) -> bool:
    """Whether the run trained on what the book did: all 60,000 training images."""
    return data_text(run) == "full"


def run_record(run: Run) -> dict[str, Any]:
    """A run's row: identity, settings, final numbers and memory, plain JSON values."""
    result, config = run.result, run.config
    metrics = result.get("metrics") or {}
    return {
        "id": run.id, "name": run.name, "group": run.group, "model": run.model,
        "status": str(run.status),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(run.created_at)),
        "data": data_text(run), "subset": config.get("subset"), "epochs": config.get("epochs"),
        "batch_size": config.get("batch_size"), "lr": config.get("lr"),
        "optimizer": config.get("optimizer"), "seed": config.get("seed"),
        "device": result.get("device") or run.device, "test_acc": run.test_acc,
        "best_test_acc": result.get("best_test_acc"), "train_loss": metrics.get("train_loss"),
        "examples_per_s": result.get("examples_per_s"), "seconds": result.get("seconds"),
        "memory_estimated": result.get("memory_estimated"),
        "memory_measured": result.get("memory_measured"),
        "memory_measured_what": result.get("memory_measured_what"), "message": run.message,
    }


def runs_json(runs: Sequence[Run]) -> str:
    """The runs as a JSON list of `run_record`s, with each run's spec and config in full."""
    records = [{**run_record(run), "spec": run.spec, "config": run.config} for run in runs]
    return json.dumps(records, indent=2, default=str)


def _csv(rows: Sequence[dict[str, Any]], fields: Sequence[str]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(fields), extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def runs_csv(runs: Sequence[Run]) -> str:
    """The runs as CSV, one `run_record` a line."""
    return _csv([run_record(run) for run in runs], RUN_FIELDS)


def epoch_rows(events: Sequence[Event]) -> list[dict[str, Any]]:
    """The epoch events (one per evaluation), with EPOCH_FIELDS only."""
    return [{k: e.get(k) for k in EPOCH_FIELDS} for e in events if e.get("kind") == "epoch"]


def metrics_csv(events: Sequence[Event]) -> str:
    """A run's per-epoch metrics as CSV: what a spreadsheet or pandas reads."""
    return _csv(epoch_rows(events), EPOCH_FIELDS)


# --- the one-page report ------------------------------------------------------------------

SVG_W, SVG_H, PAD = 420, 260, 44


def _scale(values: Sequence[float], low: float, high: float, out_low: float,
           out_high: float) -> list[float]:
    span = (high - low) or 1.0
    return [out_low + (v - low) / span * (out_high - out_low) for v in values]


def svg_chart(title: str, lines: dict[str, tuple[list[float], list[float], str]]) -> str:
    """A small line chart as inline SVG: {label: (epochs, values, colour)}; empty lines are
    left out, and a chart with none says so."""
    lines = {k: v for k, v in lines.items() if v[0]}
    if not lines:
        return f"<p><em>{html.escape(title)}: no points recorded.</em></p>"
    xs = [x for xs_, _, _ in lines.values() for x in xs_]
    ys = [y for _, ys_, _ in lines.values() for y in ys_]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{SVG_W}" height="{SVG_H}" '
             f'role="img" aria-label="{html.escape(title)}">',
             f'<text x="{SVG_W / 2}" y="16" text-anchor="middle">{html.escape(title)}</text>',
             f'<rect x="{PAD}" y="24" width="{SVG_W - PAD - 10}" height="{SVG_H - PAD - 24}" '
             'fill="none" stroke="#999"/>',
             f'<text x="{PAD}" y="{SVG_H - PAD + 16}" font-size="11">{x0:g}</text>',
             f'<text x="{SVG_W - 10}" y="{SVG_H - PAD + 16}" font-size="11" '
             f'text-anchor="end">{x1:g} epochs</text>',
             f'<text x="{PAD - 4}" y="{SVG_H - PAD}" font-size="11" text-anchor="end">'
             f'{y0:.3g}</text>',
             f'<text x="{PAD - 4}" y="34" font-size="11" text-anchor="end">{y1:.3g}</text>']
    for i, (label, (line_x, line_y, colour)) in enumerate(lines.items()):
        px = _scale(line_x, x0, x1, PAD, SVG_W - 10)
        py = _scale(line_y, y0, y1, SVG_H - PAD, 24)
        points = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(px, py))
        parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" '
                     'stroke-width="2"/>')
        parts.append(f'<text x="{PAD + 8}" y="{44 + 14 * i}" font-size="12" '
                     f'fill="{colour}">{html.escape(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _series(events: Sequence[Event], kind: str, key: str) -> tuple[list[float], list[float]]:
    points = [(e["epoch"], e[key]) for e in events if e.get("kind") == kind
              and is_number(e.get("epoch")) and is_number(e.get(key))]
    return [p[0] for p in points], [p[1] for p in points]


def _table(rows: dict[str, Any]) -> str:
    cells = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_shown(v))}</td></tr>"
                    for k, v in rows.items())
    return f"<table>{cells}</table>"


def _shown(value: Any) -> str:
    if value is None:
        return "–"
    if type(value) is float:
        return f"{value:.4g}"
    return json.dumps(value) if isinstance(value, (list, dict, tuple)) else str(value)


def memory_rows(run: Run) -> dict[str, str]:
    """The estimate made before launch beside the measured peak, and their ratio."""
    estimated, measured = run.result.get("memory_estimated"), run.result.get("memory_measured")
    rows = {"estimated before launch": human_bytes(estimated) if estimated else "–",
            "measured peak": human_bytes(measured) if measured else "–"}
    if measured:
        rows["what was measured"] = run.result.get("memory_measured_what", "")
    if estimated and measured:
        rows["estimate / measured"] = f"{estimated / measured:.2f}"
    return rows


REPORT_STYLE = ("body{font-family:sans-serif;max-width:900px;margin:2em auto;color:#222}"
                "table{border-collapse:collapse;margin:0.5em 0 1em}"
                "th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:14px}"
                "th{background:#f4f4f4;font-weight:normal}.charts{display:flex;flex-wrap:wrap}")


def report_html(run: Run, events: Sequence[Event]) -> str:
    """One self-contained HTML page about a run: what it was (spec, config, data), how it
    ended, its curves (inline SVG), per-epoch numbers and memory. Every user text escaped."""
    record = run_record(run)
    final = {k: record[k] for k in ("status", "test_acc", "best_test_acc", "train_loss",
                                    "examples_per_s", "seconds", "device", "data", "message")}
    loss = svg_chart("loss", {"train loss": (*_series(events, "step", "train_loss"), BLUE),
                              "test loss": (*_series(events, "epoch", "test_loss"), SKY)})
    acc = svg_chart("accuracy", {"train acc": (*_series(events, "step", "train_acc"), VERMILLION),
                                 "test acc": (*_series(events, "epoch", "test_acc"), GREEN)})
    epochs = epoch_rows(events)
    epoch_table = ("<table><tr>" + "".join(f"<th>{f}</th>" for f in EPOCH_FIELDS) + "</tr>"
                   + "".join("<tr>" + "".join(f"<td>{html.escape(_shown(row[f]))}</td>"
                                              for f in EPOCH_FIELDS) + "</tr>"
                             for row in epochs) + "</table>") if epochs else "<p>No epoch ended.</p>"
    title = html.escape(f"{run.label} ({run.model})")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title>"
            f"<style>{REPORT_STYLE}</style></head><body>"
            f"<h1>{title}</h1><p>Run <code>{html.escape(run.id)}</code>, created "
            f"{html.escape(record['created'])}"
            + (f", group <em>{html.escape(run.group)}</em>" if run.group else "") + ".</p>"
            f"<h2>Result</h2>{_table(final)}<div class='charts'>{loss}{acc}</div>"
            f"<h2>Each epoch</h2>{epoch_table}<h2>Memory</h2>{_table(memory_rows(run))}"
            f"<h2>Training config</h2>{_table(run.config)}"
            f"<h2>Architecture spec</h2>{_table(run.spec)}"
            "<p><small>Made by cnnlab (Dive into Deep Learning, chapter 7).</small></p>"
            "</body></html>")
