"""A layer-by-layer summary of any CNN, computed on the `meta` device so nothing is allocated.

`inspect_model(model, (N, C, H, W))` runs one forward pass on meta tensors and records, for
every leaf layer call in execution order, its output shape, parameters, FLOPs, the other ops,
activation size and receptive field (`LayerTable`). Counting rules, all per image:

* `flops`: convolutions and matrix products, by `torch.utils.flop_counter`'s formulas (the
  ones `FlopCounterMode` applies: 2 FLOPs per multiply-add). Nothing else is counted there.
* `other_ops`, the ops those formulas leave out, counted from tensor sizes:
  elementwise ops (ReLU, sigmoid, the residual addition, ...): 1 per output element;
  batch norm: 4 per output element (subtract the mean, divide by the std, scale, shift);
  max/avg pooling: kernel area per output element; global/adaptive pooling and means:
  1 per input element; concatenation: 1 per output element (a copy);
  the bias of a conv or linear layer: 1 per output element. Views (flatten) and dropout at
  inference cost nothing. Ops a container runs in its own `forward` (the addition in
  `Residual`, the concatenation in `Inception` and `DenseBlock`) get a row of their own,
  named after the container.
* `receptive_field`: the side, in input pixels, of the input patch one output unit sees
  (`jump` is the cumulative stride). Parallel paths (Inception, the skip path) take the
  largest. Global pooling, flatten+linear see the whole feature map: their field is that of a
  kernel spanning the map, `rf + (side - 1) * jump`, which can exceed the input size because it
  counts the padding. Square kernels are assumed (the larger side is used otherwise).
"""

from __future__ import annotations

import copy
import functools
import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from cnnlab.arch.models import build
from cnnlab.errors import CnnlabError
from cnnlab.arch.specs import Spec

aten = torch.ops.aten

# --- counting rules -------------------------------------------------------------------------

BATCH_NORM_OPS_PER_ELEMENT = 4  # (x - mean) / std * gamma + beta
# Extra state per trainable parameter, in parameter-sized tensors (momentum buffer; Adam's m, v).
OPTIMIZER_STATE_COPIES = {"sgd": 0, "momentum": 1, "adam": 2, "adamw": 2}
# Layers whose output is a view of their input: no new activation memory.
VIEW_LAYERS = {"Flatten", "Unflatten", "Identity"}

_POOLS = {"max_pool2d", "max_pool2d_with_indices", "avg_pool2d"}
_ADAPTIVE_POOLS = {"_adaptive_avg_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d"}
_REDUCTIONS = {"mean", "sum", "amax", "amin"}
_MATRIX_PRODUCTS = {"mm", "addmm", "bmm", "baddbmm"}

# Meta kernels of these ops (and of batch norm and addmm) run PyTorch's Python reference code,
# 0.2-0.5 ms a call: most of a meta forward. Their output is simply a tensor like the input, so
# we make it directly (when every tensor argument has the same shape and dtype) - 10x faster.
_LIKE_INPUT = {aten.relu.default, aten.sigmoid.default, aten.tanh.default, aten.gelu.default,
               aten.silu.default, aten.hardtanh.default, aten.leaky_relu.default,
               aten.add.Tensor, aten.sub.Tensor, aten.mul.Tensor, aten.div.Tensor}
_IN_PLACE_LIKE_INPUT = {aten.relu_.default, aten.sigmoid_.default, aten.tanh_.default,
                        aten.hardtanh_.default, aten.add_.Tensor, aten.mul_.Tensor}


# --- public data ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerRow:
    """One call of a leaf layer (or the container ops of a Residual/Inception/DenseBlock).

    Counts are per image. `params` counts a parameter at its first call only, so the column
    sums to the parameters that ran. `kind` is "conv", "fc" or "other".
    """

    path: str
    type: str
    block: str
    depth: int
    output_shape: tuple[int, ...]
    params: int
    flops: int
    other_ops: int
    activation_bytes: int
    receptive_field: int
    jump: int
    kind: str = "other"

    @property
    def name(self) -> str:
        return self.path


