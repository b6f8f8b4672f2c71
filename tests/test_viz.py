"""Figures of a network (cnnlab.views.figures): data in, Plotly figure out."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnlab.training.files import CLASSES
from cnnlab.views import figures as viz


def heatmaps(fig) -> list:
    return [t for t in fig.data if t.type == "heatmap"]


def texts(fig) -> list[str]:
    return [a.text for a in fig.layout.annotations]


# ---------------------------------------------------------------- filters


def test_filter_grid_draws_one_heatmap_per_filter() -> None:
    fig = viz.filter_grid(torch.randn(6, 1, 5, 5))
    assert len(heatmaps(fig)) == 6
    assert all(np.shape(t.z) == (5, 5) for t in fig.data)
    assert "6 × 1 × 5 × 5" in fig.layout.title.text


def test_filter_grid_shows_at_most_max_filters_and_says_so() -> None:
    fig = viz.filter_grid(torch.randn(96, 1, 11, 11), max_filters=64)
    assert len(fig.data) == 64 and "first 64" in fig.layout.title.text


def test_each_filter_is_centred_on_zero_with_its_own_range() -> None:
    weights = torch.zeros(2, 1, 3, 3)
    weights[0, 0, 0, 0], weights[1, 0, 1, 1] = 0.5, -4.0
    first, second = viz.filter_grid(weights).data
    assert (first.zmin, first.zmax) == (-0.5, 0.5) and (second.zmin, second.zmax) == (-4.0, 4.0)


def test_filters_with_several_input_channels_show_their_mean() -> None:
    weights = torch.stack([torch.ones(3, 3), 3 * torch.ones(3, 3)])[None]  # 1 x 2 x 3 x 3
    fig = viz.filter_grid(weights)
    assert np.allclose(fig.data[0].z, 2.0) and "mean over 2 input channels" in fig.layout.title.text


def test_filter_grid_refuses_a_tensor_that_is_not_conv_weights() -> None:
    with pytest.raises(ValueError, match="C_out x C_in x k x k"):
        viz.filter_grid(torch.randn(6, 5, 5))


def test_before_and_after_puts_each_filter_on_both_sides() -> None:
    before, after = torch.randn(6, 1, 5, 5), torch.randn(6, 1, 5, 5)
    fig = viz.filters_before_after(before, after, labels=("Before", "After epoch 3"))
    assert len(heatmaps(fig)) == 12
    assert np.allclose(fig.data[0].z, before[0, 0]) and np.allclose(fig.data[6].z, after[0, 0])
    assert {"<b>Before</b>", "<b>After epoch 3</b>"} <= set(texts(fig))
    left = fig.layout["xaxis" + fig.data[5].xaxis[1:]].domain[1]
    right = fig.layout["xaxis" + fig.data[6].xaxis[1:]].domain[0]
    assert left < right  # all "before" filters lie left of all "after" ones


def test_before_and_after_must_have_the_same_shape() -> None:
    with pytest.raises(ValueError, match="differ"):
        viz.filters_before_after(torch.randn(6, 1, 5, 5), torch.randn(8, 1, 5, 5))


# ---------------------------------------------------------------- feature maps


def bn_lenet_maps() -> list[tuple[str, torch.Tensor]]:
    return [("input", torch.rand(1, 28, 28)), ("conv1", torch.randn(6, 12, 12)),
            ("conv2", torch.randn(16, 4, 4))]


def test_feature_map_grid_has_a_row_per_block_and_a_heatmap_per_channel() -> None:
    fig = viz.feature_map_grid(bn_lenet_maps())
    assert len(heatmaps(fig)) == 1 + 6 + 16
    labels = texts(fig)
    assert [label.split(" · ")[0] for label in labels] == ["<b>input</b>", "<b>conv1</b>",
                                                          "<b>conv2</b>"]
    assert "6 × 12 × 12" in labels[1]


def test_feature_map_grid_caps_channels_and_says_how_many_there_are() -> None:
    fig = viz.feature_map_grid(bn_lenet_maps(), max_channels=4)
    assert len(fig.data) == 1 + 4 + 4 and "first 4 of 16 channels" in texts(fig)[2]


def test_large_feature_maps_are_drawn_as_block_averages() -> None:
    maps = [("vgg_block1", torch.arange(2 * 224 * 224, dtype=torch.float).reshape(2, 224, 224))]
    fig = viz.feature_map_grid(maps, max_side=64)
    assert np.shape(fig.data[0].z) == (56, 56)  # 224 / 4
    assert fig.data[0].z[0][0] == pytest.approx(np.arange(224 * 4).reshape(4, 224)[:, :4].mean())
    assert "224 × 224" in texts(fig)[0] and "4×4 averages" in texts(fig)[0]


def test_the_input_is_grey_and_feature_maps_are_coloured() -> None:
    fig = viz.feature_map_grid(bn_lenet_maps())
    scales = {t.name.split()[0]: t.colorscale for t in fig.data}
    assert scales["input"] != scales["conv1"]


def test_feature_map_grid_refuses_flat_outputs() -> None:
    with pytest.raises(ValueError, match="C x H x W"):
        viz.feature_map_grid([("fc1", torch.randn(120))])
    with pytest.raises(ValueError):
        viz.feature_map_grid([])


# ---------------------------------------------------------------- batch norm


def test_batch_norm_chart_has_gamma_beta_and_the_running_statistics() -> None:
    fig = viz.batch_norm_chart("conv1.1", torch.ones(6), torch.zeros(6), torch.zeros(6),
                               torch.ones(6))
    assert [t.name for t in fig.data] == ["γ scale", "β shift", "running mean", "running variance"]
    assert all(len(t.y) == 6 for t in fig.data)
    assert "conv1.1" in fig.layout.title.text and "6 channels" in fig.layout.title.text


def test_batch_norm_chart_without_running_statistics_has_one_panel() -> None:
    fig = viz.batch_norm_chart("fc1.1", np.ones(120), np.zeros(120))
    assert len(fig.data) == 2 and len(fig.data[0].x) == 120


def test_batch_norm_overview_puts_every_channel_of_every_layer_in_two_traces() -> None:
    layers = [("conv1.1", torch.ones(6), torch.zeros(6)),
              ("fc2.1", torch.ones(84), torch.zeros(84))]
    fig = viz.batch_norm_overview(layers)
    assert len(fig.data) == 2 and all(len(t.y) == 90 for t in fig.data)
    assert set(fig.data[0].x) == {"conv1.1", "fc2.1"}


# ---------------------------------------------------------------- predictions


def test_confusion_heatmap_shows_counts_coloured_by_share_of_the_true_class() -> None:
    matrix = torch.diag(torch.full((10,), 90)) + 1
    fig = viz.confusion_heatmap(matrix, CLASSES)
    (trace,) = fig.data
    assert np.shape(trace.z) == (10, 10) and trace.text[0][0] == 91
    assert trace.z[0][0] == pytest.approx(91 / 100)
    assert "91.0%" in fig.layout.title.text


def test_confusion_heatmap_needs_a_name_per_class() -> None:
    with pytest.raises(ValueError):
        viz.confusion_heatmap(torch.zeros(10, 10), CLASSES[:5])


def test_prediction_gallery_titles_right_green_and_wrong_red_with_the_true_class() -> None:
    images = torch.randint(0, 256, (3, 28, 28), dtype=torch.uint8)
    probs = torch.tensor([[0.9] + [0.1 / 9] * 9, [0.2, 0.8] + [0.0] * 8, [0.0] * 9 + [1.0]])
    labels = torch.tensor([0, 0, 9])
    fig = viz.prediction_gallery(images, probs, labels, CLASSES)
    assert len(heatmaps(fig)) == 3
    first, second, third = fig.layout.annotations
    assert first.text == "t-shirt 90%" and first.font.color == viz.GOOD
    assert second.text == "trouser 80%<br>(is t-shirt)" and second.font.color == viz.BAD
    assert third.font.color == viz.GOOD


def test_prediction_gallery_shows_only_the_chosen_images() -> None:
    images = torch.zeros(10, 28, 28, dtype=torch.uint8)
    probs = torch.eye(10)
    fig = viz.prediction_gallery(images, probs, torch.arange(10), CLASSES, indices=[2, 7])
    assert [t.name for t in fig.data] == ["image 2", "image 7"]
    assert [a.text for a in fig.layout.annotations] == ["pullover 100%", "sneaker 100%"]
