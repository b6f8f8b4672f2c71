"""Text the pages show: user text made safe for Markdown, numbers and durations as people say
them, and the labels of runs and of a problem. Pure functions, no Streamlit inside.

Streamlit renders most strings as Markdown (headings, alerts, captions, progress texts), so
anything a user typed or a file brought (run names, run messages, model and file names, spec
values echoed in a message) goes through `markdown_text` before it is put in one.
"""

from __future__ import annotations

import re
import time

from cnnlab.errors import CnnlabError, Problem
from cnnlab.runs.live import Progress
from cnnlab.runs.store import Run, Status

# Characters that start Markdown anywhere in a line: emphasis, code, links and images, HTML and
# entities, tables, LaTeX ($), strikethrough, headings, Streamlit's :icon: and :colour[...]
# directives, and the ':' and '@' of bare URLs and e-mail addresses that GFM would link.
_INLINE = re.compile(r"([\\`*_\[\]<>|$~#:@&])")
# Characters that only matter at the start of a line: list items ("- ", "+ ", "1. ") and
# setext underlines ("===").
_LINE_START = re.compile(r"^(\s*)([-+=])", re.MULTILINE)
_ORDERED_ITEM = re.compile(r"^(\s*\d+)([.)])", re.MULTILINE)
_WWW = re.compile(r"\b(www)\.", re.IGNORECASE)  # GFM links "www.x.org" without any ':'
_CODE_SPAN = re.compile(r"(`[^`\n]+`)")  # one backtick each side, on one line


def markdown_text(text: str) -> str:
    """`text` escaped so that Markdown shows it literally: no emphasis, links, images, LaTeX,
    icons or automatic links from what someone typed ("**x**" shows its asterisks)."""
    text = _INLINE.sub(r"\\\1", str(text))
    text = _LINE_START.sub(r"\1\\\2", text)
    text = _ORDERED_ITEM.sub(r"\1\\\2", text)
    return _WWW.sub(r"\1\\.", text)


def error_markdown(exc: BaseException) -> str:
    """An error's message for Markdown. cnnlab's own errors keep their `code spans` (the
    commands and settings a fix names): Markdown shows what is inside a code span literally,
    so only the text between them needs escaping, and it gets it. Any other error's message
    is escaped whole."""
    text = str(exc)
    if not isinstance(exc, CnnlabError):
        return markdown_text(text)
    parts = _CODE_SPAN.split(text)  # odd indices: the code spans
    return "".join(part if i % 2 else markdown_text(part) for i, part in enumerate(parts))


def inline_code(text: str) -> str:
    """`text` as a Markdown code span, whatever backticks it holds (a longer fence than any run
    of backticks inside; nothing in a code span is Markdown)."""
    text = str(text)
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def sentence(text: str) -> str:
    """User text as one escaped sentence: a full stop added unless it ends in one."""
    text = str(text)
    return markdown_text(text if text.endswith((".", "?", "!")) else text + ".")


def problem_markdown(problem: Problem) -> str:
    """"`field`: what is wrong. **Fix:** what to do." with the problem's text escaped."""
    return (f"{inline_code(problem.field)}: {sentence(problem.message)} "
            f"**Fix:** {sentence(problem.fix)}")


def refusal(opening: str, exc: CnnlabError) -> str:
    """The alert above a refusal's problems: "Not started:" when the problems follow, each
    under its field; "Not started: why" (escaped) when the error has none to list."""
    return f"{opening}:" if exc.problems else f"{opening}: {error_markdown(exc)}"


# --- numbers -----------------------------------------------------------------------------------


def short(n: float) -> str:
    """A count in three digits and a unit: 7_610_000_000 -> '7.61 G', 512 -> '512'."""
    for factor, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= factor:
            return f"{n / factor:.3g} {unit}"
    return f"{n:,.0f}"


MIB = 2**20


def mib(value: object) -> float | None:
    """A byte count in MiB; None for a value that is not a number (not reported yet)."""
    return value / MIB if isinstance(value, (int, float)) else None


def decimal(x: float, places: int = 2) -> str:
    """At most `places` decimals, trailing zeros dropped: 1.0 -> '1', 1.25 -> '1.25',
    0.3333 -> '0.33'."""
    return f"{x:.{places}f}".rstrip("0").rstrip(".")


def duration(seconds: float) -> str:
    """75 -> '1 min 15 s'; 4000 -> '1 h 7 min'."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s" if seconds and minutes < 10 else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def took_seconds(run: Run, now: float | None = None) -> float | None:
    """How long a run has trained, in seconds; None before it started. A running run: the wall
    time since its worker started it, up to `now` (default: the clock). A finished one: the
    training loop's own `seconds` (the whole train() call: set-up, data, epochs, evaluation;
    not the worker's start-up or its last checkpoint), or, when the loop never reported (a
    crash, an interrupted worker), the wall time from start to finish in the store."""
    if run.status is Status.RUNNING and run.started_at is not None:
        return (time.time() if now is None else now) - run.started_at
    seconds = run.result.get("seconds")
    if seconds is None and run.started_at is not None and run.finished_at is not None:
        seconds = run.finished_at - run.started_at
    return seconds


def progress_text(now: Progress) -> str:
    """'epoch 1.3 of 10 · 7,300 examples/s · 2 min 10 s left', as far as known."""
    parts = []
    if now.epoch is not None:
        planned = now.planned_epochs or now.epochs
        of = f" of {decimal(planned)}" if planned else ""
        parts.append(f"epoch {decimal(now.epoch)}{of}")
    if now.examples_per_s:
        parts.append(f"{now.examples_per_s:,.0f} examples/s")
    if now.status is Status.RUNNING and now.eta_s is not None:
        parts.append(f"{duration(now.eta_s)} left")
    return " · ".join(parts)


# --- runs --------------------------------------------------------------------------------------


def run_option(run: Run, status: bool = True, test_acc: bool = False) -> str:
    """A run in a picker: 'its name · status', with its final test accuracy if asked and known.
    Without `status` for a picker that is not redrawn as the run goes on (it would go stale).
    Plain text: pickers do not render Markdown."""
    acc = run.test_acc if test_acc else None
    extra = f" · test acc {acc:.3f}" if isinstance(acc, (int, float)) else ""
    return f"{run.label}{f' · {run.status}' if status else ''}{extra}"


def owned(run: Run, *, markdown: bool = False) -> str:
    """A run and who queued it. Plain text for a picker: 'its label · status · Ada' ('no
    owner' when it has none). With `markdown`, for a line of the sidebar's queue: 'bn-lenet
    (Ada)', the model and the name escaped, nothing added for a run without an owner."""
    if markdown:
        return markdown_text(run.model) + (f" ({markdown_text(run.owner)})" if run.owner else "")
    return f"{run_option(run)} · {run.owner or 'no owner'}"


def data_label(run: Run) -> str | None:
    """'sample' or 'full': the data the run trained on, or None before its worker decided."""
    source = run.result.get("data_source") or run.data_source
    if source is None:
        return None
    return "sample" if source == "sample" else "full"