@dataclass(frozen=True)
class BlockRow:
    """A top-level child of the model: its rows summed, its output, its widest field."""

    name: str
    type: str
    output_shape: tuple[int, ...]
    params: int
    flops: int
    other_ops: int
    activation_bytes: int
    receptive_field: int
    jump: int


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
        size = "x".join(map(str, input_shape[1:]))
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

    @property
    def total_flops(self) -> int:
        return sum(r.flops for r in self.rows)

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

        Weights include buffers (BN running statistics). Activations approximate what autograd
        keeps for the backward pass by every layer's output once (conv keeps its input, ReLU
        its output, BN its input: one tensor per layer, give or take); views such as Flatten
        are skipped. In-place ReLU makes the real figure lower; dropout masks and a
        DenseBlock's intermediate concatenations (only its output is a row) make it higher.
        """
        if optimizer not in OPTIMIZER_STATE_COPIES:
            raise ValueError(f"optimizer: unknown {optimizer!r}; choose one of: "
                             f"{', '.join(OPTIMIZER_STATE_COPIES)}")
        saved = sum(math.prod(r.output_shape) for r in self.rows if r.type not in VIEW_LAYERS)
        return Memory(
            weights=(self.total_params + self.buffer_elements) * dtype_bytes,
            gradients=self.trainable_params * dtype_bytes,
            optimizer_state=OPTIMIZER_STATE_COPIES[optimizer] * self.trainable_params * dtype_bytes,
            activations=saved * batch_size * dtype_bytes,
        )

    def inference_memory(self, batch_size: int = 1, dtype_bytes: int = 4) -> int:
        """Bytes to predict: weights (and buffers) plus the largest two consecutive activations
        (a layer's input and output are alive together; earlier ones can be freed)."""
        sizes = [math.prod(self.input_shape)] + [math.prod(r.output_shape) for r in self.rows]
        widest_pair = max((a + b for a, b in zip(sizes, sizes[1:])), default=sizes[0])
        weights = (self.total_params + self.buffer_elements) * dtype_bytes
        return weights + widest_pair * batch_size * dtype_bytes

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON: totals, one dict per layer and per block, memory at batch 256."""
        split = self.conv_fc_split()
        return {
            "input_shape": list(self.input_shape),
            "output_shape": list(self.output_shape),
            "total_params": self.total_params,
            "trainable_params": self.trainable_params,
            "total_flops": self.total_flops,
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
        return _format_table(self, batch_size, optimizer)


# --- public functions -----------------------------------------------------------------------


def inspect_model(model: nn.Module, input_shape: tuple[int, ...]) -> LayerTable:
    """Summarise `model` for inputs of `input_shape` (N, C, H, W), or (C, H, W) for N = 1.

    The caller's module is left as it was: a real module is copied to meta (without copying
    its data); a meta one is used in place, its train/eval flags restored afterwards.
    Raises InspectionError (a ValueError) naming the layer when the forward pass fails.
    """
    shape = _with_batch(input_shape)
    with _on_meta_in_eval(model) as meta_model, _Recorder(meta_model) as recorder:
        try:
            output = meta_model(recorder.track_input(_meta_input(meta_model, shape)))
        except Exception as exc:
            raise InspectionError(Failure(recorder.failing_layer(), str(exc)), shape) from exc
    return recorder.table(shape, output)


@functools.lru_cache(maxsize=128)
def inspect_spec(spec: Spec, batch_size: int = 1) -> LayerTable:
    """`inspect_model` for a spec's network at its own input size, built on meta; cached by the
    (frozen, hashable) spec. Check the spec with `cnnlab.arch.checks` first."""
    with torch.device("meta"):
        model = build(spec)
    return inspect_model(model, (batch_size, spec.in_channels, spec.input_size, spec.input_size))


def forward_failure(model: nn.Module, input_shape: tuple[int, ...]) -> Failure | None:
    """None if a meta forward pass with this input works; else (layer path, error text)."""
    shape = _with_batch(input_shape)
    with _on_meta_in_eval(model) as meta_model, _Recorder(meta_model) as recorder:
        try:
            meta_model(_meta_input(meta_model, shape))
        except Exception as exc:
            return Failure(recorder.failing_layer(), str(exc))
    return None


def smallest_input_size(model_or_factory: nn.Module | Callable[[int], nn.Module],
                        in_channels: int = 1, upper: int = 224) -> int | None:
    """The smallest square input size in [1, upper] for which a meta forward pass works, or
    None if `upper` itself fails.

    Binary search: each conv/pool shrinks the map by a size-monotone rule, so once a size
    works every larger one does. A module's dense head fixes its input size to a narrow range
    around the size it was built for: pass that size as `upper`. A factory (size -> model,
    built here on meta) rebuilds the head for each size, so any `upper` will do.
    """
    works = _size_probe(model_or_factory, in_channels)
    if not works(upper):
        return None
    low, high = 1, upper  # invariant: `high` works, nothing below `low` does
    while low < high:
        middle = (low + high) // 2
        if works(middle):
            high = middle
        else:
            low = middle + 1
    return high


def human_bytes(count: int | float) -> str:
    """1536 -> '1.5 KiB' (binary units, as memory is sized)."""
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    step = 0
    while abs(count) >= 1024 and step < len(units) - 1:
        count, step = count / 1024, step + 1
    return f"{count:.0f} B" if step == 0 else f"{count:.1f} {units[step]}"


# --- the meta forward pass ------------------------------------------------------------------


def _with_batch(input_shape: tuple[int, ...]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in input_shape)
    return (1, *shape) if len(shape) == 3 else shape


def _meta_input(model: nn.Module, shape: tuple[int, ...]) -> torch.Tensor:
    """An empty meta input in the model's floating dtype (float32 if it has none)."""
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    return torch.empty(shape, dtype=dtype, device="meta")


