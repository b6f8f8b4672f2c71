"""What this server has to train with, and whether a run fits before it is queued.

`device_summary()` and `data_summary()` say what runs will use (a GPU or the CPU; the full
Fashion-MNIST or the bundled sample) without loading anything. `fits_device(spec, config)`
compares a training-memory estimate (`cnnlab.analysis.layers`, on the meta device) with the memory
the device has, so a run that cannot fit is refused with a fix instead of dying minutes later
in the queue with an out-of-memory error. No Streamlit in here.
"""

from __future__ import annotations

import math
import os
import resource
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cnnlab.analysis.layers import InspectionError, Memory, inspect_spec
from cnnlab.analysis.table_text import human_bytes
from cnnlab.arch.families import FAMILIES
from cnnlab.arch.specs import Spec
from cnnlab.errors import Problem
from cnnlab.training import files
from cnnlab.training.config import TrainConfig
from cnnlab.training.setup import eval_batch_size, subset_problems, trains_on_gpu, visible_gpus

# Training activations are what autograd keeps for the backward pass
# (cnnlab.analysis.layers.saved_for_backward: 0.6x to 0.95x every layer's output counted once),
# plus, while backward runs, the gradients of a layer's output and input: TRANSIENT_SHARE of the
# widest pair of neighbouring activations. Peak RSS on a CPU (bench/memory.py, textbook sizes)
# minus the fixed part is saved + 0.1 (NiN, VGG) to 0.7 (ResNet-18, AlexNet) of that pair:
# the widest layers come first, and backward reaches them after most saved tensors are gone.
TRANSIENT_SHARE = 0.5
# Over the activations above; a family's `Family.activation_slack` replaces it (none does now:
# the saved-tensor count needs no per-family figure).
ACTIVATION_SLACK = 1.0
# Evaluation runs without gradients, in batches of setup.eval_batch_size. Measured peak
# over the widest pair of neighbouring activations (LayerTable.inference_memory): AlexNet
# 0.9x, VGG 1.2x; branching networks keep more alive: GoogLeNet 2.0x, ResNet 2.4x, DenseNet 2.6x.
# The last three are their `Family.eval_slack`.
EVAL_SLACK = 1.5
# Each batch exists as uint8 images, float32 images and the resized float32 input at once.
INPUT_COPIES = 3
# What a worker holds besides the model: the torch runtime in RAM (790 MiB RSS measured after
# importing torch and the training loop), or a CUDA context plus cuDNN workspaces on a GPU.
RUNTIME_OVERHEAD = {"cpu": 800 * 2**20, "cuda": 1536 * 2**20}
USABLE_SHARE = 0.9  # never plan to fill a device to the last byte
CGROUP_V2 = Path("/sys/fs/cgroup")
CGROUP_V1 = Path("/sys/fs/cgroup/memory")
MEMINFO = Path("/proc/meminfo")


# ---------------------------------------------------------------- what this server has


