"""How many runs train at once and where: the slot policy of the job manager, free of processes.

A CPU slot holds one run. A GPU holds several when their memory estimates (made at submit,
cnnlab.training.resources.estimate_record) fit its budget together, up to `runs_per_gpu`.
These functions decide from counts and numbers alone, so they can be tested (the GPU half
included) on a machine without a GPU.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

RUNS_PER_GPU = 4  # at most this many runs share one GPU, however small they are
# The share of a GPU's memory that the estimates of the runs on it may add up to: the
# estimates are a little short of the real peaks, and the allocator needs room to work.
GPU_MEMORY_SHARE = 0.9


def gpu_estimate(result: Mapping[str, Any]) -> int | None:
    """A run's estimated GPU memory from its stored result; None when it was not estimated for
    a GPU (no estimate, or one made for the CPU, which leaves out the CUDA runtime)."""
    if result.get("memory_device") != "cuda":
        return None
    estimate = result.get("memory_estimated")
    return int(estimate) if isinstance(estimate, (int, float)) else None


def fits_on_gpu(budget: int | None, running: Sequence[int | None], candidate: int | None,
                runs_per_gpu: int) -> bool:
    """Whether a run estimated at `candidate` bytes may start on a GPU whose runs are estimated
    at `running`: their sum plus this one within `budget`, and fewer than `runs_per_gpu` there.

    An idle GPU takes any run (the submit check already warned when one cannot fit). Any
    unknown figure (no budget, a run without a GPU estimate) means the run needs the GPU to
    itself, as before GPUs were shared."""
    if len(running) >= runs_per_gpu:
        return False
    if not running:
        return True
    if budget is None or candidate is None or None in running:
        return False
    return sum(running) + candidate <= budget  # type: ignore[arg-type]  # no None left


def choose_device(wanted: str, busy: Counter[str], cpu_slots: int, gpu_slots: int,
                  num_gpus: int, *, loads: Mapping[str, Sequence[int | None]] | None = None,
                  candidate: int | None = None, budgets: Sequence[int | None] = (),
                  runs_per_gpu: int = 1) -> str | None:
    """Where a run that asks for device `wanted` starts now ("cpu" or "cuda:N"), or None if its
    kind of slot is full. `busy` counts the runs on each device. "auto" and "cuda" go to the
    GPUs when there are GPU slots, everything else to the CPU.

    On the GPUs: `gpu_slots` bounds the runs on all of them together; a GPU takes the run when
    fits_on_gpu says so, with `loads` the estimates of its runs (default: unknown, one per busy
    slot), `candidate` this run's and `budgets[N]` cuda:N's (missing: unknown). The least busy
    GPU that fits wins."""
    if uses_gpu(wanted, gpu_slots, num_gpus):
        on_gpus = sum(n for device, n in busy.items() if device.startswith("cuda"))
        if on_gpus >= gpu_slots:
            return None
        fitting = [f"cuda:{i}" for i in range(num_gpus) if fits_on_gpu(
            budgets[i] if i < len(budgets) else None,
            _load(loads, busy, f"cuda:{i}"), candidate, runs_per_gpu)]
        return min(fitting, key=lambda device: busy[device], default=None)
    return "cpu" if busy["cpu"] < cpu_slots else None


def uses_gpu(wanted: str, gpu_slots: int, num_gpus: int) -> bool:
    """Whether a run that asks for device `wanted` goes to the GPUs (else to the CPU slots):
    there are GPU slots, and training's own rule (setup.trains_on_gpu) puts it on a GPU."""
    from cnnlab.training.setup import trains_on_gpu  # lazy: setup imports torch

    return gpu_slots > 0 and trains_on_gpu(wanted, num_gpus)


def _load(loads: Mapping[str, Sequence[int | None]] | None, busy: Counter[str],
          device: str) -> Sequence[int | None]:
    return loads[device] if loads is not None and device in loads else [None] * busy[device]


def cpu_threads_per_slot(cpu_slots: int) -> int:
    """Torch threads for a CPU worker: all cores but one, shared out between the CPU slots.

    Measured on 2 shared cores, BN-LeNet at 28 px: one thread trained at a steady 10-13k
    examples/s; two threads reached 19k on an idle machine but fell to 2-3k whenever anything
    else wanted a core (OpenMP threads wait for each other at every op, so one preempted thread
    stalls them all). The spare core keeps the server and the training both steady.
    """
    from cnnlab.training.resources import cpu_cores  # lazy: only a manager needs it (torch)

    return max(1, (cpu_cores() - 1) // max(1, cpu_slots))


def gpu_budgets(num_gpus: int, share: float = GPU_MEMORY_SHARE) -> list[int | None]:
    """`share` of each GPU's total memory, for this machine's GPUs 0 .. num_gpus-1; None for
    one torch does not see, whose runs then get it alone.

    Total, not free, memory: the runs sharing it are counted by their estimates, and free
    memory would count them twice."""
    import torch  # lazy: only a manager needs it, and it takes seconds to import

    from cnnlab.training.setup import visible_gpus

    here = visible_gpus()
    return [int(torch.cuda.get_device_properties(i).total_memory * share) if i < here else None
            for i in range(num_gpus)]
