"""Figures of a network: its cost per block, its filters, feature maps, BatchNorm parameters
and predictions; and a sweep's results against the value it varied. Tables and tensors in, Plotly figures out, no Streamlit inside.

Each function returns a `plotly.graph_objects.Figure` that a page shows, a test inspects and
the CLI can save. Training curves are drawn by `cnnlab.views.curves`; both take their font and
colours from `cnnlab.views.style`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from cnnlab.analysis.layers import LayerTable
from cnnlab.shapes import shape_text
from cnnlab.views.style import BAD, BLUE, FONT, GOOD, GREEN, GREY, ORANGE, PURPLE

# Bar colours by what a block is made of: the chapter's point is that the dense layers hold
# most parameters while the convolutions do most of the arithmetic (d2l 7.2, exercise 1).
KIND_COLOURS = {"convolution": BLUE, "fully connected": ORANGE, "other": GREY}


def _bar_kind(kinds: set[str]) -> str:
    """"fully connected" if the block holds a Linear layer, "convolution" if a conv, else
    "other" (pooling, flatten, norms on their own)."""
    if "fc" in kinds:
        return "fully connected"
    if "conv" in kinds:
        return "convolution"
    return "other"


def _bars(table: LayerTable, level: str) -> list[tuple[str, str, int, int]]:
    """(name, kind, params, flops) per block, or per layer with parameters or FLOPs."""
    if level == "block":
        kinds: dict[str, set[str]] = {}
        for row in table.rows:
            kinds.setdefault(row.block, set()).add(row.kind)
        return [(b.name or "(model)", _bar_kind(kinds.get(b.name, set())), b.params, b.flops)
                for b in table.blocks]
    if level == "layer":
        return [(r.path or "(model)", _bar_kind({r.kind}), r.params, r.flops)
                for r in table.rows if r.params or r.flops]
    raise ValueError(f"level: {level!r} is not 'block' or 'layer'")


def params_flops_bars(table: LayerTable, level: str = "block") -> go.Figure:
    """Two bar charts side by side: parameters and FLOPs per image, one bar per block of
    `table` (level="block", every block, in order) or per layer that has parameters or
    FLOPs (level="layer"). Bars are coloured convolution / fully connected / other; hovering
    shows the exact count and its share of the total. Raises ValueError for another level.
    """
    bars = _bars(table, level)
    names = [name for name, _, _, _ in bars]
    total_params = sum(p for _, _, p, _ in bars) or 1
    total_flops = sum(f for _, _, _, f in bars) or 1
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.08,
                        subplot_titles=("Parameters", "FLOPs per image"))
    for kind, colour in KIND_COLOURS.items():
        chosen = [bar for bar in bars if bar[1] == kind]
        if not chosen:
            continue
        for col, index, total, unit in ((1, 2, total_params, "parameters"),
                                        (2, 3, total_flops, "FLOPs")):
            values = [bar[index] for bar in chosen]
            fig.add_trace(go.Bar(
                x=[bar[0] for bar in chosen], y=values, name=kind, legendgroup=kind,
                showlegend=col == 1, marker_color=colour,
                customdata=[v / total for v in values],
                hovertemplate=f"%{{x}}<br>%{{y:,}} {unit} (%{{customdata:.1%}})"
                              "<extra></extra>",
            ), row=1, col=col)
    for col in (1, 2):
        fig.update_xaxes(categoryorder="array", categoryarray=names, tickangle=-45,
                         row=1, col=col)
    fig.update_yaxes(tickformat="~s")
    fig.update_layout(barmode="relative", bargap=0.15, height=420,
                      margin=dict(l=10, r=10, t=40, b=10), font=FONT,
                      legend=dict(orientation="h", yanchor="bottom", y=1.08, x=0))
    return fig


# ---------------------------------------------------------------- looking inside a network
# Image grids are one figure of heatmap subplots, not st.image calls: st.image inside a
# refreshing fragment gave /media 404s right after a server start (streamlit issue #9079), and a
# figure is also what a test or the CLI can inspect.



def _array(values: Any) -> np.ndarray:
    """A float numpy array from a tensor (any device), an array or nested lists."""
    if hasattr(values, "detach"):
        values = values.detach().float().cpu().numpy()
    return np.asarray(values, dtype=float)


def _grid(n: int, max_cols: int, wide: bool = True) -> tuple[int, int]:
    """(rows, cols) for n cells: one row while n fits, else about twice (wide) or as many
    columns as rows."""
    if n <= max_cols:
        return 1, max(n, 1)
    cols = min(max_cols, math.ceil(math.sqrt(2 * n if wide else n)))
    return math.ceil(n / cols), cols


def _image_axes(fig: go.Figure) -> None:
    """Square pixels, row 0 at the top, no ticks: every heatmap subplot drawn as an image."""
    for trace in fig.data:
        x_name = "xaxis" + trace.xaxis[1:]
        y_name = "yaxis" + trace.yaxis[1:]
        fig.layout[x_name].update(visible=False, constrain="domain")
        fig.layout[y_name].update(visible=False, autorange="reversed", scaleanchor=trace.xaxis,
                                  constrain="domain", constraintoward="top")


def _symmetric(z: np.ndarray) -> float:
    """A colour range +-m that centres zero (white) for signed weights."""
    m = float(np.abs(z).max()) if z.size else 0.0
    return m if m > 0 else 1.0


def _filter_traces(fig: go.Figure, w: np.ndarray, n: int, cols: int, col_offset: int,
                   label: str) -> None:
    for i in range(n):
        m = _symmetric(w[i])
        fig.add_trace(go.Heatmap(
            z=w[i], zmin=-m, zmax=m, colorscale="RdBu_r", showscale=False,
            name=f"{label} filter {i + 1}",
            hovertemplate=f"{label}filter {i + 1}<br>row %{{y}}, column %{{x}}<br>"
                          "weight %{z:.3f}<extra></extra>",
        ), row=i // cols + 1, col=col_offset + i % cols + 1)


def _filters_2d(weights: Any) -> tuple[np.ndarray, str]:
    """C_out x k x k from C_out x C_in x k x k, and a note when input channels were averaged."""
    w = _array(weights)
    if w.ndim != 4:
        raise ValueError(f"weights must be C_out x C_in x k x k, got shape {w.shape}")
    if w.shape[1] == 1:
        return w[:, 0], ""
    return w.mean(axis=1), f", mean over {w.shape[1]} input channels"


def filter_grid(weights: Any, max_filters: int = 96, title: str | None = None) -> go.Figure:
    """The first layer's filters as a grid of small heatmaps, one subplot (one trace) per filter,
    at most `max_filters`. `weights` is C_out x C_in x k x k (a tensor or array); with several
    input channels each filter shows their mean. Each filter has its own colour range centred
    on zero: red positive, blue negative, white zero; hover shows the weight."""
    w, note = _filters_2d(weights)
    n = min(len(w), max_filters)
    rows, cols = _grid(n, 16)
    shown = "" if n == len(w) else f" (first {n})"
    size = shape_text(_array(weights).shape, " × ")
    heading = title or f"First-layer filters: {size}{shown}{note}"
    fig = make_subplots(rows=rows, cols=cols, horizontal_spacing=0.01,
                        vertical_spacing=0.01 if rows > 1 else 0.0,
                        subplot_titles=[f"{i + 1}" for i in range(n)] if n <= 16 else None)
    _filter_traces(fig, w, n, cols, 0, "")
    _image_axes(fig)
    cell = min(120, 1100 // cols)
    fig.update_layout(title=heading, height=rows * cell + (110 if n <= 16 else 80),
                      margin=dict(l=10, r=10, t=70, b=10), font=FONT)
    return fig


def filters_before_after(untrained: Any, trained: Any, max_filters: int = 96,
                         labels: tuple[str, str] = ("Before training", "After training"),
                         ) -> go.Figure:
    """The same first-layer filters before (as initialised) and after training, side by side:
    two grids in one figure, filter i at the same place in both. 2 x min(C_out, max_filters)
    heatmap traces. Raises ValueError if the two shapes differ."""
    before, note = _filters_2d(untrained)
    after, _ = _filters_2d(trained)
    if before.shape != after.shape:
        raise ValueError(f"filter shapes differ: {before.shape} before, {after.shape} after")
    n = min(len(before), max_filters)
    cols = max(1, math.ceil(math.sqrt(n)))  # each side a near-square grid: big cells for few
    rows = math.ceil(n / cols)
    # A narrow empty column between the two grids keeps them apart.
    specs = [[{} for _ in range(cols)] + [None] + [{} for _ in range(cols)] for _ in range(rows)]
    fig = make_subplots(rows=rows, cols=2 * cols + 1, specs=specs,
                        column_widths=[1.0] * cols + [0.6] + [1.0] * cols,
                        horizontal_spacing=min(0.02, 0.1 / cols),
                        vertical_spacing=min(0.04, 0.2 / rows) if rows > 1 else 0.0)
    _filter_traces(fig, before, n, cols, 0, f"{labels[0].lower()}: ")
    _filter_traces(fig, after, n, cols, cols + 1, f"{labels[1].lower()}: ")
    _image_axes(fig)
    for side, label in enumerate(labels):
        first = fig.layout["xaxis" + fig.data[side * n].xaxis[1:]].domain
        last = fig.layout["xaxis" + fig.data[side * n + min(n, cols) - 1].xaxis[1:]].domain
        fig.add_annotation(text=f"<b>{label}</b>", x=(first[0] + last[1]) / 2, y=1.0,
                           xref="paper", yref="paper", yanchor="bottom", showarrow=False,
                           font=dict(size=17))
    cell = min(150, 560 // cols)
    shown = "" if n == len(before) else f" (first {n})"
    fig.update_layout(
        title=f"First-layer filters: {shape_text(_array(untrained).shape, ' × ')}{shown}{note}",
        height=rows * cell + 120, margin=dict(l=10, r=10, t=95, b=10), font=FONT)
    return fig


def _shrink(a: np.ndarray, max_side: int) -> tuple[np.ndarray, int]:
    """C x H x W averaged over s x s blocks so that H and W are at most max_side; (array, s)."""
    s = math.ceil(max(a.shape[1:]) / max_side)
    if s <= 1:
        return a, 1
    c, h, w = a.shape
    a = a[:, :h - h % s or h, :w - w % s or w]
    return a.reshape(c, a.shape[1] // s, s, a.shape[2] // s, s).mean(axis=(2, 4)), s


def feature_map_grid(maps: list[tuple[str, Any]], max_channels: int = 16,
                     max_side: int = 64) -> go.Figure:
    """Feature maps block by block: one row per (name, C x H x W) entry, its first
    `max_channels` channels as small heatmaps (one trace each), each scaled to its own range.
    A row named "input" is drawn in grey, as the image; the rest in Viridis (bright = high).
    Maps wider than `max_side` are averaged over s x s blocks (VGG's 224 x 224 maps would
    otherwise send megabytes to the browser); the row's label says so."""
    if not maps:
        raise ValueError("no feature maps to draw")
    arrays = [(name, _array(m)) for name, m in maps]
    for name, a in arrays:
        if a.ndim != 3:
            raise ValueError(f"{name}: a feature map must be C x H x W, got shape {a.shape}")
    cols = min(max_channels, max(a.shape[0] for _, a in arrays))
    rows = len(arrays)
    cell = min(100, 1150 // cols)
    label_px = 34
    height = rows * (cell + label_px) + 30
    fig = make_subplots(rows=rows, cols=cols, horizontal_spacing=0.004,
                        vertical_spacing=label_px / height if rows > 1 else 0.0)
    for r, (name, a) in enumerate(arrays):
        shown = min(a.shape[0], cols)
        small, step = _shrink(a[:shown], max_side)
        colours = "Greys_r" if name == "input" else "Viridis"
        for c in range(shown):
            # Each channel on its own scale; a constant one (a dead ReLU) draws dark, not mid.
            low, high = float(small[c].min()), float(small[c].max())
            fig.add_trace(go.Heatmap(
                z=small[c].astype(np.float32),  # half the bytes sent to the browser
                zmin=low, zmax=high if high > low else low + 1.0,
                colorscale=colours, showscale=False, name=f"{name} channel {c}",
                hovertemplate=f"{name}, channel {c}<br>row %{{y}}, column %{{x}}<br>"
                              "value %{z:.3f}<extra></extra>",
            ), row=r + 1, col=c + 1)
        more = f" · first {shown} of {a.shape[0]} channels" if shown < a.shape[0] else ""
        if step > 1:
            more += f" · drawn as {step}×{step} averages"
        top = fig.layout["yaxis" + fig.data[-shown].yaxis[1:]].domain[1]
        fig.add_annotation(text=f"<b>{name}</b> · {shape_text(a.shape, ' × ')}{more}", x=0, y=top,
                           xref="paper", yref="paper", xanchor="left", yanchor="bottom",
                           showarrow=False, font=FONT)
    _image_axes(fig)
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=label_px + 6, b=10), font=FONT)
    return fig


