"""Running a module on the `meta` device: shapes without allocating, and quickly.

A meta copy of a real module (no weights copied), eval mode for the pass, an empty meta
input, and fast meta kernels for the common ops (convolution, pooling, pointwise ops, batch,
group and layer norm, reductions, matrix products, concatenation). PyTorch's own meta kernels for these run
Python code: most of a meta forward's time, and on first use they import torch._dynamo and
sympy, which would double a cold `cnnlab summary`. Anything unusual or invalid still goes to
PyTorch's kernel, which raises its own error.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from cnnlab.shapes import pair, window_output_size

aten = torch.ops.aten

# Pointwise ops on floating tensors of one dtype: the output has the input's shape (or the
# shapes broadcast together). Making it directly is 10x faster than their meta kernels, which
# are Python references (and those import torch._dynamo on first use: 2 s).
_LIKE_INPUT = {aten.relu.default, aten.sigmoid.default, aten.tanh.default, aten.gelu.default,
               aten.silu.default, aten.hardtanh.default, aten.leaky_relu.default,
               aten.sqrt.default, aten.rsqrt.default, aten.neg.default, aten.exp.default,
               aten.add.Tensor, aten.sub.Tensor, aten.mul.Tensor, aten.div.Tensor,
               aten.pow.Tensor_Scalar}
_IN_PLACE_LIKE_INPUT = {aten.relu_.default, aten.sigmoid_.default, aten.tanh_.default,
                        aten.hardtanh_.default, aten.add_.Tensor, aten.mul_.Tensor}
# What training-mode dropout runs on a CPU (mask = empty_like(x).bernoulli_(1 - p).div_(1 - p);
# x * mask): their meta kernels are Python references that import sympy on first use.
_IN_PLACE_SAME = {aten.bernoulli_.float, aten.div_.Scalar}
_DROPOUT_PARTS = {aten.empty_like.default, *_IN_PLACE_SAME}
# Reductions over dimensions (global average pooling is a mean over H and W): their meta
# kernels are Python references that also import torch._dynamo on first use (2 s).
_REDUCTIONS = {aten.mean.dim, aten.sum.dim_IntList, aten.amax.default, aten.amin.default}


class MetaMode(TorchDispatchMode):
    """A dispatch mode for meta passes. PyTorch wraps a mode's `__torch_dispatch__` in
    `torch._dynamo.disable` unless told otherwise, and the first call then imports
    torch._dynamo: 2 s, as long as `import torch` itself. Nothing is compiled inside these
    passes, so there is nothing for Dynamo to skip."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False


class TooSmall(RuntimeError):
    """A sliding window found no room: the feature map shrinks below 1x1. A RuntimeError, as
    PyTorch's kernels raise for it."""


class ShapeOnly(MetaMode):
    """Runs ops on meta with the fast kernels below, counting nothing (size probing). A map
    that shrinks to nothing raises TooSmall at once: PyTorch's own kernel would explain it,
    but its error path imports sympy (0.4 s, seconds on a busy server) on first use, and
    `cnnlab.analysis.smallest_input` probes sizes that fail on purpose."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = fast_result(func, args, kwargs)
        if result is TOO_SMALL:
            raise TooSmall("the feature map shrinks to nothing")
        return func(*args, **kwargs) if result is None else result


def with_batch(input_shape: tuple[int, ...]) -> tuple[int, ...]:
    """(N, C, H, W) as given, or (1, C, H, W) for (C, H, W)."""
    shape = tuple(int(s) for s in input_shape)
    return (1, *shape) if len(shape) == 3 else shape


def meta_input(model: nn.Module, shape: tuple[int, ...]) -> torch.Tensor:
    """An empty meta input in the model's floating dtype (float32 if it has none)."""
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    return torch.empty(shape, dtype=dtype, device="meta")


def own_parameters(module: nn.Module) -> list[nn.Parameter]:
    # Not module.parameters(recurse=False): its generic member walk is ~10x slower, and this
    # runs for every module call.
    return [p for p in module._parameters.values() if p is not None]


