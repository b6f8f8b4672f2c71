"""Spec or module -> Graphviz DOT: the chapter's architecture figures, drawn from the model.

Blocks are labelled boxes and every edge carries the shape flowing along it (C x H x W, no
batch), taken from `cnnlab.analysis.layers`. GoogLeNet's `Inception`, ResNet's `Residual` and
DenseNet's `DenseBlock` are opened up as in the figures of d2l 7.4, 7.6 and 7.7. Runs of
identical blocks can be collapsed into one box labelled "x N". `to_svg` renders with `dot`.
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import graphviz
import torch
from torch import nn

from cnnlab.analysis.layers import inspect_model, inspect_spec
from cnnlab.arch.models import build
from cnnlab.arch.models.densenet import DenseBlock
from cnnlab.arch.models.googlenet import Inception
from cnnlab.arch.models.resnet import Residual
from cnnlab.arch.specs import Spec
from cnnlab.errors import CnnlabError
from cnnlab.shapes import pair, shape_text

Shape = tuple[int, ...]

DIRECTIONS = ("TB", "LR", "BT", "RL")

# The blocks drawn opened up rather than as one box.
OPENED = (Inception, Residual, DenseBlock)

# Fill colours by what a box does, so the conv / pool / dense rhythm shows at a glance.
FILL = {
    "conv": "#dbe9f6",
    "pool": "#e8e8e8",
    "dense": "#fde3c8",
    "block": "#dff0d8",
    "merge": "#ffffff",
    "io": "#ffffff",
    "other": "#f7f7f7",
}
SKIP_COLOUR = "#c0392b"  # skip and concatenation edges, the idea each block adds


class GraphvizMissing(CnnlabError):
    """Graphviz's `dot` program is not installed, so DOT source cannot be rendered."""