def batch_norm_chart(path: str, gamma: Any, beta: Any, running_mean: Any = None,
                     running_var: Any = None) -> go.Figure:
    """One BatchNorm layer per channel: gamma (scale) and beta (shift) as grouped bars, with
    their initial values 1 and 0 dotted; below, when given, the running mean and variance
    that prediction uses. 2 traces, plus one per running statistic given."""
    g, b = _array(gamma).reshape(-1), _array(beta).reshape(-1)
    running = [(label, _array(v).reshape(-1)) for label, v in
               (("running mean", running_mean), ("running variance", running_var))
               if v is not None]
    rows = 2 if running else 1
    channels = list(range(len(g)))
    fig = make_subplots(rows=rows, cols=1, shared_xaxes=True, vertical_spacing=0.12,
                        subplot_titles=["γ (scale) and β (shift), learned"]
                        + (["running mean and variance, used for prediction"] if running else []))
    for values, label, colour in ((g, "γ scale", BLUE), (b, "β shift", ORANGE)):
        fig.add_trace(go.Bar(x=channels, y=values, name=label, marker_color=colour,
                             hovertemplate=f"channel %{{x}}: {label} %{{y:.3f}}<extra></extra>"),
                      row=1, col=1)
    fig.add_hline(y=1.0, line_dash="dot", line_color=BLUE, row=1, col=1)
    fig.add_hline(y=0.0, line_color=GREY, line_width=1, row=1, col=1)
    for (label, values), colour in zip(running, (GREEN, PURPLE)):
        fig.add_trace(go.Bar(x=channels, y=values, name=label, marker_color=colour,
                             hovertemplate=f"channel %{{x}}: {label} %{{y:.3f}}<extra></extra>"),
                      row=2, col=1)
    fig.update_xaxes(title_text="channel", row=rows, col=1)
    fig.update_layout(title=f"<b>{path}</b> · {len(g)} channels", barmode="group",
                      height=300 * rows + 110, margin=dict(l=10, r=10, t=80, b=10), font=FONT,
                      legend=dict(orientation="h", yanchor="top", y=-0.12 if rows == 2 else -0.25,
                                  x=0))
    return fig