def _own_parameters(module: nn.Module) -> list[nn.Parameter]:
    # Not module.parameters(recurse=False): its generic member walk is ~10x slower, and this
    # runs for every module call.
    return [p for p in module._parameters.values() if p is not None]


def _own_tensors(module: nn.Module) -> list[torch.Tensor]:
    return _own_parameters(module) + [b for b in module._buffers.values() if b is not None]


def _to_meta(model: nn.Module) -> nn.Module:
    """`model` itself if its tensors are all on meta, else a meta copy. The copy maps each
    parameter and buffer to an empty meta twin through deepcopy's memo, so no weights are
    copied and tied parameters stay tied."""
    if all(t.is_meta for m in model.modules() for t in _own_tensors(m)):
        return model
    memo: dict[int, Any] = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"),
                                   requires_grad=p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return copy.deepcopy(model, memo)


@contextmanager
def _on_meta_in_eval(model: nn.Module) -> Iterator[nn.Module]:
    """The model on meta in eval mode (BatchNorm1d refuses a batch of one when training);
    train/eval flags are put back afterwards, so a meta model used in place is unchanged."""
    meta_model = _to_meta(model)
    flags = [(m, m.training) for m in meta_model.modules()]
    for module, _ in flags:
        module.training = False  # what .eval() does, without walking the tree again
    try:
        with torch.no_grad():
            yield meta_model
    finally:
        for module, training in flags:
            module.training = training


def _size_probe(model_or_factory: nn.Module | Callable[[int], nn.Module],
                in_channels: int) -> Callable[[int], bool]:
    """size -> whether a meta forward pass works at size x size."""
    if isinstance(model_or_factory, nn.Module):
        model = _to_meta(model_or_factory)  # once, not per probe

        def build_at(size: int) -> nn.Module:
            return model
    else:
        factory = model_or_factory

        def build_at(size: int) -> nn.Module:
            with torch.device("meta"):
                return factory(size)

    def works(size: int) -> bool:
        try:
            candidate = build_at(size)
            with _on_meta_in_eval(candidate) as meta_model, _ShapeOnly():
                meta_model(_meta_input(meta_model, (1, in_channels, size, size)))
        except Exception:  # any failure means "too small"; the message is forward_failure's job
            return False
        return True

    return works


def _like(tensor: torch.Tensor) -> torch.Tensor:
    # Not torch.empty_like: on meta that goes through Python reference code too (0.1 ms).
    return torch.empty_strided(tensor.shape, tensor.stride(), dtype=tensor.dtype, device="meta")


def _fast_meta_result(func: Any, args: tuple, kwargs: dict) -> Any:
    """The output of a common op made directly from the input shapes, or None to run the op
    itself. Only for meta tensors of one dtype, where the shape rule is plain."""
    if kwargs.get("out") is not None:
        return None
    if func is aten.cat.default:
        return _fast_cat(args[0], args[1] if len(args) > 1 else kwargs.get("dim", 0))
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    if not tensors or not all(t.is_meta and t.dtype == tensors[0].dtype for t in tensors):
        return None
    if func in _LIKE_INPUT or func in _IN_PLACE_LIKE_INPUT:
        if any(t.shape != tensors[0].shape for t in tensors):
            return None  # broadcasting: let the op work out the shape
        return args[0] if func in _IN_PLACE_LIKE_INPUT else _like(tensors[0])
    if func is aten.native_batch_norm.default and args[0].dim() >= 2:
        x = args[0]
        # (output, saved mean, saved inverse std), as the meta kernel returns them.
        channels = torch.empty((x.shape[1],), dtype=x.dtype, device="meta")
        return _like(x), channels, channels.clone()
    if func in (aten.addmm.default, aten.mm.default) and not kwargs:
        a, b = args[-2], args[-1]  # addmm(bias, a, b), mm(a, b): (n, k) @ (k, m) -> (n, m)
        if a.dim() == b.dim() == 2 and a.shape[1] == b.shape[0]:
            return torch.empty((a.shape[0], b.shape[1]), dtype=a.dtype, device="meta")
    return None


