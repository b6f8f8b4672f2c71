"""Look inside a network: its first-layer filters, the feature maps of one image block by block,
every BatchNorm layer's gamma and beta (d2l 7.5.4, "let us look at gamma and beta"), and its
predictions with a confusion matrix.

Pure functions on CPU tensors, no Streamlit: the Inside page, the tests and a notebook all call
the same code. Models come from a run's checkpoint (`load_run_model`) or, untrained, from a spec
with the same Xavier initialisation that training starts from (`untrained_model`); the page's
`Subject` names either by strings that key its caches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from cnnlab.arch.checks import SpecError
from cnnlab.arch.models import batch_norm_modules, build
from cnnlab.analysis.layers import inspect_spec
from cnnlab.arch.parse import spec_from_data, spec_from_json
from cnnlab.arch.specs import Spec
from cnnlab.errors import CnnlabError
from cnnlab.runs.store import Run, RunStore, Status
from cnnlab.training.data import to_input
from cnnlab.training.files import NUM_CLASSES
from cnnlab.training.setup import make_model
from cnnlab.views.text import markdown_text

PREDICT_BATCH = 256
# The first BN layer's gamma and beta after 10 epochs of the from-scratch BN-LeNet, as d2l 7.5.4
# printed them (MXNet, lr 1.0): something to hold our own numbers against.
TEXTBOOK_FIRST_BN = {
    "section": "7.5.4",
    "gamma": (2.1604235, 1.0069635, 2.871352, 1.5488696, 1.9600464, 1.897505),
    "beta": (1.271176, -0.2546511, -2.9246166, -1.6069758, -0.2943907, -0.27459794),
}
# How much arithmetic the page may spend on predictions by default: about a few seconds on
# two CPU cores. BN-LeNet fits all 1,000 sample images; VGG-16 at 224 px gets the minimum.
EVAL_FLOPS_BUDGET = 1.5e11
EVAL_SIZES = (50, 100, 200, 500, 1000)


class InsideError(CnnlabError):
    """A model cannot be looked at: no checkpoint yet, a bad spec, weights that do not fit."""


class NoCheckpoint(InsideError, LookupError):
    """The run has saved no checkpoint (yet), or not the one asked for."""


class BNLayer(NamedTuple):
    """One BatchNorm layer's per-channel numbers, all 1-D CPU tensors of length C."""

    path: str
    gamma: torch.Tensor
    beta: torch.Tensor
    running_mean: torch.Tensor | None
    running_var: torch.Tensor | None


@dataclass(frozen=True)
class Evaluation:
    """Predictions on N images: probs (N, classes), preds (N,), targets (N,), the confusion
    matrix (rows: true class, columns: predicted class) and the accuracy."""

    probs: torch.Tensor
    preds: torch.Tensor
    targets: torch.Tensor
    matrix: torch.Tensor

    @property
    def n(self) -> int:
        return len(self.targets)

    @property
    def accuracy(self) -> float:
        return float(self.matrix.diagonal().sum()) / max(1, self.n)

    def mistakes(self, limit: int | None = None) -> list[int]:
        """Indices of the wrongly predicted images, in order (the first `limit` of them)."""
        wrong = (self.preds != self.targets).nonzero().flatten().tolist()
        return wrong if limit is None else wrong[:limit]

    def never_predicted(self) -> list[int]:
        """The classes some of these images belong to that no image is predicted as."""
        shown, predicted = self.matrix.sum(dim=1), self.matrix.sum(dim=0)
        return [c for c in range(len(shown)) if shown[c] > 0 and predicted[c] == 0]


# ---------------------------------------------------------------- models


def run_spec(run: Run) -> Spec:
    """The run's spec as a Spec. Raises InsideError when the stored spec is no longer valid."""
    try:
        return spec_from_data(run.spec)
    except SpecError as exc:
        problems = "; ".join(str(p) for p in exc.problems)
        raise InsideError(f"run {run.id}: its spec is not valid: {problems}") from None


def run_seed(run: Run) -> int:
    seed = run.config.get("seed", 0)
    return seed if type(seed) is int else 0


