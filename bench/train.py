"""Training throughput: cnnlab's pipeline against the textbook's, and against this machine's peak.

For each model the chapter trains, at its textbook input size and batch size:
  * cnnlab: `cnnlab.training.loop.train` (uint8 data held on the device, batches resized there);
  * textbook: torchvision's FashionMNIST with Compose([Resize(size), ToTensor()]) through a
    DataLoader(batch_size, shuffle=True, num_workers=2), the same model, SGD and loss, as
    d2l's load_data_fashion_mnist + train_ch6 do;
  * the model FLOP/s cnnlab achieves (3 x forward FLOPs per example, for forward + backward)
    as a share of a measured convolution peak (float32, batch 64, 128->128, 3x3, 56x56; the
    faster of NCHW and channels-last, since oneDNN's channels-last kernels are faster on CPUs).

Run from the repository root:  .venv/bin/python bench/train.py [--models ...] [--steps N]
"""

from __future__ import annotations

import os
import sys

# The checkout's root first on sys.path: cnnlab imports without being installed (the GPU
# machine runs these scripts from a bare copy of the tree).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import math  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from bench.textbook_data import extract_raw  # noqa: E402
from cnnlab.analysis.layers import inspect_spec  # noqa: E402
from cnnlab.arch.presets import PRESETS  # noqa: E402
from cnnlab.training import data as cnndata  # noqa: E402
from cnnlab.training.config import DEVICES  # noqa: E402
from cnnlab.training.loop import train  # noqa: E402
from cnnlab.training.recipes import TEXTBOOK_RESULTS, textbook_config  # noqa: E402
from cnnlab.training.setup import make_model, resolve_device  # noqa: E402

# Measured steps (after warm-up) per input size: enough to average, few enough that the
# 224-px models (seconds per step on a 2-core CPU) keep the default run near 8 minutes.
DEFAULT_STEPS = {28: 60, 96: 4, 224: 3}
PEAK_SHAPE = dict(batch=64, channels=128, size=56)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def conv_peak(device: torch.device, repeats: int = 5, channels_last: bool = False) -> float:
    """FLOP/s of one large 3x3 convolution, forward + both backward products, best of `repeats`."""
    b, c, s = PEAK_SHAPE["batch"], PEAK_SHAPE["channels"], PEAK_SHAPE["size"]
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    conv = nn.Conv2d(c, c, 3, padding=1, bias=False).to(device, memory_format=fmt)
    x = torch.randn(b, c, s, s, device=device).contiguous(memory_format=fmt).requires_grad_()
    grad = torch.randn(b, c, s, s, device=device).contiguous(memory_format=fmt)
    flops = 3 * 2 * b * c * c * 9 * s * s  # forward, grad of input, grad of weight
    best = math.inf
    for _ in range(repeats + 1):  # the first one warms up (oneDNN / cuDNN choose kernels)
        x.grad = conv.weight.grad = None
        sync(device)
        start = time.perf_counter()
        conv(x).backward(grad)
        sync(device)
        best = min(best, time.perf_counter() - start)
    return flops / best


def measure_peaks(device: torch.device) -> dict[str, float]:
    return {"NCHW": conv_peak(device), "channels-last": conv_peak(device, channels_last=True)}


def format_peaks(peaks: dict[str, float]) -> str:
    return ", ".join(f"{fmt} {flops / 1e9:.1f} GFLOP/s" for fmt, flops in peaks.items())


def cnnlab_rate(name: str, full: cnndata.FashionMNIST, device: torch.device, warmup: int,
                steps: int, compile: bool = False) -> tuple[float, str]:
    """Training examples/s of cnnlab's loop over `steps` steps after `warmup`, and its layout."""
    # Ten test images: the loop evaluates once at the end, which the benchmark does not time.
    tiny_test = dataclasses.replace(full, test_images=full.test_images[:10],
                                    test_labels=full.test_labels[:10])
    config = textbook_config(name).replace(device=device.type, max_steps=warmup + steps,
                                           log_every=1, data="full", compile=compile)
    events: list[dict] = []
    result = train(PRESETS[name], config, on_event=events.append, data=tiny_test)
    if result.status != "done":
        raise RuntimeError(f"{name}: {result.message}")
    # Each step event times one step (batch building included, callbacks excluded).
    timed = [e for e in events if e["kind"] == "step" and e["step"] > warmup]
    seconds = sum(config.batch_size / e["examples_per_s"] for e in timed)
    layout = "NHWC" if result.channels_last else "NCHW"
    return len(timed) * config.batch_size / seconds, layout + ("+c" if compile else "")