def cpu_cores() -> int:
    """Cores this process may run on (a container's or taskset's limit, not the machine's)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def gpu_names() -> list[str]:
    """Names of the visible CUDA GPUs; empty without one. Creates no CUDA context."""
    return [torch.cuda.get_device_name(i) for i in range(visible_gpus())]


def device_summary() -> str:
    """Where runs train: 'NVIDIA H100 80GB HBM3', '2 x NVIDIA A100-SXM4-40GB' or 'CPU, 2 cores'."""
    names = gpu_names()
    if not names:
        cores = cpu_cores()
        return f"CPU, {cores} core{'s' if cores != 1 else ''}"
    if len(set(names)) == 1:
        return names[0] if len(names) == 1 else f"{len(names)} x {names[0]}"
    return ", ".join(names)


def full_data_found() -> bool:
    """Whether the full Fashion-MNIST is on disk (data dir or Debian package); no download."""
    try:
        return files.find_fashion_mnist() is not None
    except files.DataError:  # an incomplete set: "full" would fail too
        return False


def train_size(choice: str) -> int:
    """Training images that data `choice` ("auto", "full" or "sample") gives on this server."""
    full = choice == "full" or (choice == "auto" and full_data_found())
    return files.FULL_SIZES[0] if full else files.SAMPLE_SIZES[0]


def data_summary() -> str:
    """Which Fashion-MNIST runs get by default, from a look at the disk (nothing is loaded)."""
    try:
        found = files.find_fashion_mnist()
    except files.DataError as exc:
        return f"Fashion-MNIST is broken here: {exc}. Runs use the bundled sample."
    train, test = files.FULL_SIZES
    if found is not None:
        source, paths = found
        where = (f"Debian package {files.DEBIAN_PACKAGE}" if source is files.Source.DEBIAN
                 else f"{paths['train_images'].parent}")
        return f"Fashion-MNIST, full: {train:,} train / {test:,} test images ({where})"
    train, test = files.SAMPLE_SIZES
    if not files.SAMPLE_PATH.is_file():
        return "No Fashion-MNIST found, and the bundled sample is missing: runs will fail."
    return (f"Fashion-MNIST sample: {train:,} train / {test:,} test images (the full set is "
            f"not installed: apt install {files.DEBIAN_PACKAGE})")


def data_problems(config: TrainConfig) -> list[Problem]:
    """Problems with the config's data on this server: full data that is not installed, or a
    subset larger than the training set. Each names the field and a fix."""
    if config.data == "full" and not full_data_found():
        return [Problem("data", "the full Fashion-MNIST is not installed on this server",
                        f"use the sample, or install the Debian package {files.DEBIAN_PACKAGE}")]
    return subset_problems(config.subset, train_size(config.data))


# ---------------------------------------------------------------- memory


@dataclass(frozen=True)
class DeviceMemory:
    """Memory of the device a run would train on, in bytes."""

    device: str  # "cpu" or "cuda:N"
    name: str  # for messages: "the CPU's RAM", "NVIDIA H100 80GB HBM3"
    total: int
    free: int  # free now; on a GPU other runs may hold part of it only until they end

    @property
    def is_gpu(self) -> bool:
        return self.device != "cpu"


def training_device(config: TrainConfig) -> str:
    """"cuda" or "cpu": where the job manager puts a run with this config on this machine
    (setup.trains_on_gpu); "cpu" for "cuda" without a GPU, which submit refuses."""
    return "cuda" if trains_on_gpu(config.device, visible_gpus()) else "cpu"


def device_memory(device: str) -> DeviceMemory:
    """Total and free memory of the CPU's RAM ("cpu") or of the largest visible GPU ("cuda").

    RAM: /proc/meminfo's MemAvailable (os.sysconf elsewhere), capped by a cgroup's limit.
    GPU: torch.cuda.mem_get_info, which counts every process's use of the GPU.
    """
    if device.startswith("cuda"):
        best = max(range(torch.cuda.device_count()),
                   key=lambda i: torch.cuda.get_device_properties(i).total_memory)
        free, total = torch.cuda.mem_get_info(best)
        return DeviceMemory(f"cuda:{best}", torch.cuda.get_device_name(best), total, free)
    total, free = _ram()
    return DeviceMemory("cpu", "the CPU's RAM", total, free)


def _ram() -> tuple[int, int]:
    """(total, available) bytes of RAM for this process."""
    total = available = None
    try:
        lines = MEMINFO.read_text().splitlines()
        fields = dict(line.split(":", 1) for line in lines if ":" in line)
        total = int(fields["MemTotal"].split()[0]) * 1024
        available = int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        page = os.sysconf("SC_PAGE_SIZE")
        total = os.sysconf("SC_PHYS_PAGES") * page
        available = os.sysconf("SC_AVPHYS_PAGES") * page
    limit = _cgroup_room()
    if limit is not None:
        cap_total, room = limit
        total, available = min(total, cap_total), min(available, room)
    return total, available


def _cgroup_room() -> tuple[int, int] | None:
    """(limit, limit - usage) of this container's memory cgroup, or None without a limit."""
    for limit_file, usage_file in ((CGROUP_V2 / "memory.max", CGROUP_V2 / "memory.current"),
                                   (CGROUP_V1 / "memory.limit_in_bytes",
                                    CGROUP_V1 / "memory.usage_in_bytes")):
        try:
            limit_text = limit_file.read_text().strip()
            usage = int(usage_file.read_text().strip())
        except (OSError, ValueError):
            continue
        if limit_text == "max" or not limit_text.isdigit() or int(limit_text) >= 2**60:
            return None  # no limit ("max", or cgroup v1's huge sentinel)
        limit = int(limit_text)
        return limit, max(0, limit - usage)
    return None


