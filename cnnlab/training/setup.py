"""Setting up a run: from a checked spec and config to the model, optimizer and data on the
device that will train them, with the layout, precision and batching rules of this machine.

Everything the loop needs is decided here, once, so `loop.fit` can read like train_ch6.
The facts about the machine (is there a GPU for "cuda", are there enough images for the
subset) are asked here too: TrainConfig checks values, not machines.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from cnnlab.arch.checks import SpecError
from cnnlab.arch.models import batch_norm_modules, build
from cnnlab.arch.specs import Spec
from cnnlab.errors import Problem
from cnnlab.training.config import ConfigError, TrainConfig
from cnnlab.training.data import DeviceData, FashionMNIST, load_fashion_mnist
from cnnlab.training.files import NUM_CLASSES
from cnnlab.training.sgd import SGD

STEP_DECAY = ((0.5, 0.1), (0.75, 0.01))  # "step" schedule: lr x 0.1 at half, x 0.01 at 3/4
# "anneal" schedule: the book's constant lr, then a straight line to zero over the last fifth of
# the steps. It keeps 90% of the constant lr's total (cosine keeps 50%), for the networks that
# are still learning at epoch 10, and still ends on small steps, which cosine showed helps.
ANNEAL_FROM = 0.8
# On a CPU, evaluation batches hold about this many pixels (188 images at 224 px), and at most
# EVAL_BATCH_CAP images: larger batches gain nothing there and answer a cancel later.
EVAL_PIXELS = 1024 * 96 * 96
EVAL_BATCH_CAP = 256


# ---------------------------------------------------------------- what this machine has


def visible_gpus() -> int:
    """How many GPUs torch sees on this machine (0 without CUDA)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def trains_on_gpu(device: str, gpus: int) -> bool:
    """Whether a config's `device` ("auto", "cpu" or "cuda") trains on a GPU of a machine with
    `gpus` GPUs: "auto" and "cuda" do when there is one. The one rule for where "auto" runs,
    used by resolve_device, the memory estimate and the job manager's slots."""
    return device in ("auto", "cuda") and gpus > 0


def resolve_device(name: str, gpus: int | None = None) -> torch.device:
    """The device a config's `device` trains on: "auto" takes a GPU when there is one.

    The one place that asks whether "cuda" can run: it depends on the machine, not the value.
    `gpus` counts the GPUs of the machine that will train (default: visible_gpus(); the job
    manager passes its own count). Raises ConfigError for "cuda" without a GPU.
    """
    if gpus is None:
        gpus = visible_gpus()
    if name == "cuda" and not gpus:
        raise ConfigError([Problem("device", f"CUDA is not available here (no GPU visible to "
                                   f"torch {torch.__version__})", "use device cpu or auto")])
    return torch.device("cuda" if trains_on_gpu(name, gpus) else "cpu")


def subset_problems(subset: int | None, available: int) -> list[Problem]:
    """A subset larger than the training images this machine has: the one message for it,
    before loading (resources.data_problems) and after (training_data)."""
    if subset is None or subset <= available:
        return []
    return [Problem("subset", f"{subset:,} is more than the {available:,} training images",
                    f"choose at most {available:,}")]


def load_data(config: TrainConfig) -> FashionMNIST:
    """Fashion-MNIST as `config.data` asks ("auto" falls back to the bundled sample), before any
    subset. Raises cnnlab.training.files.DataError with the places it looked."""
    if config.data == "auto":
        return load_fashion_mnist(allow_sample=True)
    return load_fashion_mnist(source=config.data)


def training_data(config: TrainConfig, data: FashionMNIST | None) -> FashionMNIST:
    """`data` (loaded if None) cut to the config's class-balanced subset. Raises ConfigError
    for a subset larger than the data."""
    data = data if data is not None else load_data(config)
    if config.subset is None:
        return data
    problems = subset_problems(config.subset, len(data.train_labels))
    if problems:
        raise ConfigError(problems)
    return data.subset(config.subset, config.seed)


def check_spec_fits_data(spec: Spec) -> None:
    """Fashion-MNIST's shape: one channel in, ten classes out. Raises SpecError."""
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


# ---------------------------------------------------------------- model, optimizer, schedule


