"""Bench: a cold `python -m cnnlab summary PRESET --json` against a cold `import torch`.

The summary of a new process pays for `import torch` whatever we do; what it adds on top is
ours: cnnlab's imports, building the model on the meta device, checking the spec and one meta
forward pass. Target: every preset within 1.3x of `python -c "import torch"` on the same
machine in the same run.

Each preset is timed `--repeats` times, every summary right after an `import torch` so both
see the same load; the ratio is the summary's median wall time over those baselines' median,
and the verdict is on it. The same ratio in CPU time (user + system of the child) is printed
too: on a busy machine it moves less than wall time.

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
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

from cnnlab.arch.presets import PRESETS  # noqa: E402

TARGET_RATIO = 1.3
BASELINE = ["-c", "import torch"]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cold_seconds(python: str, args: list[str]) -> tuple[float, float]:
    """(wall, CPU) seconds of one fresh interpreter running `args`; raises if it fails."""
    env = {**os.environ, "PYTHONPATH": ROOT}
    cpu, start = _children_cpu(), time.perf_counter()
    subprocess.run([python, *args], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start, _children_cpu() - cpu


def measure(python: str, preset: str, repeats: int) -> list[tuple[float, float]]:
    """Medians of (torch wall, summary wall, torch CPU, summary CPU), runs interleaved."""
    base, summary = [], []
    for _ in range(repeats):
        base.append(cold_seconds(python, BASELINE))
        summary.append(cold_seconds(python, ["-m", "cnnlab", "summary", preset, "--json"]))
    return [(statistics.median(b[i] for b in base), statistics.median(s[i] for s in summary))
            for i in (0, 1)]


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
    print(f"{'preset':18s} {'torch s':>8s} {'summary s':>10s} {'ratio':>6s}  "
          f"{'verdict':7s} {'CPU: torch s':>12s} {'summary s':>10s} {'ratio':>6s}")
    over = []
    for preset in args.presets:
        (base, summary), (base_cpu, summary_cpu) = measure(args.python, preset, args.repeats)
        ratio = summary / base
        if ratio > TARGET_RATIO:
            over.append(preset)
        verdict = "ok" if ratio <= TARGET_RATIO else "OVER"
        print(f"{preset:18s} {base:8.2f} {summary:10.2f} {ratio:6.2f}  {verdict:7s} "
              f"{base_cpu:12.2f} {summary_cpu:10.2f} {summary_cpu / base_cpu:6.2f}", flush=True)
    print(f"{len(args.presets) - len(over)} of {len(args.presets)} within {TARGET_RATIO}x"
          + (f"; over: {', '.join(over)}" if over else ""))
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
