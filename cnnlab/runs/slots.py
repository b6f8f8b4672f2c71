"""How many runs train at once and where: the slot policy of the job manager, free of processes.

A CPU slot or a GPU slot holds one run. These functions decide from counts alone, so they can
be tested (the GPU half included) on a machine without a GPU.
"""

from __future__ import annotations

import os
from collections import Counter


def choose_device(wanted: str, busy: Counter[str], cpu_slots: int, gpu_slots: int,
                  num_gpus: int) -> str | None:
    """Where a run that asks for device `wanted` starts now ("cpu" or "cuda:N"), or None if its
    kind of slot is full. `busy` counts the runs on each device. "auto" and "cuda" go to the
    GPUs when there are GPU slots (the least busy GPU), everything else to the CPU."""
    if wanted in ("auto", "cuda") and gpu_slots > 0 and num_gpus > 0:
        on_gpus = sum(n for device, n in busy.items() if device.startswith("cuda"))
        if on_gpus >= gpu_slots:
            return None
        return min((f"cuda:{i}" for i in range(num_gpus)), key=lambda device: busy[device])
    return "cpu" if busy["cpu"] < cpu_slots else None


def cpu_threads_per_slot(cpu_slots: int) -> int:
    """Torch threads for a CPU worker: all cores but one, shared out between the CPU slots.

    Measured on 2 shared cores, BN-LeNet at 28 px: one thread trained at a steady 10-13k
    examples/s; two threads reached 19k on an idle machine but fell to 2-3k whenever anything
    else wanted a core (OpenMP threads wait for each other at every op, so one preempted thread
    stalls them all). The spare core keeps the server and the training both steady.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, ((cores or 1) - 1) // max(1, cpu_slots))


def visible_gpus() -> int:
    import torch  # lazy: only a manager needs it, and it takes seconds to import

    return torch.cuda.device_count() if torch.cuda.is_available() else 0
