"""Bench: a cold `python -m cnnlab summary PRESET --json` against a cold `import torch`.

The summary of a new process pays for `import torch` whatever we do; what it adds on top is
ours: cnnlab's imports, building the model on the meta device, checking the spec and one meta
forward pass. Target: every preset within 1.3x of `python -c "import torch"` on the same
machine in the same run.

Each preset is timed `--repeats` times, every summary right after an `import torch` so both
see the same load; the ratio is the summary's median over those baselines' median.

Run from the repository root:  .venv/bin/python bench/cold_summary.py [--repeats N]
                                                [--presets alexnet resnet18 ...]
"""

from __future__ import annotations

import os
import sys

# The checkout's root first on sys.path: cnnlab imports without being installed.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import argparse  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

from cnnlab.arch.specs import PRESETS  # noqa: E402

TARGET_RATIO = 1.3
BASELINE = ["-c", "import torch"]


def cold_seconds(python: str, args: list[str]) -> float:
    """Wall time of one fresh interpreter running `args`; raises if it fails."""
    env = {**os.environ, "PYTHONPATH": ROOT}
    start = time.perf_counter()
    subprocess.run([python, *args], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def measure(python: str, preset: str, repeats: int) -> tuple[float, float]:
    """(median seconds of `import torch`, median seconds of the summary), interleaved."""
    torch_times, summary_times = [], []
    for _ in range(repeats):
        torch_times.append(cold_seconds(python, BASELINE))
        summary_times.append(cold_seconds(python, ["-m", "cnnlab", "summary", preset, "--json"]))
    return statistics.median(torch_times), statistics.median(summary_times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each (median; 3)")
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS),
                        metavar="PRESET", help="default: every preset")
    parser.add_argument("--python", default=sys.executable, help="interpreter to time")
    args = parser.parse_args()

    cold_seconds(args.python, BASELINE)  # warm the file cache once, untimed
    print(f"cold `summary PRESET --json` vs `python -c 'import torch'`, median of "
          f"{args.repeats}; target ratio <= {TARGET_RATIO}")
    print(f"{'preset':18s} {'torch s':>8s} {'summary s':>10s} {'ratio':>6s}")
    over = []
    for preset in args.presets:
        base, summary = measure(args.python, preset, args.repeats)
        ratio = summary / base
        verdict = "ok" if ratio <= TARGET_RATIO else "OVER"
        if ratio > TARGET_RATIO:
            over.append(preset)
        print(f"{preset:18s} {base:8.2f} {summary:10.2f} {ratio:6.2f}  {verdict}", flush=True)
    print(f"{len(args.presets) - len(over)} of {len(args.presets)} within {TARGET_RATIO}x"
          + (f"; over: {', '.join(over)}" if over else ""))
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
