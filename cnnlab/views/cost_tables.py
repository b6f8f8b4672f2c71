"""What a network costs, as the Architecture page's totals and tables: the convolution / dense
split, the training memory, and one row per block or per layer. Columns of plain values (a DataFrame takes
them), computed from a `LayerTable`; no Streamlit inside.
"""

from __future__ import annotations

from typing import Any

from cnnlab.analysis.layers import LayerTable, inspect_spec
from cnnlab.analysis.smallest_input import smallest_input
from cnnlab.arch.presets import PRESETS
from cnnlab.arch.specs import Spec
from cnnlab.analysis.table_text import human_bytes
from cnnlab.shapes import shape_text
from cnnlab.views.text import short

Columns = dict[str, list[Any]]

# The Architecture page's memory choices: name -> label. "momentum" keeps one buffer per weight,
# Adam two.
OPTIMIZERS = {"sgd": "SGD", "momentum": "SGD with momentum", "adam": "Adam"}
# The largest whole number a table column holds exactly: the browser's numbers are doubles, and
# a value past 2**64 cannot even become an Arrow column (a ResNet of 61 stages sees 2**63 px).
EXACT_LIMIT = 2**53


def share(part: int, whole: int) -> float:
    """part / whole, 0 for an empty whole."""
    return part / whole if whole else 0.0


def counts(values: list[int]) -> list[int] | list[str]:
    """A column of whole numbers, as text ("9,223,372,036,854,775,807") when one is too large
    to be a number column (EXACT_LIMIT): receptive fields and jumps double with every stride."""
    if all(abs(v) < EXACT_LIMIT for v in values):
        return values
    return [f"{v:,}" for v in values]


