"""Training: the textbook's recipe (d2l `train_ch6`) as a loop that reports events, stops cleanly
on request or divergence, and runs unchanged on a CPU or a GPU.

`train(spec, config)` is the loop. `run_recorded(store, run_id)` runs it for a run in the store
(metrics, checkpoints, final status). `textbook_config(preset)` gives each chapter model the book's
learning rate, batch size and epochs; `TEXTBOOK_RESULTS` holds what the book reached with them.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.arch import presets
from cnnlab.training.data import NUM_CLASSES, DataError, DeviceData, FashionMNIST, load_fashion_mnist
from cnnlab.arch.models import batch_norm_modules, build
from cnnlab.runs.store import RunStore, Status, checkpoint_name
from cnnlab.arch.specs import Spec
from cnnlab.arch.checks import SpecError, check, is_int, is_number
from cnnlab.arch.parse import spec_from_data
from cnnlab.errors import Problem

Event = dict[str, Any]

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "step")
DATA_CHOICES = ("auto", "full", "sample")
DEVICES = ("auto", "cpu", "cuda")

# A run has diverged once its training loss is not finite, or above DIVERGE_FACTOR x the first
# step's loss (cross-entropy starts near ln 10 = 2.3, so ~115), or above DIVERGE_LIMIT anyway.
DIVERGE_FACTOR = 50.0
DIVERGE_LIMIT = 1e4
STEP_DECAY = ((0.5, 0.1), (0.75, 0.01))  # "step" schedule: lr x 0.1 at half, x 0.01 at 3/4
# Evaluation batches hold about this many pixels (1024 images at 96 px): large for speed, yet
# VGG at 224 px still fits. CPUs gain nothing from huge batches but answer a cancel later.
EVAL_PIXELS = 1024 * 96 * 96
EVAL_BATCH_CAP = {"cuda": 1024, "cpu": 256}


# ---------------------------------------------------------------- the config


@dataclass(frozen=True)
class TrainConfig:
    """Every training knob, with the textbook's defaults. JSON round trip: to_dict / from_dict."""

    epochs: int = 10
    batch_size: int = 256
    lr: float = 0.1
    optimizer: str = "sgd"  # "sgd" | "adam" | "adamw"
    momentum: float = 0.0  # SGD only; the book's train_ch6 uses plain SGD
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    schedule: str = "constant"  # "constant" | "cosine" | "step", applied per step
    subset: int | None = None  # class-balanced training subset size; None = all
    data: str = "auto"  # "auto" (full if found, else the sample) | "full" | "sample"
    seed: int = 0
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    channels_last: bool = True  # NHWC on CUDA; on CPUs only where exact and faster (see below)
    amp: bool = True  # CUDA only: bf16 autocast (no loss scaling needed, unlike fp16)
    flip: bool = False  # random left-right flips of training images
    log_every: int = 10  # a 'step' event every this many steps
    max_steps: int | None = None  # stop after this many steps in total (tests, benchmarks)
    # Before each evaluation, recompute BatchNorm statistics over this many training batches
    # ("precise BN"); 0 evaluates with the moving averages, as the book does. See
    # recalibrate_batch_norm for why this is on by default.
    bn_recalibration: int = 20
    # torch.compile the training step: fuses BN and ReLU into the convolutions' neighbours.
    # ResNet-18 at 96 px on a 2-core CPU: 105 -> 145 examples/s, after ~30 s of compiling.
    # Worth it for long runs only, so off by default.
    compile: bool = False

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
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError([Problem("config", f"unknown field(s): {', '.join(unknown)}",
                                       f"use only: {', '.join(known)}")])
        # JSON writes 1.0 as 1.0, but people write "lr": 1; the float fields accept ints.
        floats = {"lr", "momentum", "weight_decay", "label_smoothing"}
        values = {k: float(v) if k in floats and type(v) is int else v for k, v in data.items()}
        return cls(**values)


class ConfigError(SpecError):
    """A training config that cannot run; `problems` lists every error (field, message, fix)."""