def to_dot(
    model_or_spec: nn.Module | Spec,
    input_shape: tuple[int, ...] | None = None,
    *,
    collapse: bool = True,
    direction: str = "TB",
) -> str:
    """DOT source for a spec or a module.

    A spec is built on the meta device and fed (1, in_channels, input_size, input_size)
    unless `input_shape` says otherwise; a module needs `input_shape`, (N, C, H, W) or
    (C, H, W). Shapes come from `cnnlab.analysis.layers`, which raises InspectionError (a
    ValueError naming the layer) when the input does not fit the model.
    `collapse` draws a run of identical consecutive blocks as one box labelled "x N".
    `direction` is Graphviz's rankdir: "TB" (top to bottom), "LR", "BT" or "RL".
    Raises ValueError for a module without `input_shape` or an unknown direction.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction: {direction!r} is not one of {', '.join(DIRECTIONS)}")
    if isinstance(model_or_spec, Spec):
        spec = model_or_spec
        with torch.device("meta"):  # only shapes are needed: allocate nothing
            model = build(spec)
        # The spec's own size goes through the cached inspection the other pages share.
        table = inspect_spec(spec) if input_shape is None else inspect_model(model, input_shape)
    elif input_shape is None:
        raise ValueError("input_shape: a module needs one, e.g. (1, 1, 28, 28)")
    else:
        model = model_or_spec
        table = inspect_model(model, input_shape)
    drawer = _Drawer(dict(table.shapes), collapse)
    return drawer.draw(model, table.input_shape, direction)


def to_svg(dot_source: str) -> bytes:
    """SVG bytes rendered by Graphviz's `dot`. Raises GraphvizMissing when `dot` is not on
    PATH, graphviz.CalledProcessError when `dot` rejects the source."""
    missing = GraphvizMissing(
        "Graphviz's `dot` program was not found on PATH; install Debian's graphviz package "
        "(sudo apt-get install graphviz) to render diagrams"
    )
    if shutil.which("dot") is None:
        raise missing
    try:
        return graphviz.Source(dot_source).pipe(format="svg")
    except graphviz.ExecutableNotFound:  # removed between the check and the call
        raise missing from None


def write_svg(dot_source: str, path: str | Path) -> Path:
    """Render `dot_source` to an SVG file at `path`; returns the path. Raises like `to_svg`."""
    path = Path(path)
    path.write_bytes(to_svg(dot_source))
    return path


# ---------------------------------------------------------------------------------------
# One-line descriptions of modules


@dataclass(frozen=True)
class _Unit:
    """One step of a block as a reader counts it: a conv, pool or dense layer with the
    norm / activation right after it. `path` is its last leaf, whose output shape it has."""

    text: str
    path: str
    kind: str


def _window(name: str, kernel: int | tuple[int, ...], stride: int | tuple[int, ...] | None) -> str:
    """'conv3x3', 'maxpool3x3/2': kernel size, and the stride when it is not 1."""
    (kh, kw), (sh, sw) = pair(kernel), pair(stride if stride is not None else kernel)
    step = "" if (sh, sw) == (1, 1) else f"/{sh}" if sh == sw else f"/{sh}x{sw}"
    return f"{name}{kh}x{kw}{step}"


def _conv_text(conv: nn.Conv2d) -> str:
    return f"{_window('conv', conv.kernel_size, conv.stride)} {conv.out_channels}"


def _leaf(module: nn.Module) -> tuple[str, str | None]:
    """(kind, text) for a leaf layer. Kind "extra" attaches to the layer before it.

    ReLU gives no text: it is the chapter's default activation and would be on every box.
    """
    if isinstance(module, nn.Conv2d):
        return "conv", _conv_text(module)
    if isinstance(module, nn.Linear):
        return "dense", f"Linear {module.out_features}"
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        name = "maxpool" if isinstance(module, nn.MaxPool2d) else "avgpool"
        return "pool", _window(name, module.kernel_size, module.stride)
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        name = "avgpool" if isinstance(module, nn.AdaptiveAvgPool2d) else "maxpool"
        height, width = pair(module.output_size)
        if (height, width) == (1, 1):
            return "pool", f"global {name}"
        return "pool", f"adaptive {name} {height}x{width}"
    if isinstance(module, nn.Flatten):
        return "other", "flatten"
    if isinstance(module, nn.Dropout):
        return "other", f"dropout {module.p:g}"
    if isinstance(module, nn.ReLU):
        return "extra", None
    if isinstance(module, nn.Identity):  # a ResNet's norm slot with norm_kind "none"
        return "extra", None
    if isinstance(module, nn.GroupNorm):  # one group normalises over C, H, W: layer norm
        return "extra", "LN" if module.num_groups == 1 else f"GN{module.num_groups}"
    name = type(module).__name__
    if "Norm" in name:  # nn.BatchNorm2d and the book's from-scratch BatchNorm alike
        return "extra", "LN" if isinstance(module, nn.LayerNorm) else "BN" if "Batch" in name \
            else name
    if type(module).__module__ == "torch.nn.modules.activation":
        return "extra", name.lower()
    return "other", name


def _units(module: nn.Module, path: str) -> list[_Unit]:
    """The steps of `module` in order; leaf paths are prefixed with `path`."""
    units: list[_Unit] = []
    for leaf_path, leaf in module.named_modules(prefix=path):
        if next(leaf.children(), None) is not None:
            continue
        kind, text = _leaf(leaf)
        if text is None:
            continue
        if kind == "extra" and units:
            last = units[-1]
            units[-1] = _Unit(f"{last.text}, {text}", leaf_path, last.kind)
        else:
            units.append(_Unit(text, leaf_path, "other" if kind == "extra" else kind))
    return units


def _summary(units: list[_Unit]) -> str:
    """Units joined by commas, identical neighbours counted: '2 x conv3x3 256, maxpool2x2/2'."""
    parts: list[str] = []
    i = 0
    while i < len(units):
        j = i
        while j + 1 < len(units) and units[j + 1].text == units[i].text:
            j += 1
        text, count = units[i].text, j - i + 1
        if count > 1:
            text = f"{count} x ({text})" if "," in text else f"{count} x {text}"
        parts.append(text)
        i = j + 1
    return ", ".join(parts)


def _convs(module: nn.Module) -> list[nn.Conv2d]:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


def describe(module: nn.Module) -> str:
    """A one-line description: 'Inception 64 | 96>128 | 16>32 | 32', 'Residual 128, stride 2',
    'DenseBlock 4 x 32', '2 x conv3x3 256, maxpool2x2/2', 'Linear 4096, dropout 0.5'."""
    if isinstance(module, Inception):
        paths = (">".join(str(c.out_channels) for c in _convs(p)) for p in module.children())
        return "Inception " + " | ".join(paths)
    if isinstance(module, Residual):
        convs = [conv for conv, _, _ in module.main_path()]
        parts = [f"Residual {convs[-1].out_channels}"]
        if module.bottleneck:
            parts.append("bottleneck")
        stride = max(pair(c.stride)[0] for c in convs)
        if stride != 1:
            parts.append(f"stride {stride}")
        if module.preact:
            parts.append("pre-activation")
        return ", ".join(parts)
    if isinstance(module, DenseBlock):
        growth = _convs(module.net[-1])[-1].out_channels if len(module.net) else 0
        return f"DenseBlock {len(module.net)} x {growth}"
    return _summary(_units(module, "")) or type(module).__name__


def _box_kind(module: nn.Module) -> str:
    if isinstance(module, OPENED):
        return "block"
    kinds = [u.kind for u in _units(module, "")]
    return next((k for k in kinds if k in ("conv", "dense", "pool")), "other")


# ---------------------------------------------------------------------------------------
# Drawing


def _label(*lines: str, left: bool = False) -> str:
    """A multi-line label, centred or left-aligned; user text can neither escape the quotes
    nor turn into HTML or a Graphviz escape sequence (`graphviz.escape` doubles backslashes)."""
    escaped = [graphviz.escape(line) for line in lines if line]
    if left:  # "\\l" ends a left-justified line in Graphviz's escString
        return graphviz.nohtml("".join(line + "\\l" for line in escaped))
    return graphviz.nohtml("\\n".join(escaped))


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _run_name(paths: list[str]) -> str:
    """'resnet_block3.1-5' for siblings with numeric names, else 'first .. last'."""
    parent, _, first = paths[0].rpartition(".")
    last = paths[-1].rpartition(".")[2]
    same_parent = all(p.rpartition(".")[0] == parent for p in paths)
    if same_parent and first.isdigit() and last.isdigit():
        return _join(parent, f"{first}-{last}")
    return f"{paths[0]} .. {paths[-1]}"


class _Drawer:
    """Walks a module tree, adding nodes to (nested) Digraphs. Node ids are counters
    ("n0", "n1", ...), never module names, so they are stable and always valid DOT."""

    def __init__(self, shapes: dict[str, Shape], collapse: bool):
        self.shapes = shapes
        self.collapse = collapse
        self.ids = 0
        self.clusters = 0
        # Edges go on the root graph at the end: an edge written inside a cluster would
        # pull its endpoints into that cluster.
        self.edges: list[tuple[str, str, Shape | None, dict[str, str]]] = []

    def draw(self, model: nn.Module, input_shape: Shape, direction: str) -> str:
        g = graphviz.Digraph(name="cnnlab")
        g.attr(rankdir=direction, nodesep="0.25", ranksep="0.3", fontname="Helvetica")
        g.attr("node", shape="box", style="rounded,filled", fontname="Helvetica", fontsize="10",
               margin="0.12,0.04", height="0.3")
        g.attr("edge", fontname="Helvetica", fontsize="9", color="#555555", arrowsize="0.6")
        start = self.node(g, ("input",), "io", shape="ellipse")
        if isinstance(model, OPENED) or next(model.children(), None) is None:
            out, shape = self.module(g, "", model, start, input_shape)
        else:
            out, shape = self.sequence(g, self.children(model, ""), start, input_shape)
        self.edge(out, self.node(g, ("output",), "io", shape="ellipse"), shape)
        for tail, head, edge_shape, attrs in self.edges:
            if edge_shape:
                attrs = {"label": _label(shape_text(edge_shape)), **attrs}
            g.edge(tail, head, **attrs)
        return g.source

    # Primitives

    def node(self, g: graphviz.Digraph, lines: tuple[str, ...], kind: str, **attrs: str) -> str:
        node_id = f"n{self.ids}"
        self.ids += 1
        g.node(node_id, label=_label(*lines), fillcolor=FILL[kind], **attrs)
        return node_id

    def fork(self, g: graphviz.Digraph) -> str:
        """A dot where a block's input splits into its paths, as in the book's figures."""
        node_id = f"n{self.ids}"
        self.ids += 1
        g.node(node_id, label="", shape="point", width="0.06", **{"class": "split"})
        return node_id

    def edge(self, tail: str, head: str, shape: Shape | None, skip: bool = False) -> None:
        attrs = {"color": SKIP_COLOUR, "fontcolor": SKIP_COLOUR} if skip else {}
        self.edges.append((tail, head, shape, attrs))

    @contextmanager
    def cluster(self, g: graphviz.Digraph, lines: tuple[str, ...], style: str = "rounded",
                bgcolor: str = "#fbfbf8") -> Iterator[graphviz.Digraph]:
        """A framed subgraph ("cluster_" is how Graphviz knows to draw the frame)."""
        with g.subgraph(name=f"cluster_{self.clusters}") as c:
            self.clusters += 1
            c.attr(label=_label(*lines, left=True), style=style, bgcolor=bgcolor, color="#888888",
                   fontsize="10", labeljust="l")
            yield c

    def children(self, module: nn.Module, path: str) -> list[tuple[str, nn.Module]]:
        """Children that ran (a child the forward never calls has no shape to show)."""
        pairs = ((_join(path, name), child) for name, child in module.named_children())
        return [(p, child) for p, child in pairs if p in self.shapes]

    # Sequences and boxes

    def runs(self, items: list[tuple[str, nn.Module]]) -> Iterator[list[tuple[str, nn.Module]]]:
        """Consecutive items grouped when `collapse` and they are the same layers producing
        the same shape (so the same input too: each feeds the next)."""
        group: list[tuple[str, nn.Module]] = []
        for item in items:
            if group and self.collapse and self.same(group[-1], item):
                group.append(item)
                continue
            if group:
                yield group
            group = [item]
        if group:
            yield group

    def same(self, a: tuple[str, nn.Module], b: tuple[str, nn.Module]) -> bool:
        # A module's repr lists its layers with their hyperparameters, not its weights.
        return repr(a[1]) == repr(b[1]) and self.shapes.get(a[0]) == self.shapes.get(b[0])

    def sequence(self, g: graphviz.Digraph, items: list[tuple[str, nn.Module]], src: str,
                 shape: Shape | None) -> tuple[str, Shape | None]:
        for run in self.runs(items):
            if len(run) == 1:
                src, shape = self.module(g, *run[0], src, shape)
                continue
            paths = [p for p, _ in run]
            first = run[0][1]
            box = self.node(g, (_run_name(paths), f"{describe(first)} x{len(run)}"),
                            _box_kind(first), **{"class": "repeated"})
            self.edge(src, box, shape)
            src, shape = box, self.shapes.get(paths[-1])
        return src, shape

    def module(self, g: graphviz.Digraph, path: str, module: nn.Module, src: str,
               shape: Shape | None) -> tuple[str, Shape | None]:
        """Draw `module` after node `src`; returns its last node and output shape."""
        if isinstance(module, Inception):
            return self.inception(g, path, module, src, shape)
        if isinstance(module, Residual):
            return self.residual(g, path, module, src, shape)
        if isinstance(module, DenseBlock):
            return self.dense_block(g, path, module, src, shape)
        if any(isinstance(m, OPENED) for m in module.modules()):
            return self.stage(g, path, module, src, shape)
        name, text = path or type(module).__name__, describe(module)
        # "flatten" needs no second line saying "flatten", nor "global_avg_pool" one more.
        lines = (name,) if text.replace(" ", "_") == name.rpartition(".")[2] else (name, text)
        box = self.node(g, lines, _box_kind(module))
        self.edge(src, box, shape)
        return box, self.shapes.get(path)

    def stage(self, g: graphviz.Digraph, path: str, module: nn.Module, src: str,
              shape: Shape | None) -> tuple[str, Shape | None]:
        """A container of opened blocks (GoogLeNet's b3, a ResNet stage): a dashed frame."""
        with self.cluster(g, (path,), "dashed,rounded", bgcolor="#ffffff") as c:
            return self.sequence(c, self.children(module, path), src, shape)

    # The chapter's blocks, opened up

    def inception(self, g: graphviz.Digraph, path: str, module: Inception, src: str,
                  shape: Shape | None) -> tuple[str, Shape | None]:
        """Four parallel paths from one input, concatenated on channels (d2l fig. 7.4.1)."""
        with self.cluster(g, (path, describe(module)), bgcolor="#fbfbf4") as c:
            fork = self.fork(c)
            self.edge(src, fork, shape)
            ends, firsts = [], []
            for branch_path, branch in self.children(module, path):
                prev, prev_shape = fork, None
                for unit in _units(branch, branch_path):
                    step = self.node(c, (unit.text,), unit.kind)
                    self.edge(prev, step, prev_shape)
                    if prev == fork:
                        firsts.append(step)
                    prev, prev_shape = step, self.shapes.get(unit.path)
                ends.append((prev, prev_shape))
            # The paths start side by side, as in d2l fig. 7.4.1, even where one is shorter.
            with c.subgraph() as row:
                row.attr(rank="same")
                for step in firsts:
                    row.node(step, **{"class": "inception-path"})
            concat = self.node(c, ("concat",), "merge", shape="ellipse", **{"class": "concat"})
            for end, end_shape in ends:
                self.edge(end, concat, end_shape)
        return concat, self.shapes.get(path)

    def residual(self, g: graphviz.Digraph, path: str, module: Residual, src: str,
                 shape: Shape | None) -> tuple[str, Shape | None]:
        """Main path and skip into a "+" node, then ReLU (d2l 7.6.2). The ReLUs are
        shown here because where they sit relative to the addition is the point."""
        with self.cluster(g, (path, describe(module)), bgcolor="#f6f9fc") as c:
            fork = self.fork(c)
            self.edge(src, fork, shape)
            prev, prev_shape = fork, None
            paths = {m: p for p, m in module.named_modules(prefix=path)}
            layers = module.main_path()
            for i, (conv, norm, _) in enumerate(layers, start=1):
                text, norm_text = _conv_text(conv), _leaf(norm)[1]  # None: no norm (Identity)
                if module.preact:
                    parts = [norm_text, "ReLU", text]
                else:
                    parts = [text, norm_text] + (["ReLU"] if i < len(layers) else [])
                parts = [part for part in parts if part]
                step = self.node(c, (", ".join(parts),), "conv")
                self.edge(prev, step, prev_shape)
                prev, prev_shape = step, self.shapes.get(paths[conv])
            add = self.node(c, ("+",), "merge", shape="circle", width="0.3",
                            **{"class": "add"})
            self.edge(prev, add, prev_shape)
            if module.shortcut is not None:
                shortcut = self.node(c, (_conv_text(module.shortcut),), "conv",
                                     **{"class": "shortcut"})
                self.edge(fork, shortcut, None, skip=True)
                self.edge(shortcut, add, self.shapes.get(_join(path, "shortcut")), skip=True)
            else:
                self.edge(fork, add, None, skip=True)
            out = add
            if module.relu_out is not None:
                out = self.node(c, ("ReLU",), "other")
                self.edge(add, out, self.shapes.get(path))
        return out, self.shapes.get(path)

    def dense_block(self, g: graphviz.Digraph, path: str, module: DenseBlock, src: str,
                    shape: Shape | None) -> tuple[str, Shape | None]:
        """Each conv block's output concatenated to its input on channels (d2l 7.7.2); the
        frame's label shows the channels growing."""
        blocks = self.children(module.net, _join(path, "net"))
        concat_shapes: list[Shape | None] = []
        current = shape
        for block_path, _ in blocks:
            out = self.shapes.get(block_path)
            # The concatenation is not a module, so its shape is the two inputs' channels added.
            current = (current[0] + out[0], *out[1:]) if current and out else None
            concat_shapes.append(current)
        growth = " -> ".join(str(s[0]) for s in [shape, *concat_shapes] if s)
        with self.cluster(g, (path, describe(module), growth), bgcolor="#f7fbf4") as c:
            prev = self.fork(c)
            self.edge(src, prev, shape)
            prev_shape: Shape | None = None
            for (block_path, block), concat_shape in zip(blocks, concat_shapes):
                step = self.node(c, (describe(block),), "conv")
                self.edge(prev, step, prev_shape)
                concat = self.node(c, ("concat",), "merge", shape="ellipse", **{"class": "concat"})
                self.edge(step, concat, self.shapes.get(block_path))
                self.edge(prev, concat, None, skip=True)
                prev, prev_shape = concat, concat_shape
        return prev, self.shapes.get(path, prev_shape)
