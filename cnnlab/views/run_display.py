"""How a run is shown on the Train page: its status badge, heading, caption and ending, its
numbers, the book's line on its curves, which run a session watches, and the runs table's
columns. Markdown strings and plain values, no Streamlit inside.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any

from cnnlab.runs.live import Progress
from cnnlab.runs.store import Run, Status
from cnnlab.training.recipes import TEXTBOOK_RESULTS
from cnnlab.views.report import comparable_with_book, data_text
from cnnlab.views.text import duration, markdown_text, sentence, took_seconds

# status -> (word, badge colour, icon)
STATUS_TEXT = {
    Status.QUEUED: ("waiting", "blue", ":material/hourglass_top:"),
    Status.RUNNING: ("training", "orange", ":material/play_arrow:"),
    Status.DONE: ("done", "green", ":material/check:"),
    Status.CANCELLED: ("cancelled", "gray", ":material/block:"),
    Status.DIVERGED: ("diverged", "red", ":material/trending_up:"),
    Status.FAILED: ("failed", "red", ":material/error:"),
    Status.INTERRUPTED: ("interrupted", "gray", ":material/power_off:"),
}
NONE = "–"  # a number not known yet


def run_device(run: Run) -> str:
    return run.device or run.config.get("device", "auto")


def heading(run: Run) -> str:
    """Markdown: '### bn-lenet  :green-badge[:material/check: done]', with the run's name
    (escaped: anyone on the server may have typed it) in place of the model when it has one."""
    word, colour, icon = STATUS_TEXT[run.status]
    return f"### {markdown_text(run.name or run.model)} &nbsp; :{colour}-badge[{icon} {word}]"


def caption(run: Run) -> str:
    """Markdown: 'run `id` · cpu · sample data · batch 256 · lr 1 · sgd'."""
    def shown(name: str) -> str:
        return markdown_text(str(run.config.get(name)))

    lr = run.config.get("lr")
    lr_text = f"{lr:g}" if isinstance(lr, (int, float)) else shown("lr")
    model = f"{markdown_text(run.model)} · " if run.name else ""
    group = f" · group *{markdown_text(run.group)}*" if run.group else ""
    return (f"{model}run `{run.id}` · {markdown_text(run_device(run))} · "
            f"{markdown_text(data_text(run))} data · batch {shown('batch_size')} · "
            f"lr {lr_text} · {shown('optimizer')}{group}")


def ending(run: Run) -> tuple[str, str]:
    """How an ended run is announced: (Markdown text, 'success' | 'error' | 'warning')."""
    word = STATUS_TEXT[run.status][0]
    message = run.message[:1].upper() + run.message[1:] if run.message else ""
    text = f"**{word.capitalize()}.** {sentence(message) if message else ''}".rstrip()
    if run.status is Status.DONE:
        return text, "success"
    if run.status in (Status.DIVERGED, Status.FAILED):
        return text, "error"
    return text, "warning"


def queue_text(place: int | None, running: int) -> str:
    return (f"Waiting in the queue: **number {place}** to start, behind {running} "
            f"run{'s' if running != 1 else ''} training now. Runs start in the order they "
            "were queued, as soon as a slot is free.")


def numbers(run: Run, now: Progress) -> list[tuple[str, str, str | None]]:
    """The run's numbers as (label, value, help), in the order the page shows them."""
    def percent(x: float | None) -> str:
        return NONE if x is None else f"{x:.1%}"

    shown = [("Train loss", NONE if now.train_loss is None else f"{now.train_loss:.3f}", None),
             ("Train accuracy", percent(now.train_acc), None)]
    if run.status.terminal:
        shown.append(("Best test accuracy", percent(now.best_test_acc),
                      "The best of the evaluations at the end of each epoch"))
    else:
        shown.append(("Test accuracy", percent(now.test_acc),
                      "Measured on the test set at the end of each epoch"))
    shown.append(("Examples / s", NONE if not now.examples_per_s
                   else f"{now.examples_per_s:,.0f}", None))
    if run.status is Status.RUNNING:
        shown.append(("Time left", NONE if now.eta_s is None else duration(now.eta_s), None))
    elif run.status.terminal and (took := took_seconds(run)) is not None:
        shown.append(("Took", duration(took), None))
    return shown


def _nan_if_none(value: float | None) -> float:
    return math.nan if value is None else value  # a missing number keeps the column numeric


def runs_columns(runs: list[Run], summaries: list[Progress]) -> dict[str, list[Any]]:
    """The runs table, column by column (newest run first, as `runs` come): plain values a
    DataFrame takes; `created` in seconds since the epoch, UTC."""
    return {
        "name": [run.name or "" for run in runs],
        "owner": [run.owner or "" for run in runs],
        "model": [run.model for run in runs],
        "status": [STATUS_TEXT[run.status][0] for run in runs],
        "progress": [round(p.fraction or 0.0, 2) for p in summaries],
        "best test acc": [_nan_if_none(p.best_test_acc) for p in summaries],
        "examples/s": [_nan_if_none(p.examples_per_s and round(p.examples_per_s))
                       for p in summaries],
        "data": [data_text(run) for run in runs],
        "device": [run_device(run) for run in runs],
        "created": [run.created_at for run in runs],
        "run": [run.id for run in runs],
    }


def watched(kept: str | None, linked: str | None,
            known: Collection[str] | None = None) -> str | None:
    """The run a session watches: the one it `kept`, else the one its URL names (`?run=`, after
    a reload). None unless that is one of the `known` runs (a run deleted, a link from another
    server); without `known`, the caller finds out (the store's `get` raises KeyError)."""
    chosen = kept or linked
    return chosen if known is None or chosen in known else None


def book_test_acc(run: Run) -> float | None:
    """The book's test accuracy for the run's model, the line drawn over its curves; None when
    the book did not train it, or the run did not train on all 60,000 images as the book did."""
    book = TEXTBOOK_RESULTS.get(run.model)
    return book.test_acc if book is not None and comparable_with_book(run) else None
