"""The diagrams draw the chapter's figures: blocks with shapes on the edges, Inception's four
paths, ResNet's skip into an addition, DenseNet's concatenations, repeats collapsed."""

from __future__ import annotations

import re
import shutil

import pytest
from torch import nn

from cnnlab.analysis import diagram
from cnnlab.analysis.diagram import GraphvizMissing, to_dot, to_svg, write_svg
from cnnlab.arch.presets import PRESETS

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is missing")


def clusters(dot: str) -> list[str]:
    """The source of every `subgraph cluster_...` block (nested ones too), braces matched."""
    bodies = []
    for match in re.finditer(r"subgraph cluster_\d+ \{", dot):
        depth, in_quotes, i = 1, False, match.end()
        while depth:
            char = dot[i]
            if char == "\\" and in_quotes:
                i += 1  # skip the escaped character
            elif char == '"':
                in_quotes = not in_quotes
            elif not in_quotes:
                depth += {"{": 1, "}": -1}.get(char, 0)
            i += 1
        bodies.append(dot[match.end():i - 1])
    return bodies


def own_label(cluster: str) -> str:
    """A cluster's own label: its attributes come first, before any nested cluster."""
    return re.search(r'label=("(?:[^"\\]|\\.)*"|\S+)', cluster).group(1)


def node_ids(dot: str) -> set[str]:
    return set(re.findall(r"^\s*(n\d+) \[label=", dot, flags=re.MULTILINE))


def with_class(dot: str, name: str) -> int:
    return len(re.findall(rf'\bclass="?{name}"?[ \]]', dot))


@needs_dot
@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_renders_to_svg(name):
    svg = to_svg(to_dot(PRESETS[name]))
    assert svg.startswith(b"<?xml") or b"<svg" in svg


def test_vgg11_shows_its_five_vgg_blocks_and_the_512x7x7_map_before_the_dense_part():
    dot = to_dot(PRESETS["vgg11"])
    assert all(f"vgg_block{i}\\n" in dot for i in range(1, 6))
    assert "vgg_block6" not in dot
    assert "vgg_block3\\n2 x conv3x3 256, maxpool2x2/2" in dot
    assert '[label="512x7x7"]' in dot


def test_googlenet_draws_nine_inception_clusters_each_with_four_paths_into_a_concat():
    dot = to_dot(PRESETS["googlenet"])
    inceptions = [c for c in clusters(dot) if "Inception " in own_label(c)]
    assert len(inceptions) == 9
    for body in inceptions:
        assert with_class(body, "inception-path") == 4
        assert with_class(body, "concat") == 1
    assert "Inception 64 | 96>128 | 16>32 | 32" in inceptions[0]


def test_googlenet_paths_carry_their_channel_counts():
    dot = to_dot(PRESETS["googlenet"])
    # b3.0's four paths at 12x12 (d2l 7.4.2): 64 + 128 + 32 + 32 = 256 channels.
    for shape in ("64x12x12", "128x12x12", "32x12x12", "256x12x12"):
        assert f'"{shape}"' in dot


def test_resnet18_drawn_in_full_has_eight_additions_and_three_shortcut_convs():
    dot = to_dot(PRESETS["resnet18"], collapse=False)
    assert with_class(dot, "add") == 8
    shortcuts = re.findall(r'label="(conv1x1/2 \d+)" class=shortcut', dot)
    assert shortcuts == ["conv1x1/2 128", "conv1x1/2 256", "conv1x1/2 512"]


def test_collapse_draws_resnet34s_repeated_residuals_as_counted_boxes():
    dot = to_dot(PRESETS["resnet34"], collapse=True)
    # Stages (3, 4, 6, 3): the first stage is all alike, the others open with a strided block.
    for text in ("Residual 64 x3", "Residual 128 x3", "Residual 256 x5", "Residual 512 x2"):
        assert text in dot
    assert "resnet_block3.1-5" in dot


def test_collapse_draws_fewer_nodes_than_drawing_everything():
    collapsed = to_dot(PRESETS["resnet34"], collapse=True)
    full = to_dot(PRESETS["resnet34"], collapse=False)
    assert len(node_ids(collapsed)) < len(node_ids(full))
    assert " x5" not in full
    assert with_class(full, "add") == 16


def test_googlenet_keeps_every_inception_when_collapsed_since_no_two_are_alike():
    spec = PRESETS["googlenet"]
    assert to_dot(spec, collapse=True) == to_dot(spec, collapse=False)


def test_densenet_shows_concatenations_channel_growth_and_three_transitions():
    dot = to_dot(PRESETS["densenet"])
    assert with_class(dot, "concat") == 16  # 4 dense blocks of 4 conv blocks
    assert "64 -> 96 -> 128 -> 160 -> 192" in dot  # growth rate 32 (d2l 7.7.2)
    assert "96 -> 128 -> 160 -> 192 -> 224" in dot  # after the transition halves 192
    transitions = re.findall(r'label="transition_block\d\\n([^"]*)"', dot)
    assert transitions == ["BN, conv1x1 96, avgpool2x2/2", "BN, conv1x1 112, avgpool2x2/2",
                           "BN, conv1x1 120, avgpool2x2/2"]


def test_a_plain_sequential_module_is_drawn_with_its_shapes():
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 26 * 26, 10))
    dot = to_dot(model, (1, 1, 28, 28))
    assert '"0\\nconv3x3 8"' in dot
    for shape in ('"1x28x28"', '"8x26x26"', "label=5408", "label=10"):
        assert shape in dot


def test_a_module_without_an_input_shape_is_refused():
    with pytest.raises(ValueError, match="input_shape"):
        to_dot(nn.Linear(3, 4))


def test_an_unknown_direction_is_refused():
    with pytest.raises(ValueError, match="direction"):
        to_dot(PRESETS["lenet"], direction="sideways")


def test_left_to_right_sets_the_rank_direction():
    assert "rankdir=LR" in to_dot(PRESETS["lenet"], direction="LR")


def test_node_ids_are_counters_and_the_same_on_every_call():
    first, second = to_dot(PRESETS["resnet18"]), to_dot(PRESETS["resnet18"])
    assert first == second
    declared = re.findall(r"^\s*(\S+) \[label=", first, flags=re.MULTILINE)
    assert all(re.fullmatch(r"n\d+", node_id) for node_id in declared)


@needs_dot
def test_module_names_with_quotes_brackets_and_backslashes_stay_plain_text():
    model = nn.Sequential()
    model.add_module('say "hi" <b>\\', nn.Linear(3, 4))
    model.add_module("graph", nn.ReLU())  # a DOT keyword
    dot = to_dot(model, (1, 3))
    assert '"say \\"hi\\" <b>\\\\\\nLinear 4"' in dot
    assert b"say &quot;hi&quot; &lt;b&gt;\\" in to_svg(dot)


def test_to_svg_says_to_install_graphviz_when_dot_is_missing(monkeypatch):
    monkeypatch.setattr(diagram.shutil, "which", lambda name: None)
    with pytest.raises(GraphvizMissing, match="apt-get install graphviz"):
        to_svg("digraph { a -> b }")


@needs_dot
def test_write_svg_writes_the_rendered_file(tmp_path):
    path = write_svg(to_dot(PRESETS["lenet"]), tmp_path / "lenet.svg")
    assert path.read_bytes().startswith(b"<?xml")