def config_problems(config: TrainConfig) -> list[Problem]:
    """Every problem with the config's values, each naming the field and a fix. Never raises."""
    problems: list[Problem] = []

    def need(ok: bool, name: str, message: str, fix: str) -> None:
        if not ok:
            problems.append(Problem(name, f"{message}, got {getattr(config, name)!r}", fix))

    c = config
    need(is_int(c.epochs) and 1 <= c.epochs <= 10_000, "epochs", "must be a whole number >= 1",
         "the book trains for 10")
    need(is_int(c.batch_size) and 1 <= c.batch_size <= 65_536, "batch_size",
         "must be a whole number from 1 to 65536", "the book uses 128 or 256")
    need(is_number(c.lr) and c.lr > 0, "lr", "must be a positive number", "try the book's 0.1")
    need(c.optimizer in OPTIMIZERS, "optimizer", "unknown optimizer",
         f"use {', '.join(OPTIMIZERS)}")
    need(is_number(c.momentum) and 0 <= c.momentum < 1, "momentum", "must be in [0, 1)",
         "0 (the book) or 0.9")
    need(is_number(c.weight_decay) and c.weight_decay >= 0, "weight_decay", "must be >= 0",
         "0 (the book) or about 5e-4")
    need(is_number(c.label_smoothing) and 0 <= c.label_smoothing < 1, "label_smoothing",
         "must be in [0, 1)", "0 (the book) or 0.1")
    need(c.schedule in SCHEDULES, "schedule", "unknown schedule", f"use {', '.join(SCHEDULES)}")
    need(c.subset is None or (is_int(c.subset) and c.subset >= NUM_CLASSES), "subset",
         f"must be empty or a whole number >= {NUM_CLASSES} (one image per class)",
         "leave it empty to train on everything")
    need(c.data in DATA_CHOICES, "data", "unknown data choice", f"use {', '.join(DATA_CHOICES)}")
    need(is_int(c.seed), "seed", "must be a whole number", "any integer, e.g. 0")
    need(c.device in DEVICES, "device", "unknown device", f"use {', '.join(DEVICES)}")
    for name in ("channels_last", "amp", "flip"):
        need(type(getattr(c, name)) is bool, name, "must be true or false", "true or false")
    need(is_int(c.log_every) and c.log_every >= 1, "log_every", "must be a whole number >= 1",
         "10")
    need(is_int(c.bn_recalibration) and 0 <= c.bn_recalibration <= 10_000, "bn_recalibration",
         "must be a whole number of batches >= 0", "0 keeps the moving averages, as the book does")
    need(type(c.compile) is bool, "compile", "must be true or false", "leave it off for short runs")
    need(c.max_steps is None or (is_int(c.max_steps) and c.max_steps >= 1), "max_steps",
         "must be empty or a whole number >= 1", "leave it empty to train all epochs")
    return problems


# ---------------------------------------------------------------- the textbook's settings


@dataclass(frozen=True)
class Recipe:
    lr: float
    batch_size: int
    epochs: int
    source: str  # where the numbers come from


# Dive into Deep Learning chapter 7 (and 6.6 for LeNet): train_ch6 with plain SGD on these.
TEXTBOOK_RECIPES: dict[str, Recipe] = {
    "alexnet": Recipe(0.01, 128, 10, "d2l 7.1.4"),
    "vgg11-small": Recipe(0.05, 128, 10, "d2l 7.2.3"),
    "nin": Recipe(0.1, 128, 10, "d2l 7.3.3"),
    "nin-small": Recipe(0.05, 256, 5, "lecture notebook, seed 004"),
    "googlenet": Recipe(0.1, 128, 10, "d2l 7.4.3"),
    "lenet": Recipe(0.9, 256, 10, "d2l 6.6"),
    "bn-lenet-scratch": Recipe(1.0, 256, 10, "d2l 7.5.4"),
    "bn-lenet": Recipe(1.0, 256, 10, "d2l 7.5.5"),
    "resnet18": Recipe(0.05, 256, 10, "d2l 7.6.3"),
    "densenet": Recipe(0.1, 256, 10, "d2l 7.7.5"),
}
# Presets the book does not train borrow their family's textbook recipe (untested guesses).
FAMILY_RECIPE = {
    "alexnet": "alexnet", "vgg": "vgg11-small", "nin": "nin", "googlenet": "googlenet",
    "resnet": "resnet18", "densenet": "densenet",
}


@dataclass(frozen=True)
class TextbookResult:
    test_acc: float
    examples_per_s: float  # on the book's GPU, with its DataLoader pipeline
    section: str


# What train_ch6 printed after 10 epochs in each section of the chapter.
TEXTBOOK_RESULTS: dict[str, TextbookResult] = {
    "alexnet": TextbookResult(0.892, 3985.4, "7.1.4"),
    "vgg11-small": TextbookResult(0.926, 1780.0, "7.2.3"),
    "nin": TextbookResult(0.871, 2887.1, "7.3.3"),
    "googlenet": TextbookResult(0.898, 1887.9, "7.4.3"),
    "bn-lenet-scratch": TextbookResult(0.874, 16276.8, "7.5.4"),
    "bn-lenet": TextbookResult(0.814, 27746.0, "7.5.5"),
    "resnet18": TextbookResult(0.923, 4668.6, "7.6.3"),
    "densenet": TextbookResult(0.874, 4786.4, "7.7.5"),
}