def latest_checkpoint(store: RunStore, run_id: str) -> str | None:
    """"final" if the run has it, else its latest epoch checkpoint, else None."""
    names = store.checkpoints(run_id)
    if "final" in names:
        return "final"
    epochs = [n for n in names if n.startswith("epoch-")]
    return max(epochs) if epochs else None


def load_run_model(store: RunStore, run_id: str, checkpoint: str = "final") -> nn.Module:
    """The run's network with the weights of `checkpoint` ("final", "epoch-003", ...), on the
    CPU in eval mode. The checkpoint is loaded with weights_only=True.
    Raises KeyError for an unknown run, NoCheckpoint when that checkpoint does not exist,
    InsideError for a bad spec or weights that do not fit the spec."""
    run = store.get(run_id)
    available = store.checkpoints(run_id)
    if checkpoint not in available:
        have = ", ".join(available) if available else "none yet (one is saved after each epoch)"
        raise NoCheckpoint(f"run {run_id} has no checkpoint {checkpoint!r}; it has: {have}")
    spec = run_spec(run)
    model = build(spec)
    state = store.load_checkpoint(run_id, checkpoint)["state_dict"]
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise InsideError(f"run {run_id}: checkpoint {checkpoint!r} does not fit its spec: "
                          f"{str(exc).splitlines()[0]}") from None
    return model.eval()


def untrained_model(spec: Spec, seed: int = 0) -> nn.Module:
    """The network exactly as training starts it (`setup.make_model`: Xavier-uniform weights
    and zero biases for convs and dense layers, from `seed`), on the CPU in eval mode."""
    return make_model(spec, seed).eval()


# ---------------------------------------------------------------- what the model holds


def first_conv(model: nn.Module) -> nn.Conv2d:
    """The first Conv2d in the model's module order. Raises InsideError if there is none."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module
    raise InsideError("the model has no Conv2d layer")


def first_layer_filters(model: nn.Module) -> torch.Tensor:
    """The first convolution's weights, C_out x C_in x k x k, detached on the CPU."""
    return first_conv(model).weight.detach().cpu().clone()


def batch_norm_layers(model: nn.Module) -> list[BNLayer]:
    """Every BatchNorm layer in module order: torch's BatchNorm1d/2d (weight, bias, running_mean,
    running_var) and d2l's from-scratch `BatchNorm` (gamma, beta, moving_mean, moving_var shaped
    (1, C) or (1, C, 1, 1)), each flattened to per-channel vectors. A torch layer without affine
    parameters reports gamma 1 and beta 0; one without running statistics reports None."""
    layers = []
    for path, module in batch_norm_modules(model):
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            c = module.num_features
            gamma = module.weight if module.weight is not None else torch.ones(c)
            beta = module.bias if module.bias is not None else torch.zeros(c)
            mean, var = module.running_mean, module.running_var
        else:  # the book's from-scratch BatchNorm; affine=False (exercise 7.5.5): no gamma, beta
            mean, var = module.moving_mean, module.moving_var
            gamma = module.gamma if module.gamma is not None else torch.ones_like(mean)
            beta = module.beta if module.beta is not None else torch.zeros_like(mean)
        layers.append(BNLayer(path, _vector(gamma), _vector(beta),
                              None if mean is None else _vector(mean),
                              None if var is None else _vector(var)))
    return layers


def _vector(t: torch.Tensor) -> torch.Tensor:
    return t.detach().cpu().reshape(-1).clone()


# ---------------------------------------------------------------- running it


def feature_maps(model: nn.Module, image: torch.Tensor, input_size: int,
                 include_input: bool = False) -> list[tuple[str, torch.Tensor]]:
    """What each top-level block outputs for one image: [(block name, C x H x W)], in order.

    `image` is a uint8 H x W (or 1 x H x W) Fashion-MNIST image; it is resized to `input_size`
    as in training. Blocks whose output is not a feature map (flatten, dense layers) are left
    out. With `include_input`, the first entry is ("input", 1 x S x S), what the network sees."""
    if image.dim() == 3:
        image = image[0]
    if image.dim() != 2:
        raise ValueError(f"image must be H x W or 1 x H x W, got {tuple(image.shape)}")
    x = to_input(image[None].cpu(), input_size=input_size)
    captured: list[tuple[str, torch.Tensor]] = []

    def hook(name: str):
        def keep(_module: nn.Module, _args: object, output: object) -> None:
            if isinstance(output, torch.Tensor) and output.dim() == 4:
                captured.append((name, output[0].detach().float().cpu().clone()))
        return keep

    handles = [child.register_forward_hook(hook(name)) for name, child in model.named_children()]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return ([("input", x[0])] if include_input else []) + captured


