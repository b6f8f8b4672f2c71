"""What a predict card reveals: the library's value for a question, and how far a guess was.

A `Question` names a spec and a measure ("params", "flops", "train_memory", ...); `answer`
computes it from the layer table on the meta device, with the table rows it comes from, so a
student sees where the number lives. `reveal` compares a guess: numbers count as right within
the question's tolerance (10% unless it says otherwise), names must match exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cnnlab.analysis.layers import BlockRow, LayerTable, inspect_spec
from cnnlab.analysis.smallest_input import smallest_input
from cnnlab.arch.specs import Spec
from cnnlab.shapes import shape_text
from cnnlab.views.text import MIB

TOLERANCE = 0.10  # within 10% of the library's value counts as right


@dataclass(frozen=True)
class Question:
    """One thing to predict about `spec`. `measure` is a key of MEASURES; `batch_size` and
    `optimizer` are for the memory measures, `block` for the receptive field, `other` for
    "params_saved" (the same network with one change)."""

    prompt: str
    spec: Spec
    measure: str
    batch_size: int = 1
    optimizer: str = "sgd"
    block: str = ""
    other: Spec | None = None
    tolerance: float = TOLERANCE

    @property
    def unit(self) -> str:
        return MEASURES[self.measure].unit

    @property
    def label(self) -> str:
        """The prompt with its unit, unless the prompt names it already ("FLOPs per ...")."""
        if self.is_choice or self.unit.split()[0].lower() in self.prompt.lower():
            return self.prompt
        return f"{self.prompt} ({self.unit})"

    @property
    def is_choice(self) -> bool:
        """True when the answer is a name picked from `choices`, not a number."""
        return MEASURES[self.measure].unit == "block"


@dataclass(frozen=True)
class Answer:
    """The library's value, its unit, and the rows of the layer table it comes from."""

    value: float | str
    unit: str
    rows: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class Reveal:
    """A guess next to the answer. `error` is |guess - answer| / |answer| (None for names)."""

    answer: Answer
    guess: float | str
    error: float | None
    right: bool


@dataclass(frozen=True)
class Measure:
    unit: str
    compute: Callable[[Question], Answer]


# --- the rows an answer shows ------------------------------------------------------------------


def block_row(block: BlockRow) -> dict[str, Any]:
    return {"block": block.name, "type": block.type, "output": shape_text(block.output_shape),
            "params": block.params, "FLOPs": block.flops,
            "receptive field": block.receptive_field}


def block_rows(table: LayerTable) -> tuple[dict[str, Any], ...]:
    return tuple(block_row(b) for b in table.blocks)


# --- the measures ------------------------------------------------------------------------------


def _params(q: Question) -> Answer:
    table = inspect_spec(q.spec)
    return Answer(table.total_params, "parameters", block_rows(table))


def _flops(q: Question) -> Answer:
    table = inspect_spec(q.spec)
    return Answer(table.total_flops, "FLOPs per image", block_rows(table))


def _macs(q: Question) -> Answer:
    table = inspect_spec(q.spec)
    return Answer(table.total_macs, "multiply-adds per image", block_rows(table))


def _train_memory(q: Question) -> Answer:
    """Training memory in MiB at the question's batch size and optimizer (float32)."""
    memory = inspect_spec(q.spec).memory(q.batch_size, q.optimizer)
    rows = tuple({"part": part, "bytes": size} for part, size in memory.to_dict().items())
    return Answer(memory.total / MIB, "MiB", rows)


def _inference_memory(q: Question) -> Answer:
    """Memory to predict `batch_size` images, in MiB: weights plus the widest pair of
    neighbouring activations (LayerTable.inference_memory)."""
    table = inspect_spec(q.spec)
    total = table.inference_memory(q.batch_size)
    weights = (table.total_params + table.buffer_elements) * 4
    rows = ({"part": "weights and buffers", "bytes": weights},
            {"part": "two largest neighbouring activations", "bytes": total - weights})
    return Answer(total / MIB, "MiB", rows)


def _smallest_input(q: Question) -> Answer:
    """The smallest square input the network accepts, and its blocks' shapes at that size."""
    size = smallest_input(q.spec)
    if size is None:
        raise ValueError(f"{q.spec.family} does not work at any input size")
    return Answer(size, "pixels", block_rows(inspect_spec(q.spec.replace(input_size=size))))


def _largest(key: str) -> Callable[[Question], Answer]:
    def compute(q: Question) -> Answer:
        ranked = sorted(inspect_spec(q.spec).blocks, key=lambda b: getattr(b, key), reverse=True)
        return Answer(ranked[0].name, "block", tuple(block_row(b) for b in ranked[:3]))
    return compute


def _conv_layers(q: Question) -> Answer:
    convs = [r for r in inspect_spec(q.spec).rows if r.kind == "conv"]
    rows = tuple({"layer": r.path, "block": r.block, "output": shape_text(r.output_shape),
                  "params": r.params} for r in convs)
    return Answer(len(convs), "convolution layers", rows)


