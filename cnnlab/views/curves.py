"""Training curves as the textbook draws them (d2l's `Animator` in `train_ch6`): train loss,
train accuracy and test accuracy against epochs, as one Plotly figure. No Streamlit in here.

Long runs are averaged down to at most MAX_POINTS points per curve before drawing: a browser
redrawing the chart every second stays smooth at ~10k points and stutters at 100k
(STREAMLIT.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from cnnlab.arch.checks import is_number

Event = dict[str, Any]

MAX_POINTS = 2000
# Colours that stay apart on a washed-out classroom projector (Okabe-Ito, colour-blind safe).
COLORS = {"train_loss": "#0072B2", "test_loss": "#56B4E9", "train_acc": "#D55E00",
          "test_acc": "#009E73", "book": "#777777"}
FONT_SIZE = 15
MARKED_POINTS = 20  # the test curves mark each epoch's point up to this many


def downsample(xs: Sequence[float], ys: Sequence[float],
               max_points: int = MAX_POINTS) -> tuple[list[float], list[float]]:
    """At most `max_points` points: consecutive points averaged in equal runs, the last point
    kept as it is (so the curve ends where the run is now)."""
    if len(xs) <= max_points:
        return list(xs), list(ys)
    body, buckets = len(xs) - 1, max_points - 1  # all but the last point, in equal runs
    out_x, out_y = [], []
    for i in range(buckets):
        start, stop = i * body // buckets, (i + 1) * body // buckets
        out_x.append(sum(xs[start:stop]) / (stop - start))
        out_y.append(sum(ys[start:stop]) / (stop - start))
    out_x.append(xs[-1])
    out_y.append(ys[-1])
    return out_x, out_y


def _series(events: Sequence[Event], kind: str, key: str) -> tuple[list[float], list[float]]:
    points = [(e["epoch"], e[key]) for e in events
              if e.get("kind") == kind and is_number(e.get("epoch")) and is_number(e.get(key))]
    return [p[0] for p in points], [p[1] for p in points]


def training_curves(events: Sequence[Event], *, epochs: float | None = None,
                    book_test_acc: float | None = None, height: int = 420) -> go.Figure:
    """Loss (left) and accuracy (right) against epochs from a run's metric events.

    Step events give the training curves (averages over each logging interval), epoch events
    the test points. `epochs` fixes the x range to the whole run, so the curves grow from the
    left as it trains; `book_test_acc` draws the textbook's final test accuracy as a dashed
    line to aim for.
    """
    figure = make_subplots(rows=1, cols=2, subplot_titles=("Loss", "Accuracy"),
                           horizontal_spacing=0.1)
    curves = (
        ("step", "train_loss", "train loss", 1, "lines"),
        ("epoch", "test_loss", "test loss", 1, "lines+markers"),
        ("step", "train_acc", "train acc", 2, "lines"),
        ("epoch", "test_acc", "test acc", 2, "lines+markers"),
    )
    for kind, key, name, column, mode in curves:
        xs, ys = downsample(*_series(events, kind, key))
        if not xs:
            continue
        if len(xs) < 3:
            mode = "lines+markers"  # a lone point of a line would not show at all
        elif len(xs) > MARKED_POINTS:
            mode = "lines"  # dozens of epoch markers only clutter the curve
        figure.add_trace(go.Scatter(
            x=xs, y=ys, name=name, mode=mode, line={"color": COLORS[key], "width": 3,
                                                    "dash": "dot" if key == "test_loss" else None},
            marker={"size": 9},
            hovertemplate=f"{name} %{{y:.3f}}<br>epoch %{{x:.2f}}<extra></extra>",
        ), row=1, col=column)
    if book_test_acc is not None:
        figure.add_hline(y=book_test_acc, row=1, col=2,
                         line={"color": COLORS["book"], "dash": "dash"},
                         annotation_text=f"book: {book_test_acc:.3f}",
                         annotation_position="bottom right", annotation_font_color=COLORS["book"])
    x_range = [0, epochs * 1.03] if epochs else None  # room for the last marker
    figure.update_xaxes(title_text="epoch", range=x_range, rangemode="tozero")
    figure.update_yaxes(rangemode="tozero", row=1, col=1)
    figure.update_yaxes(range=[0, 1], row=1, col=2)
    figure.update_layout(
        height=height, margin={"l": 10, "r": 10, "t": 40, "b": 10}, font={"size": FONT_SIZE},
        legend={"orientation": "h", "yanchor": "top", "y": -0.18, "x": 0.5, "xanchor": "center"},
        hovermode="x unified", uirevision="keep",  # keep a user's zoom across the live redraws
    )
    return figure