def textbook_rate(name: str, root: Path, device: torch.device, warmup: int, steps: int) -> float:
    """Training examples/s of d2l's pipeline: PIL resize per image in DataLoader workers."""
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    spec, config = PRESETS[name], textbook_config(name)
    model = make_model(spec, seed=0).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr)
    trans = transforms.Compose([transforms.Resize(spec.input_size), transforms.ToTensor()])
    dataset = datasets.FashionMNIST(str(root), train=True, transform=trans, download=False)
    loader = DataLoader(dataset, config.batch_size, shuffle=True, num_workers=2)
    batches = iter(loader)
    model.train()
    total_loss = correct = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            sync(device)
            start = time.perf_counter()
        X, y = next(batches)
        X, y = X.to(device), y.to(device)
        y_hat = model(X)
        loss = F.cross_entropy(y_hat, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        # train_ch6 accumulates loss and accuracy as Python numbers every batch (a sync on GPUs).
        with torch.no_grad():
            total_loss += float(loss) * len(y)
            correct += float((y_hat.argmax(dim=1) == y).sum())
    sync(device)
    seconds = time.perf_counter() - start
    del batches  # stop the workers before the next model
    return steps * config.batch_size / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(TEXTBOOK_RESULTS),
                        choices=list(TEXTBOOK_RESULTS), metavar="PRESET")
    parser.add_argument("--steps", type=int,
                        help="measured steps per model (default by input size)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="alternate the two pipelines this many times and keep the best of "
                             "each (default 1; more resists other processes on a shared machine)")
    parser.add_argument("--device", default="auto", choices=DEVICES)
    parser.add_argument("--compile", action="store_true",
                        help="train cnnlab's side with torch.compile (TrainConfig.compile); the "
                             "first, compiling step is part of the warm-up")
    args = parser.parse_args()

    device = resolve_device(args.device)
    full = cnndata.load_fashion_mnist(source="full")
    loads = [os.getloadavg()[0]]
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs; load average {loads[0]:.2f}", flush=True)
    peaks = measure_peaks(device)
    print(f"convolution peak: {format_peaks(peaks)}", flush=True)

    rows = []
    with tempfile.TemporaryDirectory(prefix="cnnlab-bench-") as tmp:
        root = Path(tmp)
        extract_raw(root)
        for name in args.models:
            size = PRESETS[name].input_size
            steps = args.steps or DEFAULT_STEPS.get(size, 5)
            warmup = max(1, steps // 5)
            flops = 3 * inspect_spec(PRESETS[name]).total_flops  # per training example
            ours = book = 0.0
            for _ in range(args.repeats):
                rate, layout = cnnlab_rate(name, full, device, warmup, steps, args.compile)
                ours = max(ours, rate)
                book = max(book, textbook_rate(name, root, device, warmup, steps))
                loads.append(os.getloadavg()[0])
            rows.append((name, size, textbook_config(name).batch_size, steps, layout, ours, book,
                         ours * flops))
            print(f"  {name}: cnnlab {ours:,.0f}, textbook {book:,.0f} examples/s", flush=True)

    # The peak again at the end: other processes on a shared machine move it; keep the best.
    peaks = {fmt: max(a, b) for (fmt, a), b in zip(peaks.items(), measure_peaks(device).values())}
    peak = max(peaks.values())
    print()
    print(f"{'model':18s} {'input':>5s} {'batch':>5s} {'steps':>5s} {'layout':>6s} "
          f"{'cnnlab ex/s':>11s} {'textbook ex/s':>13s} {'ratio':>6s} {'GFLOP/s':>8s} "
          f"{'% of peak':>9s}")
    for name, size, batch, steps, layout, ours, book, achieved in rows:
        print(f"{name:18s} {size:5d} {batch:5d} {steps:5d} {layout:>6s} {ours:11,.0f} "
              f"{book:13,.0f} {ours / book:5.2f}x {achieved / 1e9:8.1f} "
              f"{100 * achieved / peak:8.0f}%")
    print(f"convolution peak on {device}: {format_peaks(peaks)}; % of peak uses the faster")
    busiest = max(loads + [os.getloadavg()[0]])
    print(f"load average: up to {busiest:.2f} on {os.cpu_count()} CPUs", end="")
    if device.type == "cpu" and busiest > 0.5 * (os.cpu_count() or 1) + 0.5:
        print(" - WARNING: other processes were competing for the CPUs; these numbers are low "
              "and noisy (try --repeats 3 on a quiet machine)")
    else:
        print()


if __name__ == "__main__":
    main()