def _dense_share(q: Question) -> Answer:
    """The share of parameters in fully connected layers, in percent."""
    table = inspect_spec(q.spec)
    split = table.conv_fc_split()
    rows = ({"layers": "convolutions", "params": split.conv_params, "FLOPs": split.conv_flops},
            {"layers": "fully connected", "params": split.fc_params, "FLOPs": split.fc_flops})
    return Answer(100 * split.fc_params / table.total_params, "% of parameters", rows)


def _receptive_field(q: Question) -> Answer:
    blocks = inspect_spec(q.spec).blocks
    names = [b.name for b in blocks]
    if q.block not in names:
        raise ValueError(f"no block {q.block!r}; the blocks are {', '.join(names)}")
    upto = blocks[:names.index(q.block) + 1]
    return Answer(upto[-1].receptive_field, "pixels", tuple(block_row(b) for b in upto))


def _params_saved(q: Question) -> Answer:
    """Parameters `spec` has more than `other`, and the blocks where they differ."""
    if q.other is None:
        raise ValueError("params_saved needs the other spec")
    mine, theirs = inspect_spec(q.spec), inspect_spec(q.other)
    theirs_by_name = {b.name: b.params for b in theirs.blocks}
    rows = tuple({**block_row(b), "params without": theirs_by_name.get(b.name, 0)}
                 for b in mine.blocks if b.params != theirs_by_name.get(b.name, 0))
    return Answer(mine.total_params - theirs.total_params, "parameters", rows)


def _flops_per_byte(q: Question) -> Answer:
    """Arithmetic intensity of one image's forward pass: FLOPs per byte of float32 weights,
    each weight read once (a roofline's x-axis at batch 1)."""
    table = inspect_spec(q.spec)
    weight_bytes = (table.total_params + table.buffer_elements) * 4
    rows = ({"quantity": "FLOPs per image", "value": table.total_flops},
            {"quantity": "bytes of weights read", "value": weight_bytes})
    return Answer(table.total_flops / weight_bytes, "FLOPs per byte", rows)


MEASURES: dict[str, Measure] = {
    "params": Measure("parameters", _params),
    "flops": Measure("FLOPs per image", _flops),
    "macs": Measure("multiply-adds per image", _macs),
    "train_memory": Measure("MiB", _train_memory),
    "inference_memory": Measure("MiB", _inference_memory),
    "smallest_input": Measure("pixels", _smallest_input),
    "most_params": Measure("block", _largest("params")),
    "most_flops": Measure("block", _largest("flops")),
    "conv_layers": Measure("convolution layers", _conv_layers),
    "dense_share": Measure("% of parameters", _dense_share),
    "receptive_field": Measure("pixels", _receptive_field),
    "params_saved": Measure("parameters", _params_saved),
    "flops_per_byte": Measure("FLOPs per byte", _flops_per_byte),
}


# --- asking and revealing ----------------------------------------------------------------------


def answer(question: Question) -> Answer:
    """The library's value for `question`. Raises KeyError for an unknown measure."""
    return MEASURES[question.measure].compute(question)


def choices(question: Question) -> list[str]:
    """The names a student picks from for a "which block" question: the network's blocks."""
    return [b.name for b in inspect_spec(question.spec).blocks]


def relative_error(guess: float, value: float) -> float:
    """|guess - value| / |value|; a guess of 0 for 0 is exact."""
    if value == 0:
        return 0.0 if guess == 0 else float("inf")
    return abs(guess - value) / abs(value)


def reveal(question: Question, guess: float | str) -> Reveal:
    """The answer next to `guess`: a number within the tolerance, or the exact block name,
    counts as right. Raises ValueError for a guess of the wrong kind."""
    found = answer(question)
    if question.is_choice:
        if not isinstance(guess, str):
            raise ValueError("this question asks for a block's name")
        return Reveal(found, guess, None, guess == found.value)
    if isinstance(guess, str) or isinstance(guess, bool):
        raise ValueError("this question asks for a number")
    error = relative_error(float(guess), float(found.value))
    return Reveal(found, guess, error, error <= question.tolerance)


def value_text(value: float | str) -> str:
    """An answer as a page shows it: 1,992,166; 1,564.1; 10.03; a block's name as it is."""
    if isinstance(value, str):
        return value
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.3g}"


def verdict(shown: Reveal, tolerance: float) -> str:
    """One sentence on the guess: right or not, and by how much."""
    value = f"{value_text(shown.answer.value)} {shown.answer.unit}"
    if shown.error is None:
        return f"{'Right' if shown.right else 'Not quite'}: it is {value}."
    off = "exact" if shown.error == 0 else f"off by {shown.error:.1%}"
    rule = "exactly" if tolerance == 0 else f"within {tolerance:.0%}"
    return (f"{'Right' if shown.right else 'Not quite'}: it is {value}; your guess is {off} "
            f"({rule} counts as right).")