def _recipe_name(spec: Spec) -> str:
    if spec.family == "lenet":
        return "lenet" if spec.batch_norm == "none" else "bn-lenet"
    return FAMILY_RECIPE[spec.family]


def textbook_config(preset: str) -> TrainConfig:
    """The book's lr, batch size and epochs for a preset (its family's for presets the book
    does not train). Raises KeyError listing the presets for an unknown name."""
    recipe = TEXTBOOK_RECIPES.get(preset) or TEXTBOOK_RECIPES[_recipe_name(presets.preset(preset))]
    return TrainConfig(lr=recipe.lr, batch_size=recipe.batch_size, epochs=recipe.epochs)


def default_config(spec: Spec) -> TrainConfig:
    """The textbook config for any spec: its preset's if it is one, else its family's."""
    for name, preset in presets.PRESETS.items():
        if preset == spec.replace(input_size=preset.input_size) and name in TEXTBOOK_RECIPES:
            return textbook_config(name)
    return textbook_config(_recipe_name(spec))


# ---------------------------------------------------------------- setting up a run


def resolve_device(name: str) -> torch.device:
    """"auto" picks CUDA when there is a GPU. Raises ConfigError for "cuda" without one."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError([Problem("device", "CUDA is not available here "
                                   f"(torch {torch.__version__})", "use device cpu or auto")])
    if name not in DEVICES:
        raise ConfigError([Problem("device", f"unknown device {name!r}",
                                   f"use {', '.join(DEVICES)}")])
    return torch.device(name)


def load_data(config: TrainConfig) -> FashionMNIST:
    """Fashion-MNIST as `config.data` asks ("auto" falls back to the bundled sample), before any
    subset. Raises cnnlab.training.data.DataError with the places it looked."""
    if config.data == "auto":
        return load_fashion_mnist(allow_sample=True)
    return load_fashion_mnist(source=config.data)


def _training_data(config: TrainConfig, data: FashionMNIST | None) -> FashionMNIST:
    data = data if data is not None else load_data(config)
    if config.subset is None:
        return data
    if config.subset > len(data.train_labels):
        raise ConfigError([Problem("subset", f"{config.subset:,} is more than the "
                                   f"{len(data.train_labels):,} training images here",
                                   "choose a smaller subset or the full data")])
    return data.subset(config.subset, config.seed)


def _check_spec_fits_data(spec: Spec) -> None:
    problems = []
    if spec.in_channels != 1:
        problems.append(Problem("in_channels", f"Fashion-MNIST images have 1 channel, the spec "
                                f"expects {spec.in_channels}", "set in_channels to 1"))
    if spec.num_classes != NUM_CLASSES:
        problems.append(Problem("num_classes", f"Fashion-MNIST has {NUM_CLASSES} classes, the "
                                f"spec has {spec.num_classes}",
                                f"set num_classes to {NUM_CLASSES}"))
    if problems:
        raise SpecError(problems)


def init_cnn(module: nn.Module) -> None:
    """d2l's `init_cnn`: Xavier-uniform weights for every Conv2d and Linear (the chapter's
    MXNet train_ch6 initialises with init.Xavier(), the same uniform Glorot rule)."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.xavier_uniform_(module.weight)


def make_model(spec: Spec, seed: int) -> nn.Module:
    """The spec's network, initialised from `seed` on the CPU, so a seed gives the same weights
    whatever device trains it."""
    torch.manual_seed(seed)
    model = build(spec)
    model.apply(init_cnn)
    return model


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = model.parameters()
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                           weight_decay=config.weight_decay)


def lr_at(config: TrainConfig, step: int, total_steps: int) -> float:
    """Learning rate for 0-based `step` of `total_steps` under the config's schedule."""
    progress = step / max(1, total_steps)
    if config.schedule == "cosine":
        return config.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    if config.schedule == "step":
        factor = 1.0
        for at, f in STEP_DECAY:
            if progress >= at:
                factor = f
        return config.lr * factor
    return config.lr


# ---------------------------------------------------------------- the loop


