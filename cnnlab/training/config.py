"""The training config: every knob of a run, with the textbook's defaults, and the one place
its values are checked.

A TrainConfig that exists can run somewhere: it checks itself on construction (from_dict and
replace too), so the CLI, the job queue and the pages all get the same problems, each naming
the field and a fix. Whether it can run on *this* machine (a GPU for "cuda", enough images for
the subset) is a fact about the machine, asked in cnnlab.training.setup.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from cnnlab.arch.checks import is_int, is_number
from cnnlab.errors import CnnlabError, Problem
from cnnlab.training.files import NUM_CLASSES

# The choices of the string fields; the CLI and the pages offer exactly these.
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "step", "anneal")
DATA_CHOICES = ("auto", "full", "sample")
DEVICES = ("auto", "cpu", "cuda")
# JSON writes 1.0 as 1.0, but people write "lr": 1; these fields accept ints.
FLOAT_FIELDS = ("lr", "momentum", "weight_decay", "label_smoothing")


class ConfigError(CnnlabError):
    """A training config that cannot run; `problems` lists every error (field, message, fix)."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(problems=problems)


@dataclass(frozen=True)
class TrainConfig:
    """Every training knob, with the textbook's defaults. JSON round trip: to_dict / from_dict."""

    epochs: int = 10
    batch_size: int = 256
    lr: float = 0.1
    optimizer: str = "sgd"  # one of OPTIMIZERS
    momentum: float = 0.0  # SGD only; the book's train_ch6 uses plain SGD
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    schedule: str = "constant"  # one of SCHEDULES, applied per step
    subset: int | None = None  # class-balanced training subset size; None = all
    data: str = "auto"  # "auto" (full if found, else the sample) | "full" | "sample"
    seed: int = 0
    device: str = "auto"  # "auto" (a GPU if there is one) | "cpu" | "cuda"
    channels_last: bool = True  # NHWC on CUDA; on CPUs only where exact and faster (setup.py)
    amp: bool = True  # CUDA only: bf16 autocast (no loss scaling needed, unlike fp16)
    flip: bool = False  # random left-right flips of training images
    log_every: int = 10  # a 'step' event every this many steps
    max_steps: int | None = None  # stop after this many steps in total (tests, benchmarks)
    # Before each evaluation, recompute BatchNorm statistics over this many training batches
    # ("precise BN"); 0 evaluates with the moving averages, as the book does. See
    # loop.recalibrate_batch_norm for why this is on by default.
    bn_recalibration: int = 20
    # torch.compile the training step: fuses BN and ReLU into the convolutions' neighbours.
    # ResNet-18 at 96 px on a 2-core CPU: 105 -> 145 examples/s, after ~30 s of compiling.
    # Worth it for long runs only, so off by default.
    compile: bool = False
    # On a GPU, capture each training step's forward and backward as CUDA graphs
    # (setup.graphed_forward): one launch instead of one per kernel, for launch-bound networks
    # such as GoogLeNet. Not yet measured on a GPU, so off by default; ignored on a CPU.
    cuda_graphs: bool = False

    def __post_init__(self) -> None:
        # Checked on construction, so a config that exists can run (from_dict and replace too).
        problems = config_problems(self)
        if problems:
            raise ConfigError(problems)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """A config from its dict form; missing keys take the defaults. Raises ConfigError
        listing unknown keys or every bad value."""
        if not isinstance(data, dict):
            raise ConfigError([Problem("config", "must be a JSON object", "start from to_dict()")])
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError([Problem("config", f"unknown field(s): {', '.join(unknown)}",
                                       f"use only: {', '.join(known)}")])
        values = {k: float(v) if k in FLOAT_FIELDS and type(v) is int else v
                  for k, v in data.items()}
        return cls(**values)


def config_problems(config: TrainConfig) -> list[Problem]:
    """Every problem with the config's values, each naming the field and a fix. Never raises."""
    problems: list[Problem] = []

    def need(ok: bool, name: str, message: str, fix: str) -> None:
        if not ok:
            problems.append(Problem(name, f"{message}, got {getattr(config, name)!r}", fix))

    def one_of(choices: tuple[str, ...], name: str, what: str) -> None:
        need(getattr(config, name) in choices, name, f"unknown {what}", f"use {', '.join(choices)}")

    c = config
    need(is_int(c.epochs) and 1 <= c.epochs <= 10_000, "epochs", "must be a whole number >= 1",
         "the book trains for 10")
    need(is_int(c.batch_size) and 1 <= c.batch_size <= 65_536, "batch_size",
         "must be a whole number from 1 to 65536", "the book uses 128 or 256")
    need(is_number(c.lr) and c.lr > 0, "lr", "must be a positive number", "try the book's 0.1")
    one_of(OPTIMIZERS, "optimizer", "optimizer")
    need(is_number(c.momentum) and 0 <= c.momentum < 1, "momentum", "must be in [0, 1)",
         "0 (the book) or 0.9")
    need(is_number(c.weight_decay) and c.weight_decay >= 0, "weight_decay", "must be >= 0",
         "0 (the book) or about 5e-4")
    need(is_number(c.label_smoothing) and 0 <= c.label_smoothing < 1, "label_smoothing",
         "must be in [0, 1)", "0 (the book) or 0.1")
    one_of(SCHEDULES, "schedule", "schedule")
    need(c.subset is None or (is_int(c.subset) and c.subset >= NUM_CLASSES), "subset",
         f"must be empty or a whole number >= {NUM_CLASSES} (one image per class)",
         "leave it empty to train on everything")
    one_of(DATA_CHOICES, "data", "data choice")
    need(is_int(c.seed), "seed", "must be a whole number", "any integer, e.g. 0")
    one_of(DEVICES, "device", "device")
    for name in ("channels_last", "amp", "flip"):
        need(type(getattr(c, name)) is bool, name, "must be true or false", "true or false")
    need(is_int(c.log_every) and c.log_every >= 1, "log_every", "must be a whole number >= 1",
         "10")
    need(is_int(c.bn_recalibration) and 0 <= c.bn_recalibration <= 10_000, "bn_recalibration",
         "must be a whole number of batches >= 0", "0 keeps the moving averages, as the book does")
    need(type(c.compile) is bool, "compile", "must be true or false", "leave it off for short runs")
    need(type(c.cuda_graphs) is bool, "cuda_graphs", "must be true or false", "leave it off")
    need(not (c.cuda_graphs is True and c.compile is True), "cuda_graphs",
         "cannot be used with compile", "turn one of them off")
    need(not (c.cuda_graphs is True and c.device == "cpu"), "cuda_graphs",
         "needs a GPU (device is cpu)", "turn it off, or use device auto or cuda")
    need(c.max_steps is None or (is_int(c.max_steps) and c.max_steps >= 1), "max_steps",
         "must be empty or a whole number >= 1", "leave it empty to train all epochs")
    return problems
