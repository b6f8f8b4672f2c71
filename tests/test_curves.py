"""Training curves from metric events (cnnlab.views.curves): one run, and runs overlaid."""

from __future__ import annotations

import pytest

from cnnlab.analysis.layers import inspect_spec
from cnnlab.arch.presets import PRESETS
from cnnlab.views.curves import MAX_POINTS, downsample, overlaid_curves, training_curves
from cnnlab.views.figures import params_flops_bars
from cnnlab.views.style import FONT, GREY, PALETTE


def events(steps: int, per_epoch: int = 100) -> list[dict]:
    out = []
    for s in range(1, steps + 1):
        out.append({"kind": "step", "step": s, "epoch": s / per_epoch,
                    "train_loss": 2.3 / s, "train_acc": 1 - 1 / (s + 1)})
        if s % per_epoch == 0:
            out.append({"kind": "epoch", "step": s, "epoch": s / per_epoch,
                        "test_loss": 1.0, "test_acc": 0.8})
    return out


def trace(figure, name):
    return next(t for t in figure.data if t.name == name)


def test_the_figure_has_the_textbooks_three_curves_and_test_loss():
    figure = training_curves(events(300))
    assert {t.name for t in figure.data} == {"train loss", "train acc", "test acc", "test loss"}
    assert list(trace(figure, "test acc").x) == [1.0, 2.0, 3.0]
    assert trace(figure, "train loss").xaxis == "x" and trace(figure, "train acc").xaxis == "x2"


def test_no_events_draw_empty_axes():
    assert training_curves([]).data == ()


def test_long_runs_are_downsampled_to_at_most_max_points():
    figure = training_curves(events(50_000, per_epoch=5000))
    loss = trace(figure, "train loss")
    assert len(loss.x) <= MAX_POINTS
    assert loss.x[-1] == pytest.approx(10.0)  # the curve still ends where the run is


def test_downsampling_averages_and_keeps_short_series_as_they_are():
    assert downsample([1, 2, 3], [4, 5, 6]) == ([1, 2, 3], [4, 5, 6])
    xs, ys = downsample(list(range(10)), list(range(10)), max_points=4)
    assert len(xs) == 4 and xs[-1] == 9
    assert xs[0] == pytest.approx(1.0)  # the mean of 0, 1, 2


def test_the_x_axis_spans_the_whole_run_and_the_book_line_is_drawn():
    figure = training_curves(events(50), epochs=10, book_test_acc=0.874)
    assert figure.layout.xaxis.range[0] == 0 and 10 <= figure.layout.xaxis.range[1] < 10.5
    assert any("0.874" in a.text for a in figure.layout.annotations)


def test_non_finite_values_are_left_out():
    bad = [{"kind": "step", "epoch": 0.1, "train_loss": float("nan"), "train_acc": 0.1},
           {"kind": "step", "epoch": 0.2, "train_loss": 2.0, "train_acc": 0.2}]
    assert list(trace(training_curves(bad), "train loss").y) == [2.0]


# ---------------------------------------------------------------- runs overlaid


def epoch_events(n_epochs: int, steps_per_epoch: int = 4) -> list[dict]:
    out = []
    for e in range(1, n_epochs + 1):
        for s in range(steps_per_epoch):
            epoch = e - 1 + (s + 1) / steps_per_epoch
            out.append({"kind": "step", "epoch": epoch, "train_loss": 2.0 / epoch})
        out.append({"kind": "epoch", "epoch": float(e), "train_loss": 1.0 / e,
                    "test_acc": 0.5 + 0.05 * e})
    return out


def test_overlaid_curves_draw_one_line_per_run() -> None:
    curves = {"a": epoch_events(3), "b": epoch_events(2), "queued": []}
    fig = overlaid_curves(curves, "test_acc")
    assert [t.name for t in fig.data] == ["a", "b", "queued"]
    assert list(fig.data[0].x) == [1.0, 2.0, 3.0]  # epoch events: test accuracy per epoch
    assert fig.data[0].line.color != fig.data[1].line.color


def test_a_runs_name_is_shown_as_text_not_markup() -> None:
    fig = overlaid_curves({"<a href='http://e/x'>x</a>": epoch_events(1)}, "test_acc")
    assert "<a" not in fig.data[0].name and "&lt;a href" in fig.data[0].name


def test_training_loss_uses_the_denser_step_events() -> None:
    fig = overlaid_curves({"a": epoch_events(3)}, "train_loss")
    assert len(fig.data[0].x) == 12 and fig.data[0].mode == "lines"


def test_long_curves_are_thinned_but_keep_their_last_point() -> None:
    fig = overlaid_curves({"long": epoch_events(100, 100)}, "train_loss", max_points=500)
    xs = fig.data[0].x
    assert len(xs) <= 501 and xs[-1] == 100.0


def test_references_are_dashed_lines_not_runs() -> None:
    fig = overlaid_curves({"a": epoch_events(2)}, "test_acc", references={"book 0.874": 0.874})
    assert len(fig.data) == 1
    assert [shape.y0 for shape in fig.layout.shapes] == [0.874]


def test_curves_and_network_figures_share_one_font_and_one_palette() -> None:
    one_run = training_curves(events(30))
    overlaid = overlaid_curves({"a": epoch_events(2), "b": epoch_events(2)}, "test_acc")
    bars = params_flops_bars(inspect_spec(PRESETS["lenet"]))
    assert one_run.layout.font.size == overlaid.layout.font.size == bars.layout.font.size \
        == FONT["size"]
    colours = {t.line.color for t in one_run.data} | {t.line.color for t in overlaid.data}
    assert colours <= set(PALETTE)
    assert {t.marker.color for t in bars.data} <= set(PALETTE) | {GREY}