@dataclass
class TrainResult:
    """How a run ended. `model` is the trained network (on its training device)."""

    status: Status
    message: str
    metrics: Event  # the last epoch event (or step event when no epoch finished)
    examples_per_s: float  # training only: evaluation and callbacks excluded
    seconds: float  # wall time of the whole call
    epochs_done: int  # complete epochs
    steps: int
    data: str  # FashionMNIST.describe()
    data_source: str
    device: str
    params: int
    channels_last: bool  # the layout actually used (config.channels_last is a request)
    amp: bool  # whether bf16 autocast was actually used
    history: list[Event] = field(default_factory=list)  # every epoch event
    model: nn.Module | None = field(default=None, repr=False)

    @property
    def best_test_acc(self) -> float | None:
        accs = [e["test_acc"] for e in self.history if "test_acc" in e]
        return max(accs) if accs else None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types, without the model: what the run store keeps as the run's result."""
        return {
            "status": self.status.value, "message": self.message, "metrics": self.metrics,
            "examples_per_s": self.examples_per_s, "seconds": self.seconds,
            "epochs_done": self.epochs_done, "steps": self.steps, "data": self.data,
            "data_source": self.data_source, "device": self.device, "params": self.params,
            "channels_last": self.channels_last, "amp": self.amp,
            "best_test_acc": self.best_test_acc,
        }


class _Meter:
    """Running sums of loss and correct predictions over examples."""

    def __init__(self) -> None:
        self.loss, self.correct, self.n = 0.0, 0.0, 0

    def add(self, loss: float, correct: float, n: int) -> None:
        self.loss += loss * n
        self.correct += correct
        self.n += n

    def means(self) -> tuple[float, float]:
        return self.loss / max(1, self.n), self.correct / max(1, self.n)


class _Clock:
    """Training seconds only: stopped around evaluation and the caller's callbacks."""

    def __init__(self) -> None:
        self.total, self._since = 0.0, time.perf_counter()

    @contextmanager
    def paused(self) -> Iterator[None]:
        self.total += time.perf_counter() - self._since
        try:
            yield
        finally:
            self._since = time.perf_counter()

    def now(self) -> float:
        return self.total + time.perf_counter() - self._since


def recalibrate_batch_norm(model: nn.Module, images: Iterable[torch.Tensor]) -> int:
    """Set every BatchNorm layer's running mean and variance to their average over `images`
    (batches of training inputs), with the weights frozen: "precise BN" (Wu & Johnson,
    "Rethinking Batch in BatchNorm", 2021). Returns the number of batches used.

    Why: at the book's lr of 1.0, BN-LeNet's weights move so fast that the moving averages
    (which weigh the last ~10 batches) describe a slightly different network. Measured on the
    full data: test accuracy then swings between 0.79 and 0.87 from epoch to epoch, while the
    same weights with recomputed statistics score 0.878-0.890 from epoch 5 on.
    """
    norms = [m for _, m in batch_norm_modules(model)]
    if not norms:
        return 0
    saved = [(m, m.momentum) for m in norms]
    was_training = model.training
    model.train()
    count = 0
    try:
        with torch.no_grad():
            for count, x in enumerate(images, start=1):
                for m in norms:  # momentum 1/k turns the update into a running average
                    m.momentum = 1.0 / count
                model(x)
    finally:
        for m, momentum in saved:
            m.momentum = momentum
        model.train(was_training)
    return count


def evaluate(model: nn.Module, data: DeviceData, batch_size: int, *, amp: bool = False,
             should_stop: Callable[[], bool] | None = None) -> tuple[float, float] | None:
    """Mean cross-entropy and accuracy over a whole split, in eval mode without gradients.
    Returns None when `should_stop()` turns true (checked between batches)."""
    device = data.images.device
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    try:
        with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=amp):
            for x, y in data.batches(batch_size):
                if should_stop is not None and should_stop():
                    return None
                logits = model(x).float()
                loss_sum += F.cross_entropy(logits, y, reduction="sum")
                correct += (logits.argmax(dim=1) == y).sum()
    finally:
        model.train(was_training)
    n = max(1, len(data))
    return loss_sum.item() / n, correct.item() / n


def _divergence(losses: Iterable[float], first_step: int, first_loss: float | None,
                lr: float) -> str | None:
    """A message if one of these per-step losses is NaN/inf or far above the first loss."""
    for i, loss in enumerate(losses):
        step = first_step + i
        reference = loss if first_loss is None else first_loss
        limit = min(DIVERGE_LIMIT, DIVERGE_FACTOR * reference)
        if not math.isfinite(loss):
            why = f"training loss is {loss}"
        elif loss > limit:
            why = f"training loss {loss:.4g} > {limit:.4g} ({DIVERGE_FACTOR:g}x the first loss)"
        else:
            continue
        return f"diverged at step {step}: {why}; try a smaller learning rate (lr was {lr:g})"
    return None


