"""Bench: the meta-device summary (cnnlab.analysis.layers) against a real forward pass, per preset.

For every preset at its textbook input size, like for like with torchinfo (which builds the
real model once and times its forward pass): the summary (inspect the meta model, format the
table) against a real-tensor forward pass at batch 1 under torch.no_grad, each the median of
several runs after a warm-up. Building the meta model is timed on its own and reported too.
Targets: median of build + summary at most 50 ms; for VGG-11 at 224, the summary at least 20x
faster than the real forward pass.

Run from the repository root:  .venv/bin/python bench/layer_table.py [--repeats N] [--threads N]
(On a shared machine the real forward pass suffers most from other processes: OpenMP threads
wait on each other. `--threads 1` gives a steadier, more conservative ratio.)
"""

from __future__ import annotations

import os
import sys

# The checkout's root first on sys.path: cnnlab imports without being installed.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import gc  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

from cnnlab.analysis.layers import inspect_model  # noqa: E402
from cnnlab.arch.models import build  # noqa: E402
from cnnlab.arch.presets import PRESETS  # noqa: E402
from cnnlab.arch.specs import Spec  # noqa: E402

SUMMARY_TARGET_MS = 50.0
VGG11_SPEEDUP_TARGET = 20.0


def median_ms(run: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def input_shape(spec: Spec) -> tuple[int, int, int, int]:
    return (1, spec.in_channels, spec.input_size, spec.input_size)


def build_on_meta(spec: Spec) -> nn.Module:
    with torch.device("meta"):
        return build(spec)


def summarise(model: nn.Module, spec: Spec) -> str:
    """The summary `cnnlab summary` prints: inspect on meta, format the table."""
    return inspect_model(model, input_shape(spec)).format_table()


def real_forward_ms(spec: Spec, repeats: int) -> tuple[int, float]:
    """(parameter count, median ms of a real batch-1 forward pass of a model built once)."""
    torch.manual_seed(0)
    model = build(spec).eval()
    x = torch.randn(input_shape(spec))
    params = sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        ms = median_ms(lambda: model(x), repeats)
    model = None  # free the weights (hundreds of MB at 224 px) before the next model is built
    gc.collect()
    return params, ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9, help="timed summary runs per preset")
    parser.add_argument("--real-repeats", type=int, default=3, help="timed real forward passes")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.2f} at start\n")
    header = (f"{'preset':18} {'input':>7} {'params':>13} {'meta build':>10} {'summary':>8} "
              f"{'real fwd':>9} {'ratio':>7}")
    print(header)
    print(f"{'':18} {'':>7} {'':>13} {'ms':>10} {'ms':>8} {'ms':>9} {'':>7}")
    print("-" * len(header))
    totals, ratios, with_build = [], {}, {}
    for name, spec in PRESETS.items():
        build_ms = median_ms(lambda: build_on_meta(spec), args.repeats)
        model = build_on_meta(spec)
        summary_ms = median_ms(lambda: summarise(model, spec), args.repeats)
        params, real_ms = real_forward_ms(spec, args.real_repeats)
        totals.append(build_ms + summary_ms)
        ratios[name] = real_ms / summary_ms
        with_build[name] = real_ms / (build_ms + summary_ms)
        size = f"{spec.in_channels}x{spec.input_size}"
        print(f"{name:18} {size:>7} {params:>13,} {build_ms:>10.1f} {summary_ms:>8.1f} "
              f"{real_ms:>9.1f} {ratios[name]:>6.1f}x")

    median_total = statistics.median(totals)
    verdict = {True: "PASS", False: "MISS"}
    print()
    print(f"median build + summary: {median_total:.1f} ms (target <= {SUMMARY_TARGET_MS:.0f} ms): "
          f"{verdict[median_total <= SUMMARY_TARGET_MS]}; slowest {max(totals):.1f} ms")
    print(f"VGG-11 at 224: summary {ratios['vgg11']:.1f}x faster than a real forward pass "
          f"(target >= {VGG11_SPEEDUP_TARGET:.0f}x): "
          f"{verdict[ratios['vgg11'] >= VGG11_SPEEDUP_TARGET]}; "
          f"{with_build['vgg11']:.1f}x counting the meta build")
    print(f"load average {os.getloadavg()[0]:.2f} at the end (other processes share these cores)")


if __name__ == "__main__":
    main()