def _own_tensors(module: nn.Module) -> list[torch.Tensor]:
    return own_parameters(module) + [b for b in module._buffers.values() if b is not None]


def to_meta(model: nn.Module) -> nn.Module:
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
def on_meta_in_eval(model: nn.Module) -> Iterator[nn.Module]:
    """The model on meta in eval mode (BatchNorm1d refuses a batch of one when training);
    train/eval flags are put back afterwards, so a meta model used in place is unchanged."""
    meta_model = to_meta(model)
    flags = [(m, m.training) for m in meta_model.modules()]
    for module, _ in flags:
        module.training = False  # what .eval() does, without walking the tree again
    try:
        with torch.no_grad():
            yield meta_model
    finally:
        for module, training in flags:
            module.training = training


# --- fast meta kernels ----------------------------------------------------------------------

# What a window op's fast kernel returns when the map shrinks below 1x1 (ShapeOnly raises;
# the Recorder runs PyTorch's kernel for its message).
TOO_SMALL = object()


def _like(tensor: torch.Tensor) -> torch.Tensor:
    # Not torch.empty_like: on meta that goes through Python reference code too (0.1 ms).
    return torch.empty_strided(tensor.shape, tensor.stride(), dtype=tensor.dtype, device="meta")


def fast_result(func: Any, args: tuple, kwargs: dict) -> Any:
    """The output of a common op made directly from the input shapes, or None to run the op
    itself, or TOO_SMALL for a convolution or pool whose map shrinks below 1x1. Only for meta
    tensors of one dtype, where the shape rule is plain."""
    if kwargs.get("out") is not None:
        return None
    if func is aten.cat.default:
        return _fast_cat(args[0], args[1] if len(args) > 1 else kwargs.get("dim", 0))
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    if not tensors or not all(t.is_meta and t.dtype == tensors[0].dtype for t in tensors):
        return None
    if func in _LIKE_INPUT or func in _IN_PLACE_LIKE_INPUT:
        return _fast_pointwise(func, args[0], tensors, kwargs)
    if (func in _DROPOUT_PARTS and not kwargs.get("memory_format")
            and kwargs.get("dtype") in (None, args[0].dtype)):
        # Training-mode dropout on a CPU: a mask like the input, filled in place, then scaled.
        return args[0] if func in _IN_PLACE_SAME else _like(args[0])
    if func is aten.native_batch_norm.default and args[0].dim() >= 2:
        x = args[0]
        # (output, saved mean, saved inverse std), as the meta kernel returns them.
        channels = torch.empty((x.shape[1],), dtype=x.dtype, device="meta")
        return _like(x), channels, channels.clone()
    if func is aten.native_group_norm.default and args[0].dim() >= 2:
        x, groups = args[0], args[6]
        # (output, mean, inverse std), each statistic one per image and group.
        stats = torch.empty((x.shape[0], groups), dtype=x.dtype, device="meta")
        return _like(x), stats, stats.clone()
    if func is aten.native_layer_norm.default and args[0].dim() >= 1:
        x, normalized = args[0], len(args[1])
        # The statistics keep the leading dimensions, with 1 for each normalized one.
        stats = torch.empty((*x.shape[:x.dim() - normalized], *[1] * normalized),
                            dtype=x.dtype, device="meta")
        return _like(x), stats, stats.clone()
    if func is aten.convolution.default and not kwargs:
        return _fast_conv(*args)
    if func in (aten.max_pool2d_with_indices.default, aten.avg_pool2d.default) and not kwargs:
        return _fast_pool(func, args)
    if func in _REDUCTIONS and len(args) <= 3 and not kwargs:
        return _fast_reduction(args[0], args[1] if len(args) > 1 else None,
                               bool(args[2]) if len(args) > 2 else False)
    if func in (aten.addmm.default, aten.mm.default) and not kwargs:
        a, b = args[-2], args[-1]  # addmm(bias, a, b), mm(a, b): (n, k) @ (k, m) -> (n, m)
        if a.dim() == b.dim() == 2 and a.shape[1] == b.shape[0]:
            return torch.empty((a.shape[0], b.shape[1]), dtype=a.dtype, device="meta")
    return None