def train(spec: Spec, config: TrainConfig = TrainConfig(), *,
          on_event: Callable[[Event], None] | None = None,
          should_stop: Callable[[], bool] | None = None,
          on_epoch_end: Callable[[int, nn.Module, Event], None] | None = None,
          data: FashionMNIST | None = None) -> TrainResult:
    """Train `spec`'s network on Fashion-MNIST as `config` says.

    on_event(event) gets a 'step' event every `log_every` steps (and after step 1) and an 'epoch'
    event after each evaluation. should_stop() is polled every step and between evaluation
    batches; keep it cheap. on_epoch_end(epoch, model, event) runs after each complete epoch
    (checkpoints). `data` skips loading (config.subset still applies).
    Raises SpecError / ConfigError for bad input and DataError when no data is found; a run that
    is cancelled or diverges returns normally with that status.
    """
    started = time.perf_counter()
    check(spec)
    _check_spec_fits_data(spec)
    device = resolve_device(config.device)
    dataset = _training_data(config, data)
    return _Loop(spec, config, device, dataset, on_event, should_stop, on_epoch_end, started).run()


def _cpu_channels_last(spec: Spec, model: nn.Module) -> bool:
    """Whether channels-last is used on a CPU. oneDNN's channels-last convolutions run AlexNet,
    VGG, NiN, GoogLeNet, ResNet and DenseNet 1.2-1.4x faster (2-core EPYC, torch 2.14), but
    ResNet-18's weight gradients then sit 8.5e-3 from float64 instead of 4.3e-4 in NCHW (a 20x
    loss, mostly BatchNorm's; `bench/precision.py`), so networks with BatchNorm stay NCHW.
    LeNet's 6- and 16-channel convs run 10-16% slower in channels-last."""
    return spec.family != "lenet" and not batch_norm_modules(model)