def _optimizer_kind(config: TrainConfig) -> str:
    """The optimizer as `LayerTable.memory` names it (SGD keeps a buffer only with momentum)."""
    if config.optimizer == "sgd":
        return "momentum" if config.momentum > 0 else "sgd"
    return config.optimizer


@dataclass(frozen=True)
class Estimate:
    """Bytes a run needs on its device: a fixed part, and parts that grow with the batches."""

    memory: Memory  # weights, gradients, optimizer state, activations (cnnlab.analysis.layers)
    batch_size: int
    fixed: int  # weights, gradients, optimizer state, the data set and the runtime
    per_image: int  # training: activations (with slack) and input copies, per image
    eval_images: int  # evaluation batches hold at least this many images (setup.eval_batch_size)
    eval_per_image: int  # evaluation: the widest activations (with slack), per image
    # A step captured as CUDA graphs keeps its memory in the graphs' own pool for the whole run,
    # evaluation included, so the two add up instead of taking turns.
    graphs: bool = False

    def at(self, batch_size: int) -> int:
        """The total at another batch size (evaluation batches grow with it too)."""
        training = self.per_image * batch_size
        evaluation = self.eval_per_image * max(batch_size, self.eval_images)
        if self.graphs:
            return self.fixed + training + evaluation
        return self.fixed + max(training, evaluation)

    @property
    def total(self) -> int:
        return self.at(self.batch_size)

    @property
    def batch_part(self) -> int:
        """What the batches add to the fixed part at this batch size."""
        return self.total - self.fixed

    def largest_batch(self, budget: int) -> int:
        """The largest batch size whose estimate fits in `budget` bytes (0 if none does)."""
        low, high = 0, 65_536  # invariant: `low` fits (0 stands for none), `high + 1` does not
        if self.at(1) > budget:
            return 0
        while low < high:
            middle = (low + high + 1) // 2
            if self.at(middle) <= budget:
                low = middle
            else:
                high = middle - 1
        return low


def estimate(spec: Spec, config: TrainConfig, device: str | None = None) -> Estimate:
    """Training memory of `spec` with `config` on "cpu" or "cuda" (default: where it would run).

    Raises cnnlab.analysis.layers.InspectionError when the spec's forward pass fails; check the spec
    with `cnnlab.arch.checks` first.
    """
    kind = "cuda" if (device or training_device(config)).startswith("cuda") else "cpu"
    table = inspect_spec(spec)
    memory = table.memory(config.batch_size, _optimizer_kind(config))
    family = FAMILIES[spec.family]
    slack = family.activation_slack or ACTIVATION_SLACK
    input_bytes = INPUT_COPIES * spec.in_channels * spec.input_size ** 2 * 4
    widest = table.widest_pair(1)  # two neighbouring activations, one image
    saved = memory.activations / config.batch_size  # kept for backward, one image
    per_image = math.ceil((saved + TRANSIENT_SHARE * widest) * slack) + input_bytes
    eval_slack = family.eval_slack or EVAL_SLACK
    eval_per_image = math.ceil(widest * eval_slack) + input_bytes
    eval_images = eval_batch_size(1, torch.device(kind), spec.input_size)
    images = sum(files.FULL_SIZES if train_size(config.data) == files.FULL_SIZES[0]
                 else files.SAMPLE_SIZES)
    fixed = (memory.weights + memory.gradients + memory.optimizer_state
             + images * files.IMAGE_SIZE ** 2 + RUNTIME_OVERHEAD[kind])
    return Estimate(memory, config.batch_size, fixed, per_image, eval_images, eval_per_image,
                    graphs=config.cuda_graphs and kind == "cuda")


