"""Training curves: one run as the textbook draws it (d2l's `Animator` in `train_ch6`), and
several runs overlaid. Metric events in, Plotly figures out, no Streamlit inside.

Long runs are averaged down to at most MAX_POINTS points per curve before drawing: a browser
redrawing a chart every second stayed smooth at ~10k points and dropped to 14-24 frames a
second at 100k.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from cnnlab.arch.checks import is_number
from cnnlab.runs.metrics import Event
from cnnlab.views.style import BLUE, FONT, GREEN, GREY, SKY, VERMILLION, run_colour

MAX_POINTS = 2000
COLORS = {"train_loss": BLUE, "test_loss": SKY, "train_acc": VERMILLION, "test_acc": GREEN,
          "book": GREY}
MARKED_POINTS = 20  # the test curves mark each epoch's point up to this many
METRIC_TITLES = {"test_acc": "test accuracy", "train_acc": "training accuracy",
                 "train_loss": "training loss", "test_loss": "test loss",
                 "examples_per_s": "examples/s"}


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


def series(events: Sequence[Event], kind: str, key: str) -> tuple[list[float], list[float]]:
    """(epochs, values) of `key` in the events of `kind` ("step" or "epoch"), in order; events
    without a finite number for it are left out."""
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
        xs, ys = downsample(*series(events, kind, key))
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
        height=height, margin={"l": 10, "r": 10, "t": 40, "b": 10}, font=FONT,
        legend={"orientation": "h", "yanchor": "top", "y": -0.18, "x": 0.5, "xanchor": "center"},
        hovermode="x unified", uirevision="keep",  # keep a user's zoom across the live redraws
    )
    return figure


def overlaid_curves(curves: dict[str, list[Event]], metric: str,
                    references: dict[str, float] | None = None,
                    max_points: int = MAX_POINTS) -> go.Figure:
    """One line per run of `metric` against epochs. `curves` maps a label to the run's metric
    events (`RunStore.metrics`); step events are used where they carry the metric (the training
    loss, densely), else epoch events (test accuracy, once per epoch). Lines longer than
    `max_points` are averaged down (`downsample`). `references` adds a dashed horizontal line
    per label, e.g. the book's accuracy. One trace per run, even one with no points yet."""
    fig = go.Figure()
    for number, (label, events) in enumerate(curves.items()):
        label = html.escape(label)  # a run's name; Plotly renders tags such as <a href> in text
        xs, ys = series(events, "step", metric)
        dense = bool(xs)
        if not dense:
            xs, ys = series(events, "epoch", metric)
        xs, ys = downsample(xs, ys, max_points)
        fig.add_trace(go.Scatter(
            x=xs, y=ys, name=label, mode="lines" if dense else "lines+markers",
            line={"color": run_colour(number), "width": 2.5},
            hovertemplate=f"{label}<br>epoch %{{x:.2f}}: %{{y:.4g}}<extra></extra>"))
    for label, value in (references or {}).items():
        fig.add_hline(y=value, line_dash="dash", line_color=GREY,
                      annotation_text=label, annotation_position="top left")
    title = METRIC_TITLES.get(metric, metric.replace("_", " "))
    fig.update_layout(title=title[0].upper() + title[1:], height=420, font=FONT,
                      xaxis_title="epoch", yaxis_title=title, hovermode="closest",
                      margin={"l": 10, "r": 10, "t": 60, "b": 10},
                      legend={"orientation": "h", "yanchor": "top", "y": -0.18, "x": 0})
    return fig
