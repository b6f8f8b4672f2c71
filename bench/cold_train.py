"""Cold start, end to end: `python -m cnnlab train PRESET --epochs 1` against the textbook's
pipeline for one epoch, each in a fresh process, timed from process start to exit.

  * cnnlab: the CLI as a subprocess with a temporary run store ($CNNLAB_RUNS): importing
    torch, checking the spec, loading the full Fashion-MNIST (.gz idx files), training one
    epoch, precise-BN recalibration, evaluating the test set, writing metrics and checkpoints.
  * textbook: d2l's load_data_fashion_mnist + train_ch6 in a subprocess: torchvision's
    FashionMNIST (ToTensor, with Resize only when the model's input is not 28 px, as d2l
    does; --resize always resizes, as bench/train.py does) through DataLoader(batch_size,
    shuffle=True, num_workers=2), the same model, initialisation and SGD; one epoch, then the
    test accuracy over a test DataLoader, as train_ch6 prints it. Its raw idx files are
    decompressed into a temporary folder before any timing (the book's data is downloaded
    once); the child reports its set-up, training and evaluation times separately.

The two alternate `--repeats` times; the best of each is compared (other processes on a
shared machine only ever slow a run down). Prints every time and the ratios, and each side's
CPU seconds (user + system, its DataLoader workers included), which other processes disturb
far less than wall time.

Run from the repository root:  .venv/bin/python bench/cold_train.py [--preset bn-lenet]
"""

from __future__ import annotations

import os
import sys

# The checkout's root first on sys.path: cnnlab imports without being installed.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from bench.textbook_data import extract_raw  # noqa: E402

STARTED = time.perf_counter()  # the child's own start, as close to process start as Python gets


def timed(command: list[str], **options) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run `command`; its result, wall seconds and CPU seconds (its descendants' too)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, **options)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return done, seconds, cpu


def run_cli(preset: str, runs_dir: Path, extra: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of `python -m cnnlab train PRESET --epochs 1 --data full`."""
    env = {**os.environ, "CNNLAB_RUNS": str(runs_dir),
           "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "cnnlab", "train", preset, "--epochs", "1", "--data", "full",
               *extra]
    done, seconds, cpu = timed(command, cwd=ROOT, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    accuracy = next(line for line in done.stdout.splitlines() if line.startswith("test acc 0"))
    print(f"  cnnlab CLI: {seconds:6.2f} s, CPU {cpu:6.2f} s  ({accuracy.split(' (')[0]})",
          flush=True)
    return seconds, cpu


def run_textbook(preset: str, root: Path, resize: bool) -> dict[str, float]:
    """The textbook child's times: total (start to exit, measured here) and its parts."""
    command = [sys.executable, os.path.abspath(__file__), "--textbook-child", str(root),
               "--preset", preset] + (["--resize"] if resize else [])
    done, seconds, cpu = timed(command, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"textbook child failed:\n{done.stderr[-2000:]}")
    times = {**json.loads(done.stdout.strip().splitlines()[-1]), "total": seconds, "cpu": cpu}
    print(f"  textbook:   {seconds:6.2f} s, CPU {cpu:6.2f} s  (set-up {times['setup']:.2f}, train "
          f"{times['train']:.2f}, test {times['test']:.2f}; test acc {times['test_acc']:.3f})",
          flush=True)
    return times


def textbook_child(root: str, preset: str, resize: bool) -> None:
    """d2l's load_data_fashion_mnist + one epoch of train_ch6; prints its times as JSON."""
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    from cnnlab.arch.presets import PRESETS
    from cnnlab.training.recipes import textbook_config
    from cnnlab.training.setup import make_model

    spec, config = PRESETS[preset], textbook_config(preset)
    steps = [transforms.ToTensor()]
    if resize or spec.input_size != 28:
        steps.insert(0, transforms.Resize(spec.input_size))
    trans = transforms.Compose(steps)
    train_set = datasets.FashionMNIST(root, train=True, transform=trans, download=False)
    test_set = datasets.FashionMNIST(root, train=False, transform=trans, download=False)
    train_iter = DataLoader(train_set, config.batch_size, shuffle=True, num_workers=2)
    test_iter = DataLoader(test_set, config.batch_size, shuffle=False, num_workers=2)
    model = make_model(spec, seed=0)  # d2l's init_cnn (Xavier), as cnnlab's
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr)
    setup = time.perf_counter() - STARTED

    start = time.perf_counter()
    model.train()
    for X, y in train_iter:
        y_hat = model(X)
        loss = F.cross_entropy(y_hat, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():  # train_ch6 accumulates these as Python numbers every batch
            float(loss) * len(y), float((y_hat.argmax(dim=1) == y).sum())
    train_s = time.perf_counter() - start

    start = time.perf_counter()
    model.eval()
    correct = 0
    with torch.no_grad():
        for X, y in test_iter:
            correct += int((model(X).argmax(dim=1) == y).sum())
    test_s = time.perf_counter() - start
    print(json.dumps({"setup": setup, "train": train_s, "test": test_s,
                      "test_acc": correct / len(test_set)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="bn-lenet")
    parser.add_argument("--repeats", type=int, default=3,
                        help="alternate the two this many times (default 3); the best counts")
    parser.add_argument("--resize", action="store_true",
                        help="the textbook side resizes even at 28 px (as bench/train.py does)")
    parser.add_argument("--cli-args", default="",
                        help="more options for the CLI, e.g. '--bn-recalibration 0'")
    parser.add_argument("--textbook-child", metavar="ROOT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.textbook_child:
        textbook_child(args.textbook_child, args.preset, args.resize)
        return

    quiet_load = os.getloadavg()[0]
    print(f"{args.preset}, one epoch on the full Fashion-MNIST, {os.cpu_count()} CPUs, load "
          f"average {quiet_load:.2f} before the runs", flush=True)
    cli, book = [], []
    with tempfile.TemporaryDirectory(prefix="cnnlab-cold-") as tmp:
        extract_raw(Path(tmp) / "data")
        for i in range(args.repeats):
            cli.append(run_cli(args.preset, Path(tmp) / f"runs-{i}", args.cli_args.split()))
            book.append(run_textbook(args.preset, Path(tmp) / "data", args.resize))

    fastest = {part: min(t[part] for t in book)
                for part in ("total", "cpu", "setup", "train", "test")}
    ours, ours_cpu = min(wall for wall, _ in cli), min(cpu for _, cpu in cli)
    epoch = fastest["train"] + fastest["test"]
    print()
    print(f"cnnlab CLI, start to exit:               best {ours:6.2f} s (median "
          f"{statistics.median(wall for wall, _ in cli):.2f} s), CPU {ours_cpu:.2f} s")
    print(f"textbook, start to exit:                 best {fastest['total']:6.2f} s "
          f"-> ratio {fastest['total'] / ours:.2f}x; CPU {fastest['cpu']:.2f} s "
          f"-> ratio {fastest['cpu'] / ours_cpu:.2f}x")
    print(f"textbook epoch (train + test, no start): best {epoch:6.2f} s "
          f"-> ratio {epoch / ours:.2f}x")
    print(f"textbook training loop alone:            best {fastest['train']:6.2f} s "
          f"-> ratio {fastest['train'] / ours:.2f}x")
    # Only the load before the first run tells of other processes: by the end the 1-minute
    # average is this bench's own (the textbook side keeps both cores busy with its workers).
    if quiet_load > 0.5:
        print(f"the load average was {quiet_load:.2f} before the runs: other processes were "
              "competing, times are noisy")


if __name__ == "__main__":
    main()
