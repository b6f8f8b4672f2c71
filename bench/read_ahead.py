"""What reading the data ahead saves a cold start: `cnnlab train` and a run worker, each timed
from process start to exit on a 2-step run of bn-lenet on the full Fashion-MNIST (precise BN
and the test set included), with `cnnlab.training.files.prefetch` as it is and replaced by a
no-op (the files are then read when the run loads them, after torch is imported). The two
alternate `--repeats` times; medians and bests are compared.

Run from the repository root:  .venv/bin/python bench/read_ahead.py [--repeats 5]
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
import tempfile  # noqa: E402
import time  # noqa: E402

from cnnlab.arch.presets import PRESETS  # noqa: E402
from cnnlab.runs.store import RunStore  # noqa: E402
from cnnlab.training.recipes import textbook_config  # noqa: E402

CONFIG = textbook_config("bn-lenet").replace(data="full", max_steps=2)
NO_READ_AHEAD = "from cnnlab.training import files\nfiles.prefetch = lambda choice: None\n"
STARTS = {
    "cnnlab train": "from cnnlab.cli import program\nsys.argv = ['cnnlab', 'train', 'bn-lenet', "
                    "'--data', 'full', '--max-steps', '2']\nprogram()\n",
    "run worker": "from cnnlab.runs import worker\nsys.argv = ['worker', '--runs-dir', RUNS, RUN]\n"
                  "worker.exit_now(worker.main())\n",
}


def seconds(start: str, read_ahead: bool, runs: str) -> float:
    """Start to exit of one cold process running `start`."""
    run = RunStore(runs).create("bn-lenet", PRESETS["bn-lenet"].to_dict(), CONFIG.to_dict()).id
    script = (f"import sys\nRUNS, RUN = {runs!r}, {run!r}\n"
              + ("" if read_ahead else NO_READ_AHEAD) + start)
    env = {**os.environ, "CNNLAB_RUNS": runs, "PYTHONPATH": ROOT}
    began = time.perf_counter()
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, check=True,
                   capture_output=True)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} before the runs")
    with tempfile.TemporaryDirectory(prefix="cnnlab-read-ahead-") as runs:
        for name, start in STARTS.items():
            times: dict[bool, list[float]] = {False: [], True: []}
            for _ in range(args.repeats):
                for read_ahead in (False, True):
                    times[read_ahead].append(seconds(start, read_ahead, runs))
            off, on = times[False], times[True]
            print(f"{name:13s} without read-ahead: median {statistics.median(off):.2f} s, best "
                  f"{min(off):.2f} s; with: median {statistics.median(on):.2f} s, best "
                  f"{min(on):.2f} s -> saves {statistics.median(off) - statistics.median(on):.2f}"
                  f" s (median), ratio {statistics.median(off) / statistics.median(on):.2f}x")


if __name__ == "__main__":
    main()