def conv_fc_split(table: LayerTable) -> Columns:
    """Parameters and FLOPs of the convolutions, the dense layers and the rest (batch norm):
    the chapter's point that dense layers hold AlexNet's and VGG's parameters while the
    convolutions do the arithmetic (d2l 7.2, exercise 1)."""
    split = table.conv_fc_split()
    other = table.total_params - split.conv_params - split.fc_params
    params = (split.conv_params, split.fc_params, other)
    flops = (split.conv_flops, split.fc_flops, 0)
    return {
        "layers": ["convolutions", "fully connected", "other (batch norm)"],
        "params": list(params),
        "of params": [share(p, table.total_params) for p in params],
        "FLOPs": list(flops),
        "MACs": [f // 2 for f in flops],
        "of FLOPs": [share(f, table.total_flops) for f in flops],
    }


def training_memory(table: LayerTable, batch_size: int, optimizer: str) -> Columns:
    """float32 memory to train at `batch_size` with `optimizer` (a key of OPTIMIZERS), part by
    part, then the total."""
    memory = table.memory(batch_size, optimizer)
    parts = {"weights": memory.weights, "gradients": memory.gradients,
             "optimizer state": memory.optimizer_state, "activations": memory.activations}
    return {
        "training": [*parts, "total"],
        "memory": [human_bytes(b) for b in parts.values()] + [human_bytes(memory.total)],
        "share": [share(b, memory.total) for b in parts.values()] + [1.0],
    }


def block_rows(table: LayerTable) -> Columns:
    """One row per top-level block, with its share of the parameters and FLOPs."""
    blocks = table.blocks
    return {
        "block": [b.name for b in blocks], "type": [b.type for b in blocks],
        "output": [shape_text(b.output_shape) for b in blocks],
        "params": [b.params for b in blocks],
        "of params": [share(b.params, table.total_params) for b in blocks],
        "FLOPs": [b.flops for b in blocks],
        "MACs": [b.macs for b in blocks],
        "of FLOPs": [share(b.flops, table.total_flops) for b in blocks],
        "other ops": [b.other_ops for b in blocks],
        "activations": [human_bytes(b.activation_bytes) for b in blocks],
        "receptive field": counts([b.receptive_field for b in blocks]),
    }


def layer_rows(table: LayerTable) -> Columns:
    """One row per layer, with its receptive field and the jump between its outputs."""
    rows = table.rows
    return {
        "layer": [r.path for r in rows], "type": [r.type for r in rows],
        "output": [shape_text(r.output_shape) for r in rows],
        "params": [r.params for r in rows], "FLOPs": [r.flops for r in rows],
        "MACs": [r.macs for r in rows],
        "other ops": [r.other_ops for r in rows],
        "activations": [human_bytes(r.activation_bytes) for r in rows],
        "receptive field": counts([r.receptive_field for r in rows]),
        "jump": counts([r.jump for r in rows]),
    }


def totals(table: LayerTable, least: int | None) -> list[tuple[str, str, str | None]]:
    """The totals above the tables, as (label, value, help): table_totals, then the smallest
    input `least` (None: none runs)."""
    return [*table_totals(table), smallest_input_total(least)]


def table_totals(table: LayerTable) -> list[tuple[str, str, str | None]]:
    """The totals the layer table gives: parameters, FLOPs, MACs, the other ops, input and
    output shapes."""
    return [
        ("Parameters", f"{table.total_params:,}", None),
        ("FLOPs per image", short(table.total_flops),
         f"{table.total_flops:,} (2 per multiply-add; convolutions and dense layers only)"),
        ("MACs per image", short(table.total_macs),
         f"{table.total_macs:,} multiply-adds (FLOPs / 2), as torchinfo and most papers count "
         "them"),
        ("Other ops per image", short(table.total_other_ops),
         f"{table.total_other_ops:,}: BN, activations, pooling, additions, concatenations and "
         "biases, counted from their output sizes"),
        ("Input → output", f"{shape_text(table.input_shape)} → {shape_text(table.output_shape)}",
         None),
    ]


def smallest_input_total(least: int | None) -> tuple[str, str, str | None]:
    """The last total: the smallest input the network runs at (a search of its own, see
    cnnlab.analysis.smallest_input), None when none does."""
    return ("Smallest input", "none" if least is None else f"{least} px",
            "The smallest height = width this network runs at (exercise 7.4.2). A warning under "
            "the input size says when the maps reach 1x1 before the last convolution.")


THIS_MODEL = "this model"  # the edited spec, beside the presets in the side-by-side table
# Exercise 7.4.3 compares AlexNet, VGG, NiN and GoogLeNet: the side-by-side table's first choice.
SIDE_BY_SIDE = (THIS_MODEL, "alexnet", "vgg11", "nin", "googlenet")


def side_by_side_specs(chosen: list[str], spec: Spec) -> dict[str, Spec]:
    """The specs the side-by-side table compares: each chosen preset, and `spec` (the page's
    edited one) for THIS_MODEL."""
    return {name: spec if name == THIS_MODEL else PRESETS[name] for name in chosen}


def compare_specs(specs: dict[str, Spec], batch_size: int = 128) -> Columns:
    """One row per named spec, costs only, no training: parameters, FLOPs and MACs per image,
    float32 memory to train at `batch_size` with plain SGD and to predict one image, and the
    smallest input the network runs at (exercise 7.4.3 compares AlexNet, VGG, NiN and
    GoogLeNet this way). Check the specs first (`cnnlab.arch.checks.check`)."""
    tables = {name: inspect_spec(spec) for name, spec in specs.items()}
    return {
        "model": list(tables),
        "input": [shape_text(t.input_shape) for t in tables.values()],
        "params": [t.total_params for t in tables.values()],
        "FLOPs": [t.total_flops for t in tables.values()],
        "MACs": [t.total_macs for t in tables.values()],
        "training memory": [human_bytes(t.memory(batch_size, "sgd").total)
                            for t in tables.values()],
        "inference memory": [human_bytes(t.inference_memory(1)) for t in tables.values()],
        "smallest input": [smallest_input(spec) for spec in specs.values()],
    }


def export_name(preset: str, edited: bool) -> str:
    """The file name stem of an export: 'vgg16', or 'vgg16_edited' for an edited preset."""
    return (f"{preset}-edited" if edited else preset).replace("-", "_")