def batch_norm_overview(layers: list[tuple[Any, ...]]) -> go.Figure:
    """Every BatchNorm layer at a glance: the spread of gamma and of beta over its channels,
    one box (with every channel as a point) per layer. `layers` holds (path, gamma, beta, ...)
    tuples, as `cnnlab.views.inside.batch_norm_layers` returns. Two traces: gamma and beta."""
    fig = go.Figure()
    for index, label, colour in ((1, "γ scale", BLUE), (2, "β shift", ORANGE)):
        xs, ys = [], []
        for layer in layers:
            values = _array(layer[index]).reshape(-1)
            xs += [layer[0]] * len(values)
            ys += values.tolist()
        fig.add_trace(go.Box(x=xs, y=ys, name=label, marker_color=colour, boxpoints="all",
                             jitter=0.4, pointpos=0, marker_size=4,
                             hovertemplate=f"%{{x}}: {label} %{{y:.3f}}<extra></extra>"))
    fig.add_hline(y=1.0, line_dash="dot", line_color=BLUE)
    fig.add_hline(y=0.0, line_color=GREY, line_width=1)
    fig.update_layout(title="γ and β of every BatchNorm layer (one point per channel)",
                      boxmode="group", height=420, margin=dict(l=10, r=10, t=80, b=10),
                      font=FONT, xaxis_tickangle=-30,
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, x=1, xanchor="right"))
    return fig