def fits_device(spec: Spec, config: TrainConfig,
                memory: DeviceMemory | None = None) -> tuple[bool, str]:
    """Whether training `spec` with `config` fits the device it would run on, and a message.

    Refused (False) when the estimate exceeds 90% of what the device can give: the RAM
    available now on a CPU; a GPU's total memory, since the queue runs one job per GPU and
    other runs free theirs when they end. The message says what to lower, with the largest
    batch size that fits. `memory` replaces the device's own figures (for tests).
    Raises InspectionError for a spec whose forward pass fails.
    """
    device = memory.device if memory is not None else training_device(config)
    memory = memory or device_memory(device)
    need = estimate(spec, config, device)
    budget = int((memory.total if memory.is_gpu else memory.free) * USABLE_SHARE)
    have = (f"{memory.name} has {human_bytes(memory.total)}" if memory.is_gpu
            else f"{memory.name} has {human_bytes(memory.free)} available")
    summary = (f"needs about {human_bytes(need.total)} to train at batch size "
               f"{config.batch_size:,} and {spec.input_size}x{spec.input_size} pixels")
    if need.total <= budget:
        message = f"This run {summary}; {have}."
        if memory.is_gpu and need.total > memory.free * USABLE_SHARE:
            message += (f" Only {human_bytes(memory.free)} is free on it right now: other runs "
                        "are using it, and this one may run out of memory if they still are "
                        "when it starts.")
        return True, message
    largest = need.largest_batch(budget)
    if largest >= 1:
        fix = f"a batch size of {_round_down(largest):,} or less would fit"
    else:
        fix = "even a batch of one image does not fit, so lower the input size or the width"
    return False, (f"Too big: this run {summary} ({human_bytes(need.batch_part)} of it for "
                   f"the batches), but {have}. "
                   f"Lower the batch size (now {config.batch_size:,}), the input size "
                   f"(now {spec.input_size} px) or the width (now {spec.width:g}): {fix}.")


def _round_down(batch: int) -> int:
    """A friendly batch size at most `batch`: a power of two, or a multiple of 32 above 128."""
    if batch >= 128:
        return batch // 32 * 32
    return 2 ** int(math.log2(batch))


# ---------------------------------------------------------------- estimated and measured


def estimate_record(spec: Spec, config: TrainConfig) -> dict[str, Any]:
    """The memory estimate made before launch, as a run's result keeps it beside the measured
    peak: {"memory_estimated": bytes, "memory_estimated_runtime": bytes of it for the runtime,
    "memory_device": "cpu" | "cuda"}. Empty when the spec cannot be inspected (the run then
    fails with the spec's own error)."""
    device = training_device(config)
    try:
        need = estimate(spec, config, device)
    except (InspectionError, ValueError):
        return {}
    return {"memory_estimated": need.total, "memory_estimated_runtime": RUNTIME_OVERHEAD[device],
            "memory_device": device}


def reset_peak_memory(device: torch.device) -> None:
    """Start counting a run's peak on a GPU (the process may have trained before)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def measured_peak(device: torch.device, *, own_process: bool = True) -> dict[str, Any]:
    """The peak memory this process used, as a run's result keeps it.

    On a GPU, torch.cuda.max_memory_allocated since `reset_peak_memory`: the tensors alone,
    without the CUDA context and cuDNN workspaces the estimate's runtime part stands for. On a
    CPU, the process's peak resident set (getrusage ru_maxrss, KiB on Linux): everything, the
    torch runtime and the data included, over the process's whole life. A worker trains one
    run, so that is the run's; the CLI's `train` runs in its own process too, but `reproduce`
    trains several in one, so each later run's peak is at least the earlier ones'. A Ray task
    (`own_process=False`) runs in a worker process Ray keeps for many tasks, so there the CPU
    figure is labelled an upper bound."""
    if device.type == "cuda":
        return {"memory_measured": int(torch.cuda.max_memory_allocated(device)),
                "memory_measured_what": "torch.cuda.max_memory_allocated (tensors only)"}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1 if sys.platform == "darwin" else 1024  # macOS reports bytes, Linux KiB
    what = ("peak resident memory of the training process" if own_process else
            "peak resident memory of the Ray worker process, which may have run other tasks "
            "before this one: an upper bound")
    return {"memory_measured": int(peak * scale), "memory_measured_what": what}
