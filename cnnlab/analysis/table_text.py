"""The layer table as aligned text (`cnnlab summary`), and byte counts for people."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cnnlab.shapes import shape_text

if TYPE_CHECKING:  # only for annotations: layers imports this module to format its tables
    from cnnlab.analysis.layers import Counts, LayerTable

_HEADER = ("Layer", "Type", "Output", "Params", "FLOPs", "MACs", "Other ops", "RF", "Jump",
           "Act. bytes")


def human_bytes(count: int | float) -> str:
    """1536 -> '1.5 KiB' (binary units, as memory is sized)."""
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    step = 0
    while abs(count) >= 1024 and step < len(units) - 1:
        count, step = count / 1024, step + 1
    return f"{count:.0f} B" if step == 0 else f"{count:.1f} {units[step]}"


def format_table(table: LayerTable, batch_size: int, optimizer: str) -> str:
    """Aligned text: each block's total line, its layers indented below, then the totals
    and the memory estimate for training at `batch_size` with `optimizer`."""
    lines = _lines(table)
    widths = [max(len(cells[i]) for cells in [_HEADER] + [c for _, c in lines])
              for i in range(len(_HEADER))]

    def render(cells: tuple[str, ...]) -> str:
        left = [c.ljust(w) for c, w in zip(cells[:3], widths)]  # names and shapes
        right = [c.rjust(w) for c, w in zip(cells[3:], widths[3:])]  # numbers
        return "  ".join(left + right).rstrip()

    rule = "-" * len(render(_HEADER))
    body = [render(_HEADER), rule]
    for index, (is_block, cells) in enumerate(lines):
        if is_block and index > 0 and not lines[index - 1][0]:
            body.append("")  # a blank line after each expanded block
        body.append(render(cells))
    return "\n".join(body + [rule] + _totals_lines(table, batch_size, optimizer))


def _lines(table: LayerTable) -> list[tuple[bool, tuple[str, ...]]]:
    """(is a block line, cells): each block's totals, then its layers indented under it."""
    lines: list[tuple[bool, tuple[str, ...]]] = []
    for block in table.blocks:
        lines.append((True, _cells(block.name or "(model)", block)))
        members = [r for r in table.rows if r.block == block.name]
        if len(members) > 1 or members[0].path != block.name:  # not a lone top-level layer
            lines += [(False, _cells("  " + r.path, r)) for r in members]
    return lines


def _cells(name: str, item: Counts) -> tuple[str, ...]:
    return (name, item.type, shape_text(item.output_shape, empty="-"), f"{item.params:,}",
            f"{item.flops:,}", f"{item.macs:,}", f"{item.other_ops:,}", str(item.receptive_field), str(item.jump),
            f"{item.activation_bytes:,}")


def _totals_lines(table: LayerTable, batch_size: int, optimizer: str) -> list[str]:
    memory = table.memory(batch_size, optimizer)
    split = table.conv_fc_split()
    return [
        f"Input {shape_text(table.input_shape, empty='-')} -> "
        f"output {shape_text(table.output_shape, empty='-')}",
        f"Params: {table.total_params:,} ({table.trainable_params:,} trainable); "
        f"conv {split.conv_params:,}, fc {split.fc_params:,}",
        f"FLOPs per image: {table.total_flops:,} (conv {split.conv_flops:,}, "
        f"fc {split.fc_flops:,}; 2 per multiply-add)",
        f"MACs per image (multiply-adds, as torchinfo counts): {table.total_macs:,}",
        f"Other ops per image (BN, activations, pooling, additions, concatenations, biases): "
        f"{table.total_other_ops:,}",
        f"Training memory at batch {batch_size} with {optimizer}: "
        f"weights {human_bytes(memory.weights)}, gradients {human_bytes(memory.gradients)}, "
        f"optimizer {human_bytes(memory.optimizer_state)}, "
        f"activations {human_bytes(memory.activations)}; total {human_bytes(memory.total)}",
        f"Inference memory at batch 1: {human_bytes(table.inference_memory(1))}",
    ]