def predict(model: nn.Module, images_u8: torch.Tensor, input_size: int,
            batch_size: int = PREDICT_BATCH) -> tuple[torch.Tensor, torch.Tensor]:
    """Class probabilities (N, classes) and predicted labels (N,), on the CPU, for uint8
    N x H x W images, in eval mode without gradients, computed on the model's device."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    probs = []
    try:
        with torch.no_grad():
            for start in range(0, len(images_u8), batch_size):
                x = to_input(images_u8[start:start + batch_size].to(device), input_size=input_size)
                probs.append(torch.softmax(model(x).float(), dim=1).cpu())
    finally:
        model.train(was_training)
    if not probs:
        return torch.empty(0, NUM_CLASSES), torch.empty(0, dtype=torch.long)
    p = torch.cat(probs)
    return p, p.argmax(dim=1)


def confusion_matrix(preds: torch.Tensor, targets: torch.Tensor,
                     num_classes: int = NUM_CLASSES) -> torch.Tensor:
    """Counts, num_classes x num_classes: row = true class, column = predicted class."""
    preds, targets = preds.long().cpu(), targets.long().cpu()
    if preds.shape != targets.shape:
        raise ValueError(f"{len(preds)} predictions for {len(targets)} targets")
    flat = torch.bincount(targets * num_classes + preds, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def evaluate_images(model: nn.Module, images_u8: torch.Tensor, targets: torch.Tensor,
                    input_size: int) -> Evaluation:
    """`predict` plus the confusion matrix and accuracy against `targets`."""
    probs, preds = predict(model, images_u8, input_size)
    num_classes = probs.shape[1] if probs.dim() == 2 and probs.shape[1] else NUM_CLASSES
    return Evaluation(probs, preds, targets.long().cpu(),
                      confusion_matrix(preds, targets, num_classes))


def suggested_eval_size(flops_per_image: float, budget: float = EVAL_FLOPS_BUDGET,
                        sizes: tuple[int, ...] = EVAL_SIZES) -> int:
    """The largest of `sizes` whose forward passes fit `budget` FLOPs (at least the smallest)."""
    fits = [n for n in sizes if n * max(flops_per_image, 1.0) <= budget]
    return max(fits) if fits else min(sizes)



# ---------------------------------------------------------------- what the page may show

LATEST = "latest"  # the checkpoint choice that follows a run's newest checkpoint


@dataclass(frozen=True)
class Subject:
    """The network on show: its spec, the key of its weights, ("run", run id, checkpoint) or
    ("spec", spec JSON, seed), strings so that they key caches, and for a run the key of its
    weights before training (the untrained model from the run's seed)."""

    spec: Spec
    key: tuple[str, str, str]
    before: tuple[str, str, str] | None = None
    after: str = ""  # the filters' "after" label: "After (epoch-003)"

    @property
    def trained(self) -> bool:
        """A run's weights, not a spec's untrained start."""
        return self.key[0] == "run"

    @classmethod
    def of_run(cls, run: Run, checkpoint: str) -> Subject:
        """A run's network at `checkpoint`. Raises InsideError when its spec is not valid."""
        spec = run_spec(run)
        return cls(spec, ("run", run.id, checkpoint),
                   ("spec", spec.to_json(), str(run_seed(run))), f"After ({checkpoint})")

    @classmethod
    def of_spec(cls, spec: Spec, seed: int) -> Subject:
        """An untrained network, as training from `seed` would start it."""
        return cls(spec, ("spec", spec.to_json(), str(seed)))


def subject_model(store: RunStore, key: tuple[str, str, str]) -> nn.Module:
    """The model a Subject's `key` (or `before`) names: a run's checkpoint, or an untrained
    spec. Raises as `load_run_model` does, or SpecError for a spec that does not read."""
    kind, ident, detail = key
    if kind == "run":
        return load_run_model(store, ident, detail)
    return untrained_model(spec_from_json(ident), int(detail))


def checkpoint_choices(store: RunStore, run_id: str) -> list[str]:
    """The checkpoint picker's options: LATEST, then the run's checkpoints newest first."""
    return [LATEST] + store.checkpoints(run_id)[::-1]


def checkpoint_option(choice: str, latest: str | None) -> str:
    """A checkpoint choice as the picker words it: 'latest (epoch-003)' while one exists."""
    return f"latest ({latest})" if choice == LATEST and latest else choice


def chosen_checkpoint(choice: str, latest: str | None) -> str | None:
    """The checkpoint a choice stands for; None for LATEST before the first is saved."""
    return latest if choice == LATEST else choice


def subject_caption(name: str, spec: Spec, weights: str) -> str:
    """Markdown: '**bn-lenet** (lenet) at 28×28 px · 44,878 parameters · `weights`', the name
    escaped (a run's model may be anyone's text)."""
    table = inspect_spec(spec)
    return (f"**{markdown_text(name)}** ({spec.family}) at {spec.input_size}×{spec.input_size} px"
            f" · {table.total_params:,} parameters · {weights}")


def eval_sizes(available: int) -> list[int]:
    """How many test images the predictions may use: the EVAL_SIZES within `available`."""
    return [n for n in EVAL_SIZES if n <= available]


def gallery(result: Evaluation, mistakes: bool, size: int) -> list[int]:
    """The images the gallery shows: the first `size` mistakes, or the first `size` images."""
    return result.mistakes(size) if mistakes else list(range(min(size, result.n)))



def runs_with_weights(store: RunStore) -> list[Run]:
    """Runs whose weights can be looked at: those with a checkpoint, and running ones (their
    first checkpoint comes after an epoch). Raises StoreError when the store is unreadable."""
    return [r for r in store.list() if r.status is Status.RUNNING or store.checkpoints(r.id)]


def fits_fashion_mnist(spec: Spec) -> bool:
    """Whether the network takes Fashion-MNIST's 1-channel images and predicts its classes:
    only then can it show feature maps of, and predict, the test images."""
    return spec.in_channels == 1 and spec.num_classes == NUM_CLASSES


def layers_to_expand(paths: list[str], at_most: int = 4) -> list[str]:
    """The BatchNorm layers drawn channel by channel at first: all of a small network's, else
    the first (ResNet's and DenseNet's dozens would fill the page)."""
    return paths if len(paths) <= at_most else paths[:1]


def never_predicted_note(result: Evaluation, spec: Spec, trained: bool,
                         class_names: tuple[str, ...] | list[str]) -> str | None:
    """Markdown naming the classes a trained network never predicts on these images, with the
    likely reason for NiN; None when it predicts every class shown, or is untrained (an
    untrained network gives nearly every image the same scores and picks few classes)."""
    missing = result.never_predicted()
    if not trained or not missing:
        return None
    names = ", ".join(f"**{markdown_text(class_names[c])}**" for c in missing)
    note = f"Never predicted on these images: {names}, so their accuracy is 0."
    if spec.family == "nin":
        return note + (
            " NiN's last block ends in a ReLU on the class scores, and a class whose score is "
            "0 for every image gets no gradient through it until the layers below lift it. "
            "At the book's init (Xavier weights, zero biases) 0 to 3 of NiN's 10 scores "
            "start that way, and 3 to 6 with torch's default biases (8 seeds at 224 px). "
            "More epochs, or a lower learning rate (0.05, as in the book's later editions), "
            "may bring them back.")
    return note + " The network may still be learning them: more epochs may help."


def textbook_bn_note(spec: Spec, layers: list[BNLayer]) -> str | None:
    """The first layer's gamma and beta as d2l 7.5.4 printed them, for a LeNet whose first
    BatchNorm layer has as many channels as the book's; else None."""
    book = TEXTBOOK_FIRST_BN
    if spec.family != "lenet" or not layers or len(layers[0].gamma) != len(book["gamma"]):
        return None
    return (f"The book printed the first layer's values after 10 epochs (d2l "
            f"{book['section']}): γ = {', '.join(f'{v:.2f}' for v in book['gamma'])}; "
            f"β = {', '.join(f'{v:.2f}' for v in book['beta'])}.")
