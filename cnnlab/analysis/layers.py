"""A layer-by-layer summary of any CNN, computed on the `meta` device so nothing is allocated.

`inspect_model(model, (N, C, H, W))` runs one forward pass on meta tensors and records, for
every leaf layer call in execution order, its output shape, parameters, FLOPs, the other ops,
activation size and receptive field (`LayerTable`); `cnnlab.analysis.recorder` says how each
is counted. Which input sizes are too small is `cnnlab.analysis.smallest_input`.

MACs (multiply-adds, what torchinfo and the seeds count) are FLOPs / 2: FLOPs count only the
multiply-adds of convolutions and matrix products (2 each), so a layer without them, BN,
pooling, ReLU, an addition, has 0 MACs; its work is in `other_ops`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import nn

from cnnlab.analysis.meta import (
    ShapeOnly,
    meta_input,
    on_meta_in_eval,
    own_parameters,
    to_meta,
    with_batch,
)
from cnnlab.analysis.recorder import Field, Recorder, first_tensor
from cnnlab.analysis.table_text import format_table
from cnnlab.arch.models import build
from cnnlab.arch.specs import Spec
from cnnlab.errors import CnnlabError
from cnnlab.shapes import shape_text

# Extra state per trainable parameter, in parameter-sized tensors (momentum buffer; Adam's m, v).
OPTIMIZER_STATE_COPIES = {"sgd": 0, "momentum": 1, "adam": 2, "adamw": 2}
# Layers whose output is a view of their input: no new activation memory.
VIEW_LAYERS = {"Flatten", "Unflatten", "Identity"}


# --- public data ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Counts:
    """What a layer call or a block costs and sees, per image: its output, parameters, FLOPs,
    the other ops, activation bytes and receptive field (with its jump). The shared contract
    of `LayerRow` and `BlockRow`, so the table text and the pages treat them alike."""

    output_shape: tuple[int, ...]
    params: int
    flops: int
    other_ops: int
    activation_bytes: int
    receptive_field: int
    jump: int

    @property
    def macs(self) -> int:
        """Multiply-adds per image (conv and dense layers; 0 elsewhere): FLOPs / 2."""
        return self.flops // 2


@dataclass(frozen=True)
class LayerRow(Counts):
    """One call of a leaf layer (or the container ops of a Residual/Inception/DenseBlock).

    `params` counts a parameter at its first call only, so the column sums to the parameters
    that ran. `kind` is "conv", "fc" or "other".
    """

    path: str
    type: str
    block: str
    depth: int
    kind: str = "other"


@dataclass(frozen=True)
class BlockRow(Counts):
    """A top-level child of the model: its rows summed, its output, its widest field."""

    name: str
    type: str


@dataclass(frozen=True)
class Memory:
    """Training memory in bytes, split by what holds it."""

    weights: int
    gradients: int
    optimizer_state: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer_state + self.activations

    def to_dict(self) -> dict[str, int]:
        return {"weights": self.weights, "gradients": self.gradients,
                "optimizer_state": self.optimizer_state, "activations": self.activations,
                "total": self.total}


class ConvFcSplit(NamedTuple):
    """Parameters and FLOPs (per image) in convolution vs fully connected (Linear) layers."""

    conv_params: int
    conv_flops: int
    fc_params: int
    fc_flops: int


class Failure(NamedTuple):
    """Where a forward pass breaks: the innermost module entered but not left, and why."""

    layer: str
    message: str


class InspectionError(CnnlabError, ValueError):
    """The forward pass failed; `layer` names the module where it broke."""

    def __init__(self, failure: Failure, input_shape: tuple[int, ...]):
        where = f"layer '{failure.layer}'" if failure.layer else "the model's own forward"
        size = shape_text(input_shape[1:])
        super().__init__(f"the forward pass fails at {where} for input {size}: {failure.message}")
        self.layer, self.message = failure.layer, failure.message


@dataclass(frozen=True)
class LayerTable:
    """The summary of one model at one input size. Shapes exclude the batch dimension.

    `shapes` maps every module path that ran (containers included, the root as "") to its
    output shape. Tables from `inspect_spec` are cached and shared: do not mutate `shapes`.
    """

    rows: tuple[LayerRow, ...]
    blocks: tuple[BlockRow, ...]
    shapes: dict[str, tuple[int, ...]]
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    batch_size: int
    total_params: int
    trainable_params: int
    buffer_elements: int
    # What autograd keeps for the backward pass, per image, in bytes (`saved_for_backward`):
    # the total and by the type of the layer that saved it first; None when the training-mode
    # pass failed (the memory estimate then counts every layer's output once).
    saved_bytes: int | None = None
    saved_by_type: dict[str, int] | None = None

    @property
    def total_flops(self) -> int:
        return sum(r.flops for r in self.rows)

    @property
    def total_macs(self) -> int:
        """Multiply-adds per image: total_flops / 2 (torchinfo's "Mult-Adds")."""
        return self.total_flops // 2

    @property
    def total_other_ops(self) -> int:
        return sum(r.other_ops for r in self.rows)

    def conv_fc_split(self) -> ConvFcSplit:
        """Params and FLOPs of Conv layers vs Linear layers (d2l 7.2 exercise 1)."""
        conv = [r for r in self.rows if r.kind == "conv"]
        fc = [r for r in self.rows if r.kind == "fc"]
        return ConvFcSplit(sum(r.params for r in conv), sum(r.flops for r in conv),
                           sum(r.params for r in fc), sum(r.flops for r in fc))

    def memory(self, batch_size: int = 256, optimizer: str = "sgd",
               dtype_bytes: int = 4) -> Memory:
        """Training memory estimate for `batch_size` images; `optimizer` is "sgd",
        "momentum" (SGD with momentum) or "adam". Raises ValueError for another optimizer.

        Weights include buffers (BN running statistics). Activations are what autograd keeps
        for the backward pass (`saved_bytes`, found by a training-mode pass on meta): a conv,
        dense or BN layer keeps its input, a ReLU or sigmoid its output, max pooling its input
        and int64 indices, dropout its mask (float32 on the CPU), an addition or concatenation
        nothing; a tensor kept by two layers (an in-place ReLU's output is its input) counts
        once. That is 0.6x (NiN) to 0.95x (GoogLeNet) of every layer's output counted once,
        which is the figure when the training-mode pass fails. `dtype_bytes` scales that
        fallback and the weights; the saved bytes are what the model's own dtype keeps.
        """
        if optimizer not in OPTIMIZER_STATE_COPIES:
            raise ValueError(f"optimizer: unknown {optimizer!r}; choose one of: "
                             f"{', '.join(OPTIMIZER_STATE_COPIES)}")
        if self.saved_bytes is not None:
            activations = self.saved_bytes * batch_size
        else:
            activations = self.output_elements * batch_size * dtype_bytes
        return Memory(
            weights=(self.total_params + self.buffer_elements) * dtype_bytes,
            gradients=self.trainable_params * dtype_bytes,
            optimizer_state=OPTIMIZER_STATE_COPIES[optimizer] * self.trainable_params * dtype_bytes,
            activations=activations,
        )

    @property
    def output_elements(self) -> int:
        """Every layer's output once, per image (views such as Flatten skipped; a DenseBlock's
        concatenations are rows): the activation count before autograd's own rules."""
        return sum(math.prod(r.output_shape) for r in self.rows if r.type not in VIEW_LAYERS)

    def widest_pair(self, batch_size: int = 1, dtype_bytes: int = 4) -> int:
        """Bytes of the largest two consecutive activations (the input included)."""
        sizes = [math.prod(self.input_shape)] + [math.prod(r.output_shape) for r in self.rows]
        widest = max((a + b for a, b in zip(sizes, sizes[1:])), default=sizes[0])
        return widest * batch_size * dtype_bytes

    def inference_memory(self, batch_size: int = 1, dtype_bytes: int = 4) -> int:
        """Bytes to predict: weights (and buffers) plus the largest two consecutive activations
        (a layer's input and output are alive together; earlier ones can be freed)."""
        weights = (self.total_params + self.buffer_elements) * dtype_bytes
        return weights + self.widest_pair(batch_size, dtype_bytes)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON: totals, one dict per layer and per block, memory at batch 256."""
        split = self.conv_fc_split()
        return {
            "input_shape": list(self.input_shape),
            "output_shape": list(self.output_shape),
            "total_params": self.total_params,
            "trainable_params": self.trainable_params,
            "total_flops": self.total_flops,
            "total_macs": self.total_macs,
            "total_other_ops": self.total_other_ops,
            "layers": [_row_dict(r) for r in self.rows],
            "blocks": [_block_dict(b) for b in self.blocks],
            "conv_fc_split": split._asdict(),
            "memory": {"batch_size": 256, "optimizer": "sgd",
                       "training": self.memory().to_dict(),
                       "inference_batch_1": self.inference_memory(1)},
        }

    def format_table(self, batch_size: int = 256, optimizer: str = "sgd") -> str:
        """Aligned text: each block's total line, its layers indented below, then the totals
        and the memory estimate for training at `batch_size` with `optimizer`."""
        return format_table(self, batch_size, optimizer)


# --- public functions -----------------------------------------------------------------------


def inspect_model(model: nn.Module, input_shape: tuple[int, ...]) -> LayerTable:
    """Summarise `model` for inputs of `input_shape` (N, C, H, W), or (C, H, W) for N = 1.

    The caller's module is left as it was: a real module is copied to meta (without copying
    its data); a meta one is used in place, its train/eval flags restored afterwards.
    Raises InspectionError (a ValueError) naming the layer when the forward pass fails.
    """
    shape = with_batch(input_shape)
    with on_meta_in_eval(model) as meta_model, Recorder(meta_model) as recorder:
        try:
            output = meta_model(recorder.track_input(meta_input(meta_model, shape)))
        except Exception as exc:
            raise InspectionError(Failure(recorder.failing_layer(), str(exc)), shape) from exc
    table = _table(recorder, shape, output)
    saved = saved_for_backward(model, shape)
    if saved is None:
        return table
    return dataclasses.replace(table, saved_bytes=sum(saved.values()), saved_by_type=saved)


# A batch of two: BatchNorm refuses one value per channel in training mode.
SAVED_PASS_BATCH = 2


def saved_for_backward(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int] | None:
    """Bytes per image that autograd keeps for the backward pass of one training step, by the
    type of the layer that saved them first ("Conv2d", "ReLU", ...; a container's own ops,
    a Residual's addition, under the container's type), or None if the pass fails.

    One forward pass in training mode on meta (nothing is allocated) under
    `torch.autograd.graph.saved_tensors_hooks`, so the rules are autograd's own: a tensor
    counts once however many layers keep it (storage identity: an in-place ReLU's output
    is its input's storage); parameters, buffers and the input batch are not counted (the
    weights are counted apart, the input with the data). The caller's module is unchanged.
    """
    shape = (SAVED_PASS_BATCH, *with_batch(input_shape)[1:])
    meta_model = to_meta(model)
    states = [(m, m.training, dict(m._buffers)) for m in meta_model.modules()]
    running: list[str] = []
    hooks = []
    for module in meta_model.modules():
        hooks.append(module.register_forward_pre_hook(
            lambda m, args: running.append(type(m).__name__)))
        hooks.append(module.register_forward_hook(lambda m, args, out: running.pop() and None))
    keep = [*meta_model.parameters(), *meta_model.buffers()]  # alive: their ids stay theirs
    skip = {_storage_id(t) for t in keep}
    saved: dict[int, tuple[str, int]] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        key = _storage_id(tensor)
        if key not in skip and key not in saved:
            keep.append(tensor)
            saved[key] = (running[-1] if running else "", tensor.untyped_storage().nbytes())
        return tensor

    try:
        for module, _, _ in states:
            module.training = True
        x = meta_input(meta_model, shape)
        keep.append(x)
        skip.add(_storage_id(x))
        # ShapeOnly: cnnlab's fast meta kernels. PyTorch's own, for ReLU with autograd on,
        # import torch._dynamo and sympy on first use (2 s on a cold `cnnlab summary`).
        with (torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
              ShapeOnly()):
            meta_model(x)
    except Exception:  # a model that runs only in eval mode: the caller falls back
        return None
    finally:
        for hook in hooks:
            hook.remove()
        for module, training, buffers in states:
            module.training = training
            module._buffers.update(buffers)  # a from-scratch BN replaces its buffers
    by_type: dict[str, int] = {}
    for kind, nbytes in saved.values():
        by_type[kind] = by_type.get(kind, 0) + nbytes
    return {kind: math.ceil(nbytes / SAVED_PASS_BATCH) for kind, nbytes in by_type.items()}


def _storage_id(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage()._cdata


def inspect_spec(spec: Spec, batch_size: int = 1) -> LayerTable:
    """`inspect_model` for a spec's network at its own input size, built on meta; cached by the
    (frozen) spec, so checking a spec and showing its table cost one forward pass. Check the
    spec with `cnnlab.arch.checks` first: it refuses lists, which a cache cannot key on."""
    return _cached_inspect_spec(spec, batch_size)


def inspect_spec_afresh(spec: Spec, batch_size: int = 1) -> LayerTable:
    """`inspect_spec` without its cache: for a search over many sizes, whose tables would
    crowd out the ones the pages show."""
    with torch.device("meta"):
        model = build(spec)
    return inspect_model(model, (batch_size, spec.in_channels, spec.input_size, spec.input_size))


_cached_inspect_spec = functools.lru_cache(maxsize=128)(inspect_spec_afresh)


# --- the table from the recorded calls -----------------------------------------------------


def _table(recorder: Recorder, input_shape: tuple[int, ...], output: Any) -> LayerTable:
    batch = input_shape[0]
    rows = _rows(recorder, batch)
    params = list(recorder.model.parameters())
    out = first_tensor(output)
    return LayerTable(
        rows=rows,
        blocks=_blocks(rows, recorder.model, recorder.shapes),
        shapes=dict(recorder.shapes),
        input_shape=tuple(input_shape[1:]),
        output_shape=tuple(out.shape[1:]) if out is not None else (),
        batch_size=batch,
        total_params=sum(p.numel() for p in params),
        trainable_params=sum(p.numel() for p in params if p.requires_grad),
        buffer_elements=sum(b.numel() for b in recorder.model.buffers()),
    )


def _rows(recorder: Recorder, batch: int) -> tuple[LayerRow, ...]:
    counted: set[int] = set()  # parameters already in a row (modules called twice, ties)
    rows = []
    for call in recorder.ordered:
        own = [p for p in own_parameters(call.module) if id(p) not in counted]
        counted.update(id(p) for p in own)
        field = call.output_field or Field(0, 0, 0)
        rows.append(LayerRow(
            path=call.path,
            type=type(call.module).__name__,
            block=call.path.split(".")[0],
            depth=call.path.count(".") + 1 if call.path else 0,
            output_shape=call.output_shape,
            params=sum(p.numel() for p in own),
            flops=call.flops // batch,
            other_ops=call.other_ops // batch,
            activation_bytes=math.prod(call.output_shape) * 4,  # float32, per image
            receptive_field=field.size,
            jump=field.jump,
            kind=_kind(call.module),
        ))
    return tuple(rows)


def _kind(module: nn.Module) -> str:
    if isinstance(module, nn.modules.conv._ConvNd):
        return "conv"
    if isinstance(module, nn.Linear):
        return "fc"
    return "other"


def _blocks(rows: tuple[LayerRow, ...], model: nn.Module,
            shapes: dict[str, tuple[int, ...]]) -> tuple[BlockRow, ...]:
    """One BlockRow per top-level child, in the order they first ran."""
    grouped: dict[str, list[LayerRow]] = {}
    for row in rows:
        grouped.setdefault(row.block, []).append(row)
    children = dict(model.named_children())
    blocks = []
    for name, members in grouped.items():
        module = children.get(name, model)
        widest = max(members, key=lambda r: r.receptive_field)
        blocks.append(BlockRow(
            name=name,
            type=type(module).__name__,
            output_shape=shapes.get(name, members[-1].output_shape),
            params=sum(r.params for r in members),
            flops=sum(r.flops for r in members),
            other_ops=sum(r.other_ops for r in members),
            activation_bytes=sum(r.activation_bytes for r in members),
            receptive_field=widest.receptive_field,
            jump=widest.jump,
        ))
    return tuple(blocks)


def _row_dict(row: LayerRow) -> dict[str, Any]:
    return {"name": row.path, "path": row.path, "type": row.type, "block": row.block,
            "depth": row.depth, "output_shape": list(row.output_shape), "params": row.params,
            "flops": row.flops, "macs": row.macs, "other_ops": row.other_ops,
            "activation_bytes": row.activation_bytes, "receptive_field": row.receptive_field,
            "jump": row.jump, "kind": row.kind}


def _block_dict(block: BlockRow) -> dict[str, Any]:
    return {"name": block.name, "type": block.type, "output_shape": list(block.output_shape),
            "params": block.params, "flops": block.flops, "macs": block.macs,
            "other_ops": block.other_ops,
            "activation_bytes": block.activation_bytes,
            "receptive_field": block.receptive_field, "jump": block.jump}
