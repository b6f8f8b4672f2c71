"""The queue every browser on the server shares, as the pages show it: the sidebar's training
runs (a bar and its text) and waiting ones (numbered, the rest counted), and the Class page's
table of the whole queue with owners. Plain values and Markdown, no Streamlit inside.
"""

from __future__ import annotations

from cnnlab.runs.live import Progress
from cnnlab.runs.store import Run, Status
from cnnlab.views.text import duration, owned


def split(active: list[Run]) -> tuple[list[Run], list[Run]]:
    """The runs training now and the runs waiting, each in the order `active` lists them."""
    return ([run for run in active if run.status is Status.RUNNING],
            [run for run in active if run.status is Status.QUEUED])


def progress_line(run: Run, now: Progress) -> tuple[float, str]:
    """A training run's bar in the sidebar: the fraction done (0 before the first step) and
    its Markdown text, 'bn-lenet (Ada): 40%, 2 min left' (the time once it is known)."""
    fraction = now.fraction or 0.0
    left = f", {duration(now.eta_s)} left" if now.eta_s is not None else ""
    return fraction, f"{owned(run, markdown=True)}: {fraction:.0%}{left}"


def waiting_lines(waiting: list[Run], shown: int) -> list[str]:
    """Markdown lines for the waiting runs: '1. lenet (Ada): waiting' for the first `shown`,
    then '... and 3 more waiting' for the rest."""
    lines = [f"{place}. {owned(run, markdown=True)}: waiting"
             for place, run in enumerate(waiting[:shown], start=1)]
    if len(waiting) > shown:
        lines.append(f"... and {len(waiting) - shown} more waiting")
    return lines


def queue_rows(active: list[Run]) -> dict[str, list[str]]:
    """The Class page's table of the queue, column by column: each run's label, its owner
    ("" for none) and its status."""
    return {"run": [run.label for run in active],
            "owner": [run.owner or "" for run in active],
            "status": [str(run.status) for run in active]}
