"""Recording a meta forward pass: which layer ran, in what order, what it cost, what it sees.

A dispatch mode with hooks on every module: the hooks keep a stack of module calls, and each
aten op is counted against the innermost one. Counting rules, all per image:

* `flops`: convolutions and matrix products, by `torch.utils.flop_counter`'s formulas (the
  ones `FlopCounterMode` applies: 2 FLOPs per multiply-add; copied here for the convolution
  and matrix products). Nothing else is counted there.
* `other_ops`, the ops those formulas leave out, counted from tensor sizes:
  elementwise ops (ReLU, sigmoid, the residual addition, ...): 1 per output element;
  batch norm, and group and layer norm alike: 4 per output element (subtract the mean,
  divide by the std, scale, shift; the statistics themselves are not counted);
  max/avg pooling: kernel area per output element; global/adaptive pooling and means:
  1 per input element; concatenation: 1 per output element (a copy);
  the bias of a conv or linear layer: 1 per output element. Views (flatten) and dropout at
  inference cost nothing. Ops a container runs in its own `forward` (the addition in
  `Residual`, the concatenation in `Inception`) get a row of their own where they run, named
  after the container. A container that runs its own ops in several places between its
  children (`DenseBlock` concatenates after each conv block) gets a row for each place,
  named after the op under the container ("dense_block1.concat").
* `receptive_field`: the side, in input pixels, of the input patch one output unit sees
  (`jump` is the cumulative stride). Parallel paths (Inception, the skip path) take the
  largest. Global pooling, flatten+linear see the whole feature map: their field is that of a
  kernel spanning the map, `rf + (side - 1) * jump`, which can exceed the input size because it
  counts the padding. Square kernels are assumed (the larger side is used otherwise).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import nn

from cnnlab.analysis.meta import MetaMode, fast_result, own_parameters
from cnnlab.shapes import largest_side

BATCH_NORM_OPS_PER_ELEMENT = 4  # (x - mean) / std * gamma + beta
_NORM_OPS = ("batch_norm", "group_norm", "layer_norm")

_POOLS = {"max_pool2d", "max_pool2d_with_indices", "avg_pool2d"}
_ADAPTIVE_POOLS = {"_adaptive_avg_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d"}
_REDUCTIONS = {"mean", "sum", "amax", "amin"}
_MATRIX_PRODUCTS = {"mm", "addmm", "bmm", "baddbmm"}
# Every op with a formula in torch.utils.flop_counter has one of these in its name.
_FLOP_WORDS = ("conv", "mm", "attention")
# Row names for a container's own ops, where aten's name is not what a reader would say.
_OP_NAMES = {"cat": "concat"}


class Field(NamedTuple):
    """The receptive field of one unit of a tensor. `span` is the field of a unit that sees the
    whole feature map (what global pooling or a linear layer after flatten sees)."""

    size: int
    jump: int
    span: int


@dataclass(slots=True)
class Call:
    """One module call while it runs, or one run of a container's own ops between its
    children; `cnnlab.analysis.layers` makes each listed one a LayerRow."""

    path: str
    module: nn.Module
    is_leaf: bool
    input_field: Field | None
    flops: int = 0
    other_ops: int = 0
    output_shape: tuple[int, ...] = ()
    output_field: Field | None = None
    listed: bool = False  # already in the recorder's row order
    op: str = ""  # a run of own ops: the op that made its output
    runs: list[Call] = field(default_factory=list)  # a container's runs of its own ops
    open_run: Call | None = None  # the run still going: no child called since its last op


class Recorder(MetaMode):
    """Hooks on every module keep a stack of calls; each aten op is counted against the
    innermost call, so a container's own ops (the residual addition) land on the container.

    Afterwards `ordered` holds the calls that make rows, in the order they ran, and `shapes`
    every module path's output shape (without the batch dimension)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.paths = {m: name for name, m in model.named_modules()}
        self.leaves = {m for m in self.paths if next(m.children(), None) is None}
        self.stack: list[Call] = []
        self.ordered: list[Call] = []
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.fields: dict[int, Field] = {}  # id(tensor) -> field of its units
        self._alive: list[torch.Tensor] = []  # keeps those ids from being reused
        self._thread = threading.get_ident()
        self._handles: list[Any] = []

    def __enter__(self) -> Recorder:
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
        self.fields[id(image)] = Field(1, 1, _span(image, 1, 1, 1))
        self._alive.append(image)
        return image

    # hooks

    def _enter_module(self, module: nn.Module, args: tuple) -> None:
        if threading.get_ident() != self._thread:  # another thread sharing this meta module
            return
        if self.stack:
            self.stack[-1].open_run = None  # a child runs: the parent's next own op starts a run
        tensor = first_tensor(args)
        call = Call(self.paths[module], module, module in self.leaves,
                    self.fields.get(id(tensor)) if tensor is not None else None)
        if call.is_leaf:
            self._list(call)
        self.stack.append(call)

    def _leave_module(self, module: nn.Module, args: tuple, output: Any) -> None:
        if threading.get_ident() != self._thread:
            return
        call = self.stack.pop()
        tensor = first_tensor(output)
        if tensor is not None:
            call.output_shape = tuple(tensor.shape[1:])
            call.output_field = self.fields.get(id(tensor), call.input_field)
        self.shapes[call.path] = call.output_shape
        self._name_runs(call)
        if not call.listed and not call.runs and own_parameters(module):
            self._list(call)  # a container with weights of its own

    def _name_runs(self, call: Call) -> None:
        """One run: the container's row, with the container's output. Several runs: each
        named after its op under the container, with its own output."""
        if len(call.runs) == 1:
            call.runs[0].output_shape = call.output_shape
            call.runs[0].output_field = call.output_field
        elif len(call.runs) > 1:
            for run in call.runs:
                run.path = f"{call.path}.{run.op}" if call.path else run.op

    def _list(self, call: Call) -> None:
        call.listed = True
        self.ordered.append(call)

    # ops

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = fast_result(func, args, kwargs)
        if out is None:
            out = func(*args, **kwargs)
        self._propagate_field(func, args, out)
        if self.stack:
            self._count(self.stack[-1], func, args, kwargs, out)
        return out

    def _count(self, call: Call, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        flops = _flops(func, args, kwargs, out)
        other = _other_ops(func, args, out)
        if not (flops or other):
            return
        if not call.is_leaf:
            call = self._run_of(call, func, out)  # the row goes where the op happens
        call.flops += flops
        call.other_ops += other

    def _run_of(self, container: Call, func: Any, out: Any) -> Call:
        """The container's current run of own ops (a new one after a child ran), its
        output now `out`."""
        run = container.open_run
        if run is None:
            run = Call(container.path, container.module, False, None)
            container.runs.append(run)
            container.open_run = run
            self._list(run)
        tensor = first_tensor(out)
        if tensor is not None:
            run.output_shape = tuple(tensor.shape[1:])
            run.output_field = self.fields.get(id(tensor))
        name = func._overloadpacket.__name__
        run.op = _OP_NAMES.get(name, name)
        return run

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
            self.fields[id(tensor)] = Field(size, jump, _span(tensor, size, jump, span))
            self._alive.append(tensor)


def _flops(func: Any, args: tuple, kwargs: dict, out: Any) -> int:
    """FlopCounterMode's count for one op: its registered formula applied to the shapes.

    Importing torch.utils.flop_counter imports triton where it is installed, 0.2 s of a cold
    start, so the formulas for the chapter's ops are copied here (the tests hold them to
    FlopCounterMode's totals) and the registry is only imported for other ops it may know."""
    name = func._overloadpacket.__name__
    if not any(word in name for word in _FLOP_WORDS):
        return 0
    if name in ("convolution", "_convolution") and isinstance(out, torch.Tensor):
        x, weight, transposed = args[0], args[1], args[6]
        # Multiply-adds: every output (input, if transposed) position x the whole filter bank.
        positions = math.prod((x if transposed else out).shape[2:])
        return 2 * x.shape[0] * positions * math.prod(weight.shape)
    if name in _MATRIX_PRODUCTS:
        a, b = args[-2], args[-1]  # (bias,) a, b: (batch,) n x k @ k x m
        return 2 * math.prod(a.shape) * b.shape[-1]
    return _registry_flops(func, args, kwargs, out)


def _registry_flops(func: Any, args: tuple, kwargs: dict, out: Any) -> int:
    from torch.utils.flop_counter import flop_registry  # see _flops: imported when needed

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


def first_tensor(value: Any) -> torch.Tensor | None:
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


def _window(name: str, args: tuple) -> tuple[int, int] | None:
    """(effective kernel extent, stride) of a sliding-window op, else None."""
    if name in ("convolution", "_convolution"):
        if args[6]:  # transposed: treated as pointwise (not in this chapter)
            return None
        kernel, dilation = max(args[1].shape[2:]), largest_side(args[5], 1)
        return dilation * (kernel - 1) + 1, largest_side(args[3], 1)
    if name in _POOLS:
        kernel = largest_side(args[1], 1)
        stride = largest_side(args[2], kernel) if len(args) > 2 else kernel
        dilation = largest_side(args[4], 1) if name != "avg_pool2d" and len(args) > 4 else 1
        return dilation * (kernel - 1) + 1, stride
    if name in _ADAPTIVE_POOLS:
        side, out_side = max(args[0].shape[-2:]), largest_side(args[1], 1)
        return -(-side // out_side), max(1, side // out_side)
    return None


def _other_ops(func: Any, args: tuple, out: Any) -> int:
    """The ops FlopCounterMode leaves out, by the rules in the module docstring."""
    result = first_tensor(out)
    if result is None:
        return 0
    name = func._overloadpacket.__name__
    produced = result.numel()
    if name in ("convolution", "_convolution"):
        return produced if args[2] is not None else 0  # the bias
    if name == "addmm":
        return produced  # the bias (`self`) added to each output
    if any(norm in name for norm in _NORM_OPS):
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

