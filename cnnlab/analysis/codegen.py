"""A spec as a self-contained PyTorch script: the same network, without cnnlab.

`to_python(spec)` writes the spec's numbers as a small dataclass, then copies the source of
the family's builder and of every block it uses (`vgg_block`, `Inception`, `Residual`,
`DenseBlock`, the book's `BatchNorm`, ...) out of `cnnlab.arch.models`, found by following the
global names each function reads. Being the same code, the script builds the same modules
under the same names: same parameter count, same output shape, and a cnnlab state dict loads.
"""

from __future__ import annotations

import builtins
import dataclasses
import dis
import inspect
import pprint
import textwrap
import types
from typing import Any

from cnnlab.analysis.layers import inspect_spec
from cnnlab.arch.checks import check
from cnnlab.arch.families import FAMILIES
from cnnlab.arch.specs import Spec
from cnnlab.shapes import shape_text

# What the script imports; the copied code may use these names and builtins, nothing else.
IMPORTS = """\
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn
"""
IMPORTED_NAMES = {"OrderedDict", "dataclass", "torch", "nn"}

_OURS = "cnnlab."  # copy what cnnlab defines; import the rest


def to_python(spec: Spec, *, name: str | None = None) -> str:
    """A runnable script that rebuilds `spec`'s network with PyTorch alone.

    The script defines the spec as `SPEC`, the blocks and the builder, and `build()`, which
    returns the model; run as a program, it prints each block's output shape as the
    textbook does. `name` (a preset's, say) goes into the docstring. Raises
    `validation.SpecError` when the spec has errors.
    """
    check(spec)
    builder = FAMILIES[spec.family].build
    parts = [_docstring(spec, name), IMPORTS, _spec_class(spec)]
    parts += [_source(obj) for obj in _dependencies(builder)]
    parts += [_source(builder), _FOOTER.format(builder=builder.__name__)]
    return "\n\n\n".join(part.strip("\n") for part in parts) + "\n"


# --- the parts of the script -----------------------------------------------------------------


def _docstring(spec: Spec, name: str | None) -> str:
    table = inspect_spec(spec)
    shapes = [(spec.in_channels, spec.input_size, spec.input_size), table.output_shape]
    size, out = (shape_text(shape) for shape in shapes)
    return f'''"""{name or spec.family}, exported by cnnlab as a self-contained PyTorch script.

{table.total_params:,} parameters; input {size} -> output {out} per image.
Run this file to print every block's output shape, as the textbook does; `build()` returns
the model. Change the numbers in `SPEC` to try another network. Parameter names match
cnnlab's, so a state dict saved by cnnlab loads with `model.load_state_dict(...)`.
"""'''


def _spec_class(spec: Spec) -> str:
    """A frozen dataclass whose defaults are this spec's values, with `Spec.channels`."""
    cls = type(spec)
    doc = (inspect.getdoc(cls) or "").splitlines()[0]
    lines = ["@dataclass(frozen=True)", f"class {cls.__name__}:",
             f'    """{doc}"""', ""]
    for field in dataclasses.fields(spec):
        value = getattr(spec, field.name)
        head = f"    {field.name}: {type(value).__name__} = "
        text = pprint.pformat(value, width=100 - len(head), compact=True)
        lines.append(head + text.replace("\n", "\n" + " " * len(head)))
    lines += ["", inspect.getsource(Spec.channels).rstrip(), "", "",
              f"SPEC = {cls.__name__}()"]
    return "\n".join(lines)


_FOOTER = '''
def build() -> nn.Module:
    """The network `SPEC` describes, freshly initialised."""
    return {builder}(SPEC)


if __name__ == "__main__":
    model = build().eval()
    X = torch.zeros(1, SPEC.in_channels, SPEC.input_size, SPEC.input_size)
    with torch.no_grad():
        for name, layer in model.named_children():
            X = layer(X)
            print(f"{{name:20s}} output shape: {{tuple(X.shape)}}")
    print(f"{{sum(p.numel() for p in model.parameters()):,}} parameters")
'''


def _source(obj: Any) -> str:
    """The source of a function or class. A decorated one is refused: the script would need
    the decorator too."""
    lines = textwrap.dedent(inspect.getsource(obj)).splitlines()
    if lines and lines[0].startswith("@"):
        raise ValueError(f"cannot export {obj.__qualname__}: decorator {lines[0]}")
    return "\n".join(lines)


# --- finding what a builder uses -------------------------------------------------------------


def _code_objects(obj: Any) -> list[types.CodeType]:
    """The code of a function, or of every method of a class, with nested code (lambdas,
    comprehensions, generator expressions) included."""
    if inspect.isclass(obj):
        functions = [inspect.unwrap(getattr(v, "__func__", v)) for v in vars(obj).values()]
        found = [f.__code__ for f in functions if inspect.isfunction(f)]
    else:
        found = [obj.__code__]
    stack, codes = list(found), []
    while stack:
        code = stack.pop()
        codes.append(code)
        stack += [c for c in code.co_consts if isinstance(c, types.CodeType)]
    return codes


def _globals_of(obj: Any) -> dict[str, Any]:
    if inspect.isclass(obj):
        return vars(inspect.getmodule(obj))
    return obj.__globals__


def _global_names(obj: Any) -> list[str]:
    names: list[str] = []
    for code in _code_objects(obj):
        for ins in dis.get_instructions(code):
            if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME") and ins.argval not in names:
                names.append(ins.argval)
    if inspect.isclass(obj):  # a base class defined in cnnlab is a dependency too
        names += [b.__name__ for b in obj.__bases__ if b.__module__.startswith(_OURS)]
    return names


def _dependencies(root: Any) -> list[Any]:
    """Every cnnlab function and class `root` reaches through global names, each after the
    things it uses (depth first). Raises ValueError for a global the script cannot provide."""
    ordered: list[Any] = []
    seen: set[int] = {id(root)}

    def visit(obj: Any) -> None:
        scope = _globals_of(obj)
        for name in _global_names(obj):
            if name in IMPORTED_NAMES or (name not in scope and hasattr(builtins, name)):
                continue
            if name not in scope:
                raise ValueError(f"cannot export {obj.__qualname__}: unknown global {name!r}")
            value = scope[name]
            ours = (inspect.isfunction(value) or inspect.isclass(value)) and \
                value.__module__.startswith(_OURS)
            if not ours:
                raise ValueError(f"cannot export {obj.__qualname__}: it uses {name!r}, "
                                 "which the script does not import")
            if id(value) not in seen:
                seen.add(id(value))
                visit(value)
                ordered.append(value)

    visit(root)
    names = [obj.__name__ for obj in ordered + [root]]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise ValueError(f"cannot export: two definitions named {', '.join(clashes)}")
    return ordered