def _fast_conv(x: torch.Tensor, weight: torch.Tensor, bias: Any, stride: Any, padding: Any,
               dilation: Any, transposed: bool, output_padding: Any,
               groups: int) -> Any:
    """A 2-D convolution's output; TOO_SMALL for a map that shrinks to nothing; None (run the
    op, which explains) for anything unusual or wrong: transposed, a channel mismatch."""
    if transposed or x.dim() != 4 or weight.dim() != 4 or x.shape[1] != weight.shape[1] * groups:
        return None
    sides = [window_output_size(x.shape[2 + i], weight.shape[2 + i], pair(stride)[i],
                          pair(padding)[i], pair(dilation)[i]) for i in (0, 1)]
    if min(sides) < 1:
        return TOO_SMALL
    return torch.empty((x.shape[0], weight.shape[0], *sides), dtype=x.dtype, device="meta")


def _fast_pool(func: Any, args: tuple) -> Any:
    """max_pool2d_with_indices' (output, indices) or avg_pool2d's output; TOO_SMALL for a map
    that shrinks to nothing; None (run the op) for anything else aten would refuse."""
    x, kernel = args[0], pair(args[1])
    stride = pair(args[2]) if len(args) > 2 and args[2] else kernel
    padding = pair(args[3]) if len(args) > 3 else (0, 0)
    is_max = func is aten.max_pool2d_with_indices.default
    dilation = pair(args[4]) if is_max and len(args) > 4 else (1, 1)
    ceil_mode = bool(args[5 if is_max else 4]) if len(args) > (5 if is_max else 4) else False
    if x.dim() != 4 or any(2 * p > k for p, k in zip(padding, kernel)):
        return None
    sides = [window_output_size(x.shape[2 + i], kernel[i], stride[i], padding[i], dilation[i],
                          ceil_mode) for i in (0, 1)]
    if min(sides) < 1:
        return TOO_SMALL
    shape = (*x.shape[:2], *sides)
    out = torch.empty(shape, dtype=x.dtype, device="meta")
    return (out, torch.empty(shape, dtype=torch.int64, device="meta")) if is_max else out


def _fast_pointwise(func: Any, first: Any, tensors: list[torch.Tensor],
                    kwargs: dict) -> torch.Tensor | None:
    """A pointwise op's output: the input itself when in place, else an empty tensor of the
    broadcast shape. None (run the op) for integer inputs, which some ops promote to float."""
    if kwargs or not tensors[0].is_floating_point():
        return None
    if all(t.shape == tensors[0].shape for t in tensors):
        return first if func in _IN_PLACE_LIKE_INPUT else _like(tensors[0])
    shape = _broadcast([t.shape for t in tensors])
    if shape is None or (func in _IN_PLACE_LIKE_INPUT and shape != tuple(first.shape)):
        return None  # let the op raise its own error
    return first if func in _IN_PLACE_LIKE_INPUT else torch.empty(
        shape, dtype=tensors[0].dtype, device="meta")


def _broadcast(shapes: list[torch.Size]) -> tuple[int, ...] | None:
    """The shapes broadcast together, or None when they do not broadcast."""
    ndim = max(len(s) for s in shapes)
    out = []
    for i in range(-ndim, 0):
        sizes = {s[i] for s in shapes if len(s) >= -i} - {1}
        if len(sizes) > 1:
            return None
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


def _fast_reduction(x: torch.Tensor, dims: Any, keepdim: bool) -> torch.Tensor | None:
    """A reduction's output over `dims` (all of them when None or empty), as aten shapes it."""
    if x.dim() == 0 or not x.is_floating_point():
        return None  # integer sums promote to int64: let the op decide
    reduced = {d % x.dim() for d in (dims if dims else range(x.dim()))}
    shape = [1 if d in reduced else n for d, n in enumerate(x.shape) if keepdim or d not in reduced]
    return torch.empty(shape, dtype=x.dtype, device="meta")


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