class _Loop:
    """One training run's state; `run()` is train_ch6 with events, cancel and divergence checks."""

    def __init__(self, spec: Spec, config: TrainConfig, device: torch.device,
                 dataset: FashionMNIST, on_event: Callable[[Event], None] | None,
                 should_stop: Callable[[], bool] | None,
                 on_epoch_end: Callable[[int, nn.Module, Event], None] | None,
                 started: float) -> None:
        self.spec, self.config, self.device, self.dataset = spec, config, device, dataset
        self.on_event, self.should_stop, self.on_epoch_end = on_event, should_stop, on_epoch_end
        self.started = started
        cuda = device.type == "cuda"
        self.model = make_model(spec, config.seed)
        # Tensor cores want NHWC; on a CPU only where it is both exact and faster.
        self.channels_last = config.channels_last and (cuda or _cpu_channels_last(spec, self.model))
        # bf16 autocast needs no loss scaling; GPUs before Ampere lack bf16, so they stay float32.
        self.amp = cuda and config.amp and torch.cuda.is_bf16_supported()
        if cuda:
            # Fixed input sizes: let cuDNN time its kernels once and keep the fastest.
            torch.backends.cudnn.benchmark = True
        memory_format = torch.channels_last if self.channels_last else torch.preserve_format
        self.model = self.model.to(device, memory_format=memory_format)
        self.optimizer = make_optimizer(self.model, config)
        self.train_data, self.test_data = (
            DeviceData(images, labels, device, input_size=spec.input_size,
                       channels_last=self.channels_last)
            for images, labels in ((dataset.train_images, dataset.train_labels),
                                   (dataset.test_images, dataset.test_labels)))
        n, bs = len(self.train_data), config.batch_size
        # A last batch of one example breaks BatchNorm's training statistics; drop only that one.
        # A compiled step would recompile for a short last batch (another ~30 s): drop it then.
        self.drop_last = (n % bs == 1 or (config.compile and n % bs != 0)) and n > bs
        # The original module stays in self.model: checkpoints keep plain parameter names.
        self.forward = torch.compile(self.model, dynamic=False) if config.compile else self.model
        self.steps_per_epoch = self.train_data.num_batches(bs, self.drop_last)
        self.total_steps = config.epochs * self.steps_per_epoch
        if config.max_steps is not None:
            self.total_steps = min(self.total_steps, config.max_steps)
        self.eval_batch = max(bs, min(EVAL_BATCH_CAP[device.type],
                                      EVAL_PIXELS // spec.input_size ** 2))
        # On a CPU reading the loss every step costs nothing; on a GPU it would stall the
        # queue, so losses are kept on the device and checked at each step event.
        self.check_every = 1 if device.type == "cpu" else config.log_every
        self.generator = torch.Generator().manual_seed(config.seed)  # CPU: same order everywhere
        self.clock = _Clock()
        self.step = 0
        self.lr = config.lr
        self.first_loss: float | None = None
        self.pending: list[tuple[torch.Tensor, torch.Tensor, int]] = []
        self.interval, self.interval_start = _Meter(), 0.0
        self.epoch_meter, self.epoch_seconds = _Meter(), 0.0
        self.history: list[Event] = []
        self.last_eval_s: float | None = None
        self.examples = 0

    # -- reporting --------------------------------------------------------------------------

    def _emit(self, event: Event) -> None:
        if self.on_event is not None:
            with self.clock.paused():
                self.on_event(event)

    def _stop_requested(self) -> bool:
        return self.should_stop is not None and bool(self.should_stop())

    def _flush(self, epoch_meter: _Meter) -> str | None:
        """Bring pending per-step losses to the host (one sync); a divergence message or None."""
        if not self.pending:
            return None
        losses = torch.stack([p[0] for p in self.pending]).float().tolist()
        corrects = torch.stack([p[1] for p in self.pending]).tolist()
        sizes = [p[2] for p in self.pending]
        first = self.step - len(self.pending) + 1
        self.pending.clear()
        if self.first_loss is None:
            self.first_loss = losses[0]
        diverged = _divergence(losses, first, self.first_loss, self.lr)
        if diverged is not None:
            return diverged
        for loss, correct, n in zip(losses, corrects, sizes):
            self.interval.add(loss, correct, n)
            epoch_meter.add(loss, correct, n)
        return None

    def _step_event(self, extra: Event) -> Event:
        loss, acc = self.interval.means()
        now = self.clock.now()
        seconds = now - self.interval_start
        per_step = now / max(1, self.step)
        remaining = self.total_steps - self.step
        evals_left = math.ceil(remaining / self.steps_per_epoch) if remaining else 0
        # Before the first evaluation, guess it as a forward pass: a third of a training step.
        eval_s = self.last_eval_s if self.last_eval_s is not None else (
            len(self.test_data) / max(1, self.config.batch_size) * per_step / 3)
        event = {
            "kind": "step", "step": self.step, "time": time.time(),
            "epoch": self.step / self.steps_per_epoch,
            "train_loss": loss, "train_acc": acc,
            "examples_per_s": self.interval.n / seconds if seconds > 0 else 0.0,
            "eta_s": remaining * per_step + evals_left * eval_s,
            "lr": self.lr, "total_steps": self.total_steps, **extra,
        }
        self.interval, self.interval_start = _Meter(), now
        return event

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> TrainResult:
        status, message = Status.DONE, ""
        epochs_done, metrics = 0, {}
        self.model.train()
        for epoch in range(self.config.epochs):
            outcome = self._train_epoch(epoch)
            if outcome is not None:
                status, message = outcome
                break
            epoch_event = self._evaluate_epoch()
            if epoch_event is None:
                status = Status.CANCELLED
                message = f"cancelled during evaluation after step {self.step}"
                break
            metrics = epoch_event
            complete = self.step == (epoch + 1) * self.steps_per_epoch
            if complete:
                epochs_done = epoch + 1
                if self.on_epoch_end is not None:
                    with self.clock.paused():
                        self.on_epoch_end(epoch + 1, self.model, epoch_event)
            if self.step >= self.total_steps:
                if not complete:
                    message = f"stopped after max_steps={self.config.max_steps} steps"
                break
        if status is Status.DONE and not message:
            message = f"trained {epochs_done} epochs ({self.step} steps)"
        return self._result(status, message, epochs_done, metrics)

    def _train_epoch(self, epoch: int) -> tuple[Status, str] | None:
        """One pass over the training set (or up to max_steps); (status, message) to stop."""
        config, meter = self.config, _Meter()
        self.epoch_meter, epoch_clock = meter, self.clock.now()
        for x, y in self.train_data.batches(config.batch_size, shuffle=True,
                                            generator=self.generator, flip=config.flip,
                                            drop_last=self.drop_last):
            if self._stop_requested():
                return Status.CANCELLED, f"cancelled at step {self.step} (epoch {epoch + 1})"
            self._train_step(x, y)
            first_event = self.step == 1
            log = first_event or self.step % config.log_every == 0
            if log or self.step % self.check_every == 0:
                diverged = self._flush(meter)
                if diverged is not None:
                    return Status.DIVERGED, diverged
            if log:
                extra: Event = {}
                if first_event:  # say once, up front, what the numbers are measured on
                    extra = {"data": self.dataset.describe(),
                             "data_source": str(self.dataset.source), "device": str(self.device),
                             "channels_last": self.channels_last, "amp": self.amp}
                self._emit(self._step_event(extra))
            if self.step >= self.total_steps:
                break
        diverged = self._flush(meter)
        if diverged is not None:
            return Status.DIVERGED, diverged
        self.epoch_seconds = self.clock.now() - epoch_clock
        return None

    def _train_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.lr = lr_at(self.config, self.step, self.total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.amp):
            logits = self.forward(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=self.config.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        correct = (logits.detach().argmax(dim=1) == y).sum()
        self.pending.append((loss.detach(), correct, len(y)))
        self.step += 1
        self.examples += len(y)

    def _evaluate_epoch(self) -> Event | None:
        with self.clock.paused():
            eval_start = time.perf_counter()
            self._recalibrate_batch_norm()
            scores = evaluate(self.model, self.test_data, self.eval_batch, amp=self.amp,
                              should_stop=self.should_stop)
            self.last_eval_s = time.perf_counter() - eval_start
        if scores is None:
            return None
        train_loss, train_acc = self.epoch_meter.means()
        event = {
            "kind": "epoch", "epoch": round(self.step / self.steps_per_epoch, 4), "step": self.step,
            "time": time.time(), "train_loss": train_loss, "train_acc": train_acc,
            "test_loss": scores[0], "test_acc": scores[1],
            "examples_per_s": self.epoch_meter.n / max(self.epoch_seconds, 1e-9),
            "elapsed": time.perf_counter() - self.started,
        }
        self.history.append(event)
        self._emit(event)
        return event

    def _recalibrate_batch_norm(self) -> None:
        batches = self.config.bn_recalibration
        if not batches:
            return
        # A generator of its own, so the training order is the same with or without this.
        generator = torch.Generator().manual_seed(self.config.seed + self.step)
        images = (x for x, _ in self.train_data.batches(self.config.batch_size, shuffle=True,
                                                         generator=generator))
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.amp):
            recalibrate_batch_norm(self.model, itertools.islice(images, batches))

    def _result(self, status: Status, message: str, epochs_done: int,
                metrics: Event) -> TrainResult:
        train_s = self.clock.now()
        if not metrics:  # no evaluation happened: report the running training averages
            loss, acc = self.interval.means()
            metrics = {"train_loss": loss, "train_acc": acc} if self.interval.n else {}
        return TrainResult(
            status=status, message=message, metrics=metrics,
            examples_per_s=self.examples / train_s if train_s > 0 else 0.0,
            seconds=time.perf_counter() - self.started, epochs_done=epochs_done, steps=self.step,
            data=self.dataset.describe(), data_source=str(self.dataset.source),
            device=str(self.device), params=sum(p.numel() for p in self.model.parameters()),
            channels_last=self.channels_last, amp=self.amp, history=self.history, model=self.model)


# ---------------------------------------------------------------- recorded runs

WRITE_EVERY_S = 1.0  # metric events are written to the store in batches at most this often
POLL_EVERY_S = 0.5  # how often the store's cancel flag is read


class _Recorder:
    """Bridges the loop and the run store: buffered metrics, rate-limited cancel polls,
    checkpoints, and an optional tqdm bar."""

    def __init__(self, store: RunStore, run_id: str, meta: dict[str, Any], progress: bool) -> None:
        self.store, self.run_id, self.meta = store, run_id, meta
        self.buffer: list[Event] = []
        self.last_write = time.monotonic()
        self.last_poll = -math.inf
        self.cancelled = False
        self.bar: Any = None
        self.progress = progress

    def on_event(self, event: Event) -> None:
        self.buffer.append(event)
        if event["kind"] == "epoch" or time.monotonic() - self.last_write >= WRITE_EVERY_S:
            self.flush()
        if self.progress:
            self._show(event)

    def flush(self) -> None:
        if self.buffer:
            self.store.add_metrics(self.run_id, self.buffer)
            self.buffer = []
        self.last_write = time.monotonic()

    def should_stop(self) -> bool:
        now = time.monotonic()
        if not self.cancelled and now - self.last_poll >= POLL_EVERY_S:
            self.last_poll = now
            self.cancelled = self.store.cancel_requested(self.run_id)
        return self.cancelled

    def on_epoch_end(self, epoch: int, model: nn.Module, event: Event) -> None:
        self.save(checkpoint_name(epoch), model, {"epoch": epoch, "metrics": event})

    def save(self, name: str, model: nn.Module, meta: dict[str, Any]) -> None:
        # Plain contiguous CPU tensors: the checkpoint loads anywhere, with weights_only=True.
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        self.store.save_checkpoint(self.run_id, name, state, {**self.meta, **meta})

    def _show(self, event: Event) -> None:
        from tqdm import tqdm  # the CLI's bar; workers never pay for the import

        if self.bar is None and event["kind"] == "step":
            self.bar = tqdm(total=event["total_steps"], unit="step", dynamic_ncols=True,
                            file=sys.stderr)
        if event["kind"] == "step":
            self.bar.update(event["step"] - self.bar.n)
            self.bar.set_postfix(loss=f"{event['train_loss']:.3f}", acc=f"{event['train_acc']:.3f}",
                                 ex_s=f"{event['examples_per_s']:,.0f}")
        elif self.bar is not None:
            self.bar.write(f"epoch {event['epoch']:g}: loss {event['train_loss']:.3f}, "
                           f"train acc {event['train_acc']:.3f}, test acc {event['test_acc']:.3f}, "
                           f"{event['examples_per_s']:,.0f} examples/s", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def describe_error(exc: BaseException) -> str:
    """One clear line for a run's message: the problems of a bad spec or config, the data
    finder's explanation, advice for out-of-memory, else the exception's type and text."""
    if isinstance(exc, ConfigError):
        return "invalid training config: " + "; ".join(str(p) for p in exc.problems)
    if isinstance(exc, SpecError):
        return "invalid spec: " + "; ".join(str(p) for p in exc.problems)
    if isinstance(exc, DataError):
        return str(exc)
    if isinstance(exc, torch.OutOfMemoryError):
        return f"out of memory: {exc}. Fix: lower the batch size, the input size or the width."
    return f"{type(exc).__name__}: {exc}"


def _finish(store: RunStore, run_id: str, status: Status, message: str,
            result: dict[str, Any] | None = None) -> None:
    """Finish the run unless someone else already did (e.g. marked it interrupted)."""
    try:
        store.finish(run_id, status, message, result)
    except ValueError as exc:  # not running any more: keep the status that was set
        print(f"run {run_id}: could not record {status}: {exc}", file=sys.stderr)


def run_recorded(store: RunStore, run_id: str, *, progress: bool = False) -> Status:
    """Execute a run already marked running in `store`: read its spec and config, train, write
    metrics (batched), checkpoints each epoch and "final", and finish it as done, cancelled,
    diverged or failed. Any exception becomes a failed run with a clear message (the traceback
    goes to the result's "traceback"); Ctrl-C or SystemExit cancels the run and re-raises.
    Raises ValueError only if the run is not running."""
    run = store.get(run_id)
    if run.status is not Status.RUNNING:
        raise ValueError(f"run {run_id} is {run.status}, not running; mark it running first")
    recorder = _Recorder(store, run_id, {"run_id": run_id, "model": run.model, "spec": run.spec,
                                         "config": run.config}, progress)
    try:
        spec = spec_from_data(run.spec)
        config = TrainConfig.from_dict(run.config)
        device = resolve_device(config.device)
        data = load_data(config)
        store.update_result(run_id, {"data": data.describe(), "data_source": str(data.source),
                                     "device": str(device), "pid": os.getpid()})
        if progress:
            print(f"data: {data.describe()}", file=sys.stderr)
        result = train(spec, config, on_event=recorder.on_event, should_stop=recorder.should_stop,
                       on_epoch_end=recorder.on_epoch_end, data=data)
        recorder.flush()
        if result.status in (Status.DONE, Status.CANCELLED) and result.model is not None:
            recorder.save("final", result.model, {"epoch": result.epochs_done, "step": result.steps,
                                                  "status": result.status.value,
                                                  "metrics": result.metrics})
        _finish(store, run_id, result.status, result.message, result.to_dict())
        return result.status
    except (KeyboardInterrupt, SystemExit) as exc:
        _flush_quietly(recorder)
        _finish(store, run_id, Status.CANCELLED, f"interrupted ({type(exc).__name__})")
        raise
    except Exception as exc:
        _flush_quietly(recorder)
        _finish(store, run_id, Status.FAILED, describe_error(exc),
                {"traceback": traceback.format_exc()})
        return Status.FAILED
    finally:
        recorder.close()


def _flush_quietly(recorder: _Recorder) -> None:
    # Keep the metrics gathered so far; the store may be the thing that failed.
    try:
        recorder.flush()
    except Exception as exc:
        print(f"could not write the last metrics: {exc}", file=sys.stderr)
