"""Training memory on the CPU: the estimate made before launch against the measured peak.

For each preset the book trains (cnnlab.training.recipes.TEXTBOOK_RECIPES), at its textbook
input size, width and batch size, one fresh process does what a worker does: it makes the
estimate (`resources.estimate_record`, what the Train page's memory check and a run's
result keep), trains `--steps` steps on the bundled sample with `cnnlab.training.loop.train`
(an evaluation of the 1,000 test images follows, with precise BN before it, as in a real
epoch), and reads its own peak resident set (`resources.measured_peak`: getrusage ru_maxrss).
Measured is the whole process: the torch runtime, the data, weights, gradients, activations and
evaluation batches; so is the estimate (it includes an 800 MiB runtime allowance on a CPU).

Run from the repository root:  .venv/bin/python bench/memory.py [--steps 2] [--jobs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

TARGET = 0.25  # the estimate should be within 25% of the measured peak


def measure(name: str, steps: int) -> dict:
    """In this process: estimate, train `steps` steps of preset `name`, read the peak."""
    import torch

    from cnnlab.arch.presets import PRESETS
    from cnnlab.training import resources
    from cnnlab.training.loop import train
    from cnnlab.training.recipes import textbook_config

    torch.set_num_threads(1)
    spec = PRESETS[name]
    config = textbook_config(name).replace(data="sample", device="cpu", max_steps=steps,
                                           epochs=1)
    estimated = resources.estimate_record(spec, config)
    result = train(spec, config)
    measured = resources.measured_peak(torch.device("cpu"))
    return {"preset": name, "input": spec.input_size, "width": spec.width,
            "batch": config.batch_size, "status": result.status.value, **estimated, **measured}


def run_child(name: str, steps: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--one", name, "--steps", str(steps)],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    from cnnlab.training.recipes import TEXTBOOK_RECIPES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2, help="training steps per preset")
    parser.add_argument("--jobs", type=int, default=2, help="presets measured at once")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # the child process's preset
    parser.add_argument("--models", nargs="+", default=list(TEXTBOOK_RECIPES))
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.steps)))
        return 0
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda m: run_child(m, args.steps), args.models))
    mib = 2**20
    print(f"{'preset':18s} {'input':>5s} {'batch':>5s} {'estimated':>10s} {'measured':>10s} "
          f"{'ratio':>6s}  within {TARGET:.0%}")
    worst = 0.0
    for row in rows:
        ratio = row["memory_estimated"] / row["memory_measured"]
        worst = max(worst, abs(ratio - 1))
        print(f"{row['preset']:18s} {row['input']:5d} {row['batch']:5d} "
              f"{row['memory_estimated'] / mib:8.0f} Mi {row['memory_measured'] / mib:8.0f} Mi "
              f"{ratio:6.2f}  {'yes' if abs(ratio - 1) <= TARGET else 'NO'}")
    print(f"largest deviation: {worst:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