def _fast_cat(parts: list[torch.Tensor], dim: int) -> torch.Tensor | None:
    """torch.cat's output for meta tensors of one dtype and rank that agree off `dim`."""
    if not parts:
        return None  # let torch.cat raise its own error
    first = parts[0]
    dim = dim % first.dim() if first.dim() else 0
    same_elsewhere = all(
        p.is_meta and p.dtype == first.dtype and p.dim() == first.dim()
        and all(p.shape[d] == first.shape[d] for d in range(first.dim()) if d != dim)
        for p in parts)
    if not same_elsewhere or first.dim() == 0:
        return None
    shape = list(first.shape)
    shape[dim] = sum(p.shape[dim] for p in parts)
    return torch.empty(shape, dtype=first.dtype, device="meta")


class _ShapeOnly(TorchDispatchMode):
    """Runs ops on meta with the fast path above, counting nothing (size probing)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = _fast_meta_result(func, args, kwargs)
        return func(*args, **kwargs) if result is None else result


# --- recording: module calls, ops, receptive fields -----------------------------------------


class _Field(NamedTuple):
    """The receptive field of one unit of a tensor. `span` is the field of a unit that sees the
    whole feature map (what global pooling or a linear layer after flatten sees)."""

    size: int
    jump: int
    span: int


@dataclass(slots=True)
class _Call:
    """One module call while it runs; becomes a LayerRow."""

    path: str
    module: nn.Module
    is_leaf: bool
    input_field: _Field | None
    flops: int = 0
    other_ops: int = 0
    output_shape: tuple[int, ...] = ()
    output_field: _Field | None = None
    listed: bool = False  # already in the recorder's row order


class _Recorder(TorchDispatchMode):
    """Hooks on every module keep a stack of calls; each aten op is counted against the
    innermost call, so a container's own ops (the residual addition) land on the container."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.paths = {m: name for name, m in model.named_modules()}
        self.leaves = {m for m in self.paths if next(m.children(), None) is None}
        self.stack: list[_Call] = []
        self.ordered: list[_Call] = []
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.fields: dict[int, _Field] = {}  # id(tensor) -> field of its units
        self._alive: list[torch.Tensor] = []  # keeps those ids from being reused
        self._thread = threading.get_ident()
        self._handles: list[Any] = []

    def __enter__(self) -> _Recorder:
        for module in self.paths:
            self._handles.append(module.register_forward_pre_hook(self._enter_module))
            self._handles.append(module.register_forward_hook(self._leave_module))
        return super().__enter__()

    def __exit__(self, *exc_info: Any) -> None:
        super().__exit__(*exc_info)
        for handle in self._handles:
            handle.remove()

    def failing_layer(self) -> str:
        return self.stack[-1].path if self.stack else ""

    def track_input(self, image: torch.Tensor) -> torch.Tensor:
        """Mark the model's input: each unit sees one pixel."""
        self.fields[id(image)] = _Field(1, 1, _span(image, 1, 1, 1))
        self._alive.append(image)
        return image

    # hooks

    def _enter_module(self, module: nn.Module, args: tuple) -> None:
        if threading.get_ident() != self._thread:  # another thread sharing this meta module
            return
        tensor = _first_tensor(args)
        call = _Call(self.paths[module], module, module in self.leaves,
                     self.fields.get(id(tensor)) if tensor is not None else None)
        if call.is_leaf:
            self._list(call)
        self.stack.append(call)

    def _leave_module(self, module: nn.Module, args: tuple, output: Any) -> None:
        if threading.get_ident() != self._thread:
            return
        call = self.stack.pop()
        tensor = _first_tensor(output)
        if tensor is not None:
            call.output_shape = tuple(tensor.shape[1:])
            call.output_field = self.fields.get(id(tensor), call.input_field)
        self.shapes[call.path] = call.output_shape
        if not call.listed and _own_parameters(module):
            self._list(call)  # a container with weights of its own

    def _list(self, call: _Call) -> None:
        call.listed = True
        self.ordered.append(call)

    # ops

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = _fast_meta_result(func, args, kwargs)
        if out is None:
            out = func(*args, **kwargs)
        if self.stack:
            self._count(self.stack[-1], func, args, kwargs, out)
        self._propagate_field(func, args, out)
        return out

    def _count(self, call: _Call, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        flops = _flops(func, args, kwargs, out)
        other = _other_ops(func, args, out)
        call.flops += flops
        call.other_ops += other
        if (flops or other) and not call.listed:
            self._list(call)  # a container's own op: the row goes where the op happens

    def _propagate_field(self, func: Any, args: tuple, out: Any) -> None:
        inputs = [self.fields[id(t)] for t in _tensors(args) if id(t) in self.fields]
        if not inputs:
            return  # ops on weights only
        size = max(f.size for f in inputs)
        jump = max(f.jump for f in inputs)
        span = max(f.span for f in inputs)
        name = func._overloadpacket.__name__
        window = _window(name, args)
        if window is not None:
            kernel, stride = window
            size, jump = size + (kernel - 1) * jump, jump * stride
        elif name in _MATRIX_PRODUCTS or (name in _REDUCTIONS and args[0].dim() == 4):
            size = span  # mixes every position of the map it came from
        for tensor in _tensors(out):
            self.fields[id(tensor)] = _Field(size, jump, _span(tensor, size, jump, span))
            self._alive.append(tensor)

    # the result

    def table(self, input_shape: tuple[int, ...], output: Any) -> LayerTable:
        batch = input_shape[0]
        rows = self._rows(batch)
        params = list(self.model.parameters())
        out = _first_tensor(output)
        return LayerTable(
            rows=rows,
            blocks=_blocks(rows, self.model, self.shapes),
            shapes=dict(self.shapes),
            input_shape=tuple(input_shape[1:]),
            output_shape=tuple(out.shape[1:]) if out is not None else (),
            batch_size=batch,
            total_params=sum(p.numel() for p in params),
            trainable_params=sum(p.numel() for p in params if p.requires_grad),
            buffer_elements=sum(b.numel() for b in self.model.buffers()),
        )

    def _rows(self, batch: int) -> tuple[LayerRow, ...]:
        counted: set[int] = set()  # parameters already in a row (modules called twice, ties)
        rows = []
        for call in self.ordered:
            own = [p for p in _own_parameters(call.module) if id(p) not in counted]
            counted.update(id(p) for p in own)
            field = call.output_field or _Field(0, 0, 0)
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


def _flops(func: Any, args: tuple, kwargs: dict, out: Any) -> int:
    """FlopCounterMode's count for one op: its registered formula applied to the shapes."""
    formula = flop_registry.get(func._overloadpacket)
    if formula is None:
        return 0
    raw = getattr(formula, "__wrapped__", None)
    nested = isinstance(out, (tuple, list)) or any(
        isinstance(a, (tuple, list)) and any(isinstance(t, torch.Tensor) for t in a) for a in args)
    if raw is None or nested:
        return formula(*args, **kwargs, out_val=out)  # tensors in lists: its own tree_map
    # The same shapes FlopCounterMode's shape_wrapper passes, without its pytree walk (~20 us).
    shapes = tuple(a.shape if isinstance(a, torch.Tensor) else a for a in args)
    return raw(*shapes, **kwargs, out_shape=out.shape)


def _tensors(value: Any) -> list[torch.Tensor]:
    """Tensors in an op's arguments or results (cat takes a list of them)."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    return []


def _first_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, dict):
        value = list(value.values())
    found = _tensors(value)
    return found[0] if found else None


def _span(tensor: torch.Tensor, size: int, jump: int, inherited: int) -> int:
    """The field of a unit that sees all of this map (4-D tensors); flattened tensors keep
    the span of the map they came from."""
    if tensor.dim() == 4:
        return size + (max(tensor.shape[2], tensor.shape[3]) - 1) * jump
    return max(inherited, size)


def _pair_max(value: Any, default: int) -> int:
    if isinstance(value, (list, tuple)):
        return max(value) if value else default
    return int(value)


def _window(name: str, args: tuple) -> tuple[int, int] | None:
    """(effective kernel extent, stride) of a sliding-window op, else None."""
    if name in ("convolution", "_convolution"):
        if args[6]:  # transposed: treated as pointwise (not in this chapter)
            return None
        kernel, dilation = max(args[1].shape[2:]), _pair_max(args[5], 1)
        return dilation * (kernel - 1) + 1, _pair_max(args[3], 1)
    if name in _POOLS:
        kernel = _pair_max(args[1], 1)
        stride = _pair_max(args[2], kernel) if len(args) > 2 else kernel
        dilation = _pair_max(args[4], 1) if name != "avg_pool2d" and len(args) > 4 else 1
        return dilation * (kernel - 1) + 1, stride
    if name in _ADAPTIVE_POOLS:
        side, out_side = max(args[0].shape[-2:]), _pair_max(args[1], 1)
        return -(-side // out_side), max(1, side // out_side)
    return None


def _other_ops(func: Any, args: tuple, out: Any) -> int:
    """The ops FlopCounterMode leaves out, by the rules in the module docstring."""
    result = _first_tensor(out)
    if result is None:
        return 0
    name = func._overloadpacket.__name__
    produced = result.numel()
    if name in ("convolution", "_convolution"):
        return produced if args[2] is not None else 0  # the bias
    if name == "addmm":
        return produced  # the bias (`self`) added to each output
    if "batch_norm" in name:
        return BATCH_NORM_OPS_PER_ELEMENT * produced
    if name in _POOLS:
        kernel = args[1] if isinstance(args[1], (list, tuple)) else [args[1]]
        area = math.prod(kernel) if len(kernel) > 1 else kernel[0] ** 2
        return area * produced
    if name in _ADAPTIVE_POOLS or name in _REDUCTIONS:
        return args[0].numel()
    if name == "cat" or torch.Tag.pointwise in func.tags:
        return produced
    return 0


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


# --- plain data and text --------------------------------------------------------------------


def _row_dict(row: LayerRow) -> dict[str, Any]:
    return {"name": row.path, "path": row.path, "type": row.type, "block": row.block,
            "depth": row.depth, "output_shape": list(row.output_shape), "params": row.params,
            "flops": row.flops, "other_ops": row.other_ops,
            "activation_bytes": row.activation_bytes, "receptive_field": row.receptive_field,
            "jump": row.jump, "kind": row.kind}


def _block_dict(block: BlockRow) -> dict[str, Any]:
    return {"name": block.name, "type": block.type, "output_shape": list(block.output_shape),
            "params": block.params, "flops": block.flops, "other_ops": block.other_ops,
            "activation_bytes": block.activation_bytes,
            "receptive_field": block.receptive_field, "jump": block.jump}


def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape)) or "-"


_HEADER = ("Layer", "Type", "Output", "Params", "FLOPs", "Other ops", "RF", "Jump", "Act. bytes")


def _cells(name: str, item: LayerRow | BlockRow) -> tuple[str, ...]:
    return (name, item.type, _shape_text(item.output_shape), f"{item.params:,}",
            f"{item.flops:,}", f"{item.other_ops:,}", str(item.receptive_field), str(item.jump),
            f"{item.activation_bytes:,}")


def _format_table(table: LayerTable, batch_size: int, optimizer: str) -> str:
    # (is a block line, cells): each block's totals, then its layers indented under it.
    lines: list[tuple[bool, tuple[str, ...]]] = []
    for block in table.blocks:
        lines.append((True, _cells(block.name or "(model)", block)))
        members = [r for r in table.rows if r.block == block.name]
        if len(members) > 1 or members[0].path != block.name:  # not a lone top-level layer
            lines += [(False, _cells("  " + r.path, r)) for r in members]
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


def _totals_lines(table: LayerTable, batch_size: int, optimizer: str) -> list[str]:
    memory = table.memory(batch_size, optimizer)
    split = table.conv_fc_split()
    return [
        f"Input {_shape_text(table.input_shape)} -> output {_shape_text(table.output_shape)}",
        f"Params: {table.total_params:,} ({table.trainable_params:,} trainable); "
        f"conv {split.conv_params:,}, fc {split.fc_params:,}",
        f"FLOPs per image: {table.total_flops:,} (conv {split.conv_flops:,}, "
        f"fc {split.fc_flops:,}; 2 per multiply-add)",
        f"Other ops per image (BN, activations, pooling, additions, concatenations, biases): "
        f"{table.total_other_ops:,}",
        f"Training memory at batch {batch_size} with {optimizer}: "
        f"weights {human_bytes(memory.weights)}, gradients {human_bytes(memory.gradients)}, "
        f"optimizer {human_bytes(memory.optimizer_state)}, "
        f"activations {human_bytes(memory.activations)}; total {human_bytes(memory.total)}",
        f"Inference memory at batch 1: {human_bytes(table.inference_memory(1))}",
    ]