def confusion_heatmap(matrix: Any, class_names: list[str] | tuple[str, ...],
                      title: str | None = None) -> go.Figure:
    """A confusion matrix (rows: true class, columns: predicted) as one heatmap: each cell's
    count as text, its colour the share of that true class (so rows compare even when classes
    differ in size)."""
    counts = _array(matrix)
    names = list(class_names)
    if counts.shape != (len(names), len(names)):
        raise ValueError(f"matrix is {counts.shape}, expected {len(names)} x {len(names)}")
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    correct = int(np.trace(counts))
    heading = title or (f"Confusion matrix: {correct:,} of {int(counts.sum()):,} right "
                        f"({correct / max(1, counts.sum()):.1%})")
    fig = go.Figure(go.Heatmap(
        z=share, x=names, y=names, text=counts.astype(int), texttemplate="%{text}",
        colorscale="Blues", zmin=0, zmax=1, colorbar=dict(title="share of<br>true class"),
        hovertemplate="true %{y}, predicted %{x}<br>%{text} images (%{z:.0%} of the %{y}s)"
                      "<extra></extra>"))
    fig.update_xaxes(title_text="predicted", side="bottom", tickangle=-30)
    fig.update_yaxes(title_text="true", autorange="reversed")
    fig.update_layout(title=heading, height=620, margin=dict(l=10, r=10, t=60, b=10), font=FONT)
    return fig