def init_cnn(module: nn.Module) -> None:
    """The chapter's init: Xavier-uniform weights and zero biases for every Conv2d and Linear.

    The chapter's MXNet `train_ch6` calls `net.initialize(init=init.Xavier())`, the uniform
    Glorot rule of `nn.init.xavier_uniform_`, and Gluon's layers start their biases at zero
    (`bias_initializer='zeros'`). d2l's PyTorch `init_cnn` sets the weights only and leaves
    torch's default biases, uniform in +-1/sqrt(fan_in). That matters for NiN, whose class
    scores pass a ReLU: at init they hardly depend on the image, so a negative bias zeroes a
    class for every image and it gets no gradient (`bench/dead_scores.py`)."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


# Seeding and drawing the initial weights go through torch's one global generator; runs that
# start together in threads of one process (bench/gpu.py --in-process) take turns.
_INIT_LOCK = threading.Lock()


def make_model(spec: Spec, seed: int) -> nn.Module:
    """The spec's network, initialised from `seed` on the CPU, so a seed gives the same weights
    whatever device trains it, and whichever other thread starts a run at the same time."""
    with _INIT_LOCK:
        torch.manual_seed(seed)
        model = build(spec)
        model.apply(init_cnn)
    return model


def make_optimizer(model: nn.Module, config: TrainConfig) -> SGD | torch.optim.Optimizer:
    """SGD as the book trains (cnnlab.training.sgd: torch's update without the 1 s import of
    torch._dynamo that torch.optim's optimizers cost), or torch's Adam or AdamW."""
    params = model.parameters()
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    return SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


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
    if config.schedule == "anneal" and progress > ANNEAL_FROM:
        return config.lr * (1.0 - progress) / (1.0 - ANNEAL_FROM)
    return config.lr


def cpu_channels_last(spec: Spec, model: nn.Module) -> bool:
    """Whether channels-last is used on a CPU. oneDNN's channels-last convolutions run AlexNet,
    VGG, NiN, GoogLeNet, ResNet and DenseNet 1.2-1.4x faster (2-core EPYC, torch 2.14), but
    ResNet-18's weight gradients then sit 8.5e-3 from float64 instead of 4.3e-4 in NCHW (a 20x
    loss, mostly BatchNorm's; `bench/precision.py`), so networks with BatchNorm stay NCHW.
    LeNet's 6- and 16-channel convs run 10-16% slower in channels-last."""
    return spec.family != "lenet" and not batch_norm_modules(model)


def eval_batch_size(batch_size: int, device: torch.device, input_size: int) -> int:
    """Evaluation batches: on a GPU the training's own size (see `fixed_shapes`); elsewhere
    about EVAL_PIXELS, capped, never below the training's."""
    if fixed_shapes(device):
        return batch_size
    return max(batch_size, min(EVAL_BATCH_CAP, EVAL_PIXELS // input_size ** 2))


def fixed_shapes(device: torch.device) -> bool:
    """Whether every batch of a run on `device` should have one shape. On a GPU cuDNN's
    benchmark mode times every convolution's kernels again for each new input shape. In the
    H200 table of 2026-11-29 (bench/results, eight runs sharing the GPU) GoogLeNet, with the
    most distinct convolutions, reached its first step event after 30 to 45 s and then stood
    at epoch 1.0, where the short last batch and two evaluation shapes are first seen, from
    about 60 s to 121 s; no later epoch's end stalled. That points at the tuning; the next GPU
    run checks it (bench/gpu.py prints where each run's time went). So on a GPU the short last
    training batch is dropped and evaluation pads its last batch to the training's size."""
    return device.type == "cuda"


def drop_short_batch(n: int, batch_size: int, *, compile: bool, fixed: bool) -> bool:
    """Whether an epoch of `n` examples drops its short last batch: always when it would hold
    one example (BatchNorm's training statistics need two), and whenever there is one when
    the step is compiled (a short batch recompiles it, another ~30 s) or shapes are fixed. At
    most batch_size - 1 examples sit out an epoch, different ones each epoch."""
    short = n % batch_size
    return n > batch_size and (short == 1 or (short != 0 and (compile or fixed)))


def graphed_forward(model: nn.Module, sample: torch.Tensor,
                    amp: bool) -> tuple[Callable[[torch.Tensor], torch.Tensor], str | None]:
    """`model`'s training forward and backward captured as CUDA graphs
    (`torch.cuda.make_graphed_callables`): a step then launches two graphs instead of every
    kernel, which is what a launch-bound network (GoogLeNet, 21 ms a step on an H200 at batch
    128) waits on. The capture needs every batch shaped like `sample` (`fixed_shapes`) and
    autocast without its weight cache; it warms up on `sample` first (cuDNN tunes there; the
    three warm-up passes move BatchNorm's running statistics, not the weights).
    Returns (forward, None), or (model, why) when the capture fails: the run trains eagerly.

    A wrapper is captured, not `model`: make_graphed_callables replaces the forward of what it
    is given, and a captured forward would also serve precise BN (with the momentum of the
    capture baked in); `model` keeps its own forward for evaluation and precise BN."""
    step = nn.Sequential(model)  # the same parameters and buffers, graphed in model's place
    try:
        with torch.autocast("cuda", torch.bfloat16, enabled=amp, cache_enabled=False):
            return torch.cuda.make_graphed_callables(step, (sample,)), None
    # RuntimeError: an op that cannot be captured; AssertionError: the API's own checks (hooks,
    # buffers that require grad). Either way: say so, and train without.
    except (RuntimeError, AssertionError) as exc:
        first_line = (str(exc).splitlines() or [repr(exc)])[0]
        return model, f"CUDA graphs off: {first_line}"


# ---------------------------------------------------------------- the whole set-up


@dataclass
class Setup:
    """What the loop trains with, on its device. `model` is the plain module (checkpoints keep
    its parameter names); `forward` is the same model, compiled or captured as CUDA graphs
    when the config asks (`cuda_graphs` says whether the capture happened)."""

    model: nn.Module
    forward: Callable[[torch.Tensor], torch.Tensor]
    optimizer: SGD | torch.optim.Optimizer
    train_data: DeviceData
    test_data: DeviceData
    device: torch.device
    channels_last: bool  # the layout actually used (config.channels_last is a request)
    amp: bool  # whether bf16 autocast is actually used
    drop_last: bool
    steps_per_epoch: int
    total_steps: int
    eval_batch: int
    check_every: int  # steps between host reads of the losses (divergence checks)
    num_classes: int = 10  # the spec's: what chance accuracy and an untrained loss are
    cuda_graphs: bool = False  # the training step runs as CUDA graphs
    graphs_note: str | None = None  # why the config's cuda_graphs were not used, if so


def prepare(spec: Spec, config: TrainConfig, device: torch.device,
            dataset: FashionMNIST) -> Setup:
    """The model, optimizer and data of a run on `device`, with this machine's rules."""
    cuda = device.type == "cuda"
    model = make_model(spec, config.seed)
    # Tensor cores want NHWC; on a CPU only where it is both exact and faster.
    channels_last = config.channels_last and (cuda or cpu_channels_last(spec, model))
    # bf16 autocast needs no loss scaling; GPUs before Ampere lack bf16, so they stay float32.
    amp = cuda and config.amp and torch.cuda.is_bf16_supported()
    if cuda:
        # Fixed input sizes: let cuDNN time its kernels once and keep the fastest.
        torch.backends.cudnn.benchmark = True
    memory_format = torch.channels_last if channels_last else torch.preserve_format
    model = model.to(device, memory_format=memory_format)
    train_data, test_data = (
        DeviceData(images, labels, device, input_size=spec.input_size, channels_last=channels_last)
        for images, labels in ((dataset.train_images, dataset.train_labels),
                               (dataset.test_images, dataset.test_labels)))
    n, bs = len(train_data), config.batch_size
    drop_last = drop_short_batch(n, bs, compile=config.compile, fixed=fixed_shapes(device))
    steps_per_epoch = train_data.num_batches(bs, drop_last)
    forward: Callable[[torch.Tensor], torch.Tensor] = model
    graphed, graphs_note = False, None
    if config.compile:
        forward = torch.compile(model, dynamic=False)
    elif config.cuda_graphs and cuda:  # on a CPU there is nothing to capture: trains eagerly
        sample, _ = next(train_data.batches(bs, drop_last=drop_last))
        forward, graphs_note = graphed_forward(model, sample, amp)
        graphed = graphs_note is None
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    return Setup(
        model=model,
        forward=forward, cuda_graphs=graphed, graphs_note=graphs_note,
        optimizer=make_optimizer(model, config),
        train_data=train_data, test_data=test_data, device=device,
        channels_last=channels_last, amp=amp, drop_last=drop_last,
        steps_per_epoch=steps_per_epoch, total_steps=total_steps, num_classes=spec.num_classes,
        eval_batch=eval_batch_size(bs, device, spec.input_size),
        # On a CPU reading the loss every step costs nothing; on a GPU it would stall the
        # queue, so losses are kept on the device and checked at each step event.
        check_every=1 if device.type == "cpu" else config.log_every,
    )
