"""cnnlab.analysis.meta: the fast meta kernels agree with PyTorch's, and keep the cold path cold."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from cnnlab.analysis.meta import ShapeOnly

ROOT = Path(__file__).resolve().parents[1]


def outcome(fn, fast: bool):
    """(shape, dtype) of fn's result, or "error", with or without the fast kernels."""
    try:
        if fast:
            with ShapeOnly():
                result = fn()
        else:
            result = fn()
    except RuntimeError:
        return "error"
    return tuple(result.shape), result.dtype


@pytest.mark.parametrize("kind", ["conv", "max", "avg"])
def test_sliding_windows_match_pytorchs_meta_kernels(kind):
    for kernel, stride, padding, dilation, size, ceil in itertools.product(
            (1, 2, 3, 5), (1, 2, 3), (0, 1, 2), (1, 2), (1, 4, 7, 12), (False, True)):
        if kind == "conv":
            layer = nn.Conv2d(2, 3, kernel, stride, padding, dilation, device="meta")
        elif kind == "max":
            layer = nn.MaxPool2d(kernel, stride, padding, dilation, ceil_mode=ceil)
        else:
            layer = nn.AvgPool2d(kernel, stride, padding, ceil_mode=ceil)
        x = torch.empty(1, 2, size, size, device="meta")
        case = (kind, kernel, stride, padding, dilation, size, ceil)
        assert outcome(lambda: layer(x), True) == outcome(lambda: layer(x), False), case


def test_pointwise_ops_and_reductions_match_pytorchs_meta_kernels():
    shapes = [(), (3,), (2, 1), (1, 3), (2, 3), (4, 2, 3), (2, 2)]
    ops = [torch.add, torch.mul, torch.div, lambda a, b: torch.sqrt(a) - b,
           lambda a, b: a.add_(b), lambda a, b: torch.pow(a, 2).mean(dim=[-1]) + b,
           lambda a, b: a.sum(dim=[0], keepdim=True) * b, lambda a, b: torch.amax(a, dim=[])]
    for (a, b), op, dtype in itertools.product(itertools.product(shapes, shapes), ops,
                                               (torch.float32, torch.int64)):
        def call():
            return op(torch.empty(a, device="meta", dtype=dtype),
                      torch.empty(b, device="meta", dtype=dtype))
        assert outcome(call, True) == outcome(call, False), (a, b, dtype)


def test_a_summary_imports_neither_dynamo_nor_sympy_nor_the_flop_counter():
    # Dynamo costs 2 s on a cold start, as long as `import torch` itself; sympy 0.3 s; the flop
    # counter imports triton where it is installed, 0.2 s.
    assert heavy_imports("from cnnlab.analysis.layers import inspect_spec; "
                         "from cnnlab.arch.checks import check\n"
                         "for spec in PRESETS.values(): check(spec); inspect_spec(spec)",
                         "torch._dynamo", "sympy", "torch.utils.flop_counter") == []


def test_probing_for_the_smallest_input_imports_neither_dynamo_nor_sympy():
    # The probes fail on purpose; PyTorch's error path for a collapsed map imports sympy, which
    # on a busy server held an Architecture page edit for seconds.
    assert heavy_imports("from cnnlab.analysis.smallest_input import smallest_input\n"
                         "for spec in PRESETS.values(): smallest_input(spec)",
                         "torch._dynamo", "sympy") == []


def heavy_imports(code: str, *modules: str) -> list[str]:
    """Which of `modules` a fresh interpreter has imported after running `code` (with
    PRESETS imported)."""
    script = (f"import sys; from cnnlab.arch.presets import PRESETS\n{code}\n"
              f"print(' '.join(m for m in {modules!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                         text=True, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout
    return out.split()


def test_training_with_sgd_does_not_import_dynamo():
    # torch.optim's optimizers import torch._dynamo when built, about 1.2 s of a cold
    # `cnnlab train` (bench/cold_train.py); the book's SGD goes through cnnlab.training.sgd.
    assert heavy_imports("from cnnlab.training.loop import train\n"
                         "from cnnlab.training.config import TrainConfig\n"
                         "train(PRESETS['lenet'], TrainConfig(data='sample', max_steps=2, "
                         "momentum=0.9, bn_recalibration=0))", "torch._dynamo") == []


def test_the_command_line_and_the_run_worker_start_without_torch():
    # They start reading the data (cnnlab.training.files.prefetch) before torch is imported,
    # so the 0.3-0.5 s of gunzip overlaps the 1-3 s import (bench/cold_train.py).
    assert heavy_imports("import cnnlab.cli, cnnlab.runs.worker, cnnlab.training.files",
                         "torch", "numpy") == []


@pytest.mark.parametrize("start", [
    "from cnnlab.cli import main\nmain(['train', 'bn-lenet', '--data', 'full'])",
    "from cnnlab.runs.store import RunStore\nfrom cnnlab.runs import worker\n"
    "run = RunStore(RUNS).create('bn-lenet', {}, {'data': 'full'})\n"
    "worker.main(['--runs-dir', RUNS, run.id])",
])
def test_the_command_line_and_the_run_worker_start_reading_the_data_before_importing_torch(
        start, tmp_path):
    # The read-ahead only overlaps the import if it starts first; it reports, then ends the
    # process before any training.
    script = ("import os, sys\nfrom cnnlab.training import files\n"
              "def prefetch(choice):\n"
              "    print(choice, 'torch' in sys.modules, flush=True)\n"
              "    os._exit(0)\n"
              f"files.prefetch = prefetch\nRUNS = {str(tmp_path / 'runs')!r}\n{start}\n")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                         text=True, check=True, env={**os.environ, "PYTHONPATH": str(ROOT),
                                                     "CNNLAB_RUNS": str(tmp_path / "runs")})
    assert out.stdout.split() == ["full", "False"]


def test_no_module_is_named_like_a_standard_library_module():
    # A script or tool that imports `queue` or `inspect` from the checkout would get ours.
    named = [p for p in (ROOT / "cnnlab").rglob("*.py") if p.stem in sys.stdlib_module_names]
    assert named == []