def prediction_gallery(images: Any, probs: Any, labels: Any,
                       class_names: list[str] | tuple[str, ...], cols: int = 8,
                       indices: list[int] | None = None) -> go.Figure:
    """Test images with what the network says: each image titled with its predicted class and
    probability, green when right, red (with the true class) when wrong. `images` is N x H x W
    (uint8 0-255), `probs` N x classes, `labels` the N true classes; `indices` picks which of
    the N to show (default: all), numbered so in the hover. One heatmap trace per image shown."""
    imgs, p = _array(images), _array(probs)
    truth = _array(labels).astype(int).reshape(-1)
    if imgs.ndim != 3 or p.ndim != 2 or not len(imgs) == len(p) == len(truth):
        raise ValueError(f"need N x H x W images, N x classes probs and N labels, got "
                         f"{imgs.shape}, {p.shape}, {truth.shape}")
    chosen = list(range(len(imgs))) if indices is None else [int(i) for i in indices]
    n = len(chosen)
    cols = min(cols, max(n, 1))
    rows = max(1, math.ceil(n / cols))
    preds = [int(p[i].argmax()) for i in chosen]
    titles = []
    for i, pred in zip(chosen, preds):
        text = f"{class_names[pred]} {p[i, pred]:.0%}"
        titles.append(text if pred == truth[i] else f"{text}<br>(is {class_names[truth[i]]})")
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles or None,
                        horizontal_spacing=0.01,
                        vertical_spacing=0.14 / rows if rows > 1 else 0.0)
    for k, i in enumerate(chosen):
        fig.add_trace(go.Heatmap(
            z=imgs[i], colorscale="Greys_r", zmin=0, zmax=255, showscale=False,
            name=f"image {i}",
            hovertemplate=f"test image {i}: a {class_names[truth[i]]}<extra></extra>",
        ), row=k // cols + 1, col=k % cols + 1)
    for k, annotation in enumerate(fig.layout.annotations[:n]):
        right = preds[k] == truth[chosen[k]]
        annotation.font = dict(size=14, color=GOOD if right else BAD)
    _image_axes(fig)
    cell = min(150, 1150 // cols)
    fig.update_layout(height=rows * (cell + 50) + 20, margin=dict(l=10, r=10, t=50, b=10),
                      font=FONT)
    return fig


SWEEP_PANELS = (("test_acc", "final test accuracy"), ("examples_per_s", "examples/s"),
                ("memory_measured", "measured memory (MiB)"))


def _numeric_axis(values: list[Any]) -> bool:
    return bool(values) and all(type(v) in (int, float) for v in values)


def sweep_figure(field: str | None, points: list[dict[str, Any]]) -> go.Figure:
    """A sweep's results against the varied value (`cnnlab.views.compare.sweep_points`): final
    test accuracy, examples/s and measured memory side by side. Diverged runs are marked with
    a red cross at the bottom of each panel, so a reader sees where the lr got too big. A
    numeric field spanning 100x or more gets a log axis (learning rates)."""
    fig = make_subplots(rows=1, cols=3, subplot_titles=[t for _, t in SWEEP_PANELS],
                        horizontal_spacing=0.08)
    values = [p["value"] for p in points]
    numeric = _numeric_axis(values)
    xs = values if numeric else [p["label"] for p in points]
    for col, (key, title) in enumerate(SWEEP_PANELS, start=1):
        fine = [(x, p[key]) for x, p in zip(xs, points)
                if not p["diverged"] and isinstance(p[key], (int, float))]
        fig.add_trace(go.Scatter(x=[f[0] for f in fine], y=[f[1] for f in fine],
                                 mode="lines+markers", name=title, showlegend=False,
                                 marker={"color": BLUE, "size": 9}), row=1, col=col)
        bad = [x for x, p in zip(xs, points) if p["diverged"]]
        if bad:
            floor = min((f[1] for f in fine), default=0.0)
            fig.add_trace(go.Scatter(x=bad, y=[floor] * len(bad), mode="markers+text",
                                     name="diverged", showlegend=col == 1,
                                     text=["diverged"] * len(bad), textposition="top center",
                                     marker={"color": BAD, "symbol": "x", "size": 13}),
                          row=1, col=col)
    log = numeric and min(values) > 0 and max(values) / min(values) >= 100
    fig.update_xaxes(title_text=field or "run", type="log" if log else None)
    fig.update_layout(height=380, font=FONT, margin={"t": 60, "b": 50, "l": 50, "r": 20},
                      legend={"orientation": "h", "y": -0.25})
    return fig
