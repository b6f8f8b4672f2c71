"""The 35 exercises of d2l chapter 7 (sections 7.1-7.7), each as a card a class works with.

A card holds the exercise in our own words, what to try, and one task:
- `Predict`: questions a student answers with a number or a block's name, then reveals the
  library's value (`cnnlab.lessons.answers`);
- `Experiment`: an exact spec (and config) to open on the Architecture or Train page;
- `Paired`: two runs that differ in one field; `Sweep`: one run per value of a field;
- `Discussion`: a proof, a reading or a research question: why the app cannot answer it, and
  the view that helps.

Runs are classroom-sized on a CPU: the shipped 3,000-image sample, a few epochs, and inputs
shrunk where the textbook's 96 or 224 px would take an hour.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from cnnlab.arch.presets import PRESETS
from cnnlab.arch.specs import Spec
from cnnlab.lessons.answers import Question
from cnnlab.training.config import TrainConfig
from cnnlab.training.recipes import default_config

SECTIONS = {
    "7.1": "AlexNet",
    "7.2": "Networks using blocks (VGG)",
    "7.3": "Network in network (NiN)",
    "7.4": "Parallel concatenations (GoogLeNet)",
    "7.5": "Batch normalization",
    "7.6": "Residual networks (ResNet)",
    "7.7": "Densely connected networks (DenseNet)",
}
PAGES = ("architecture", "train", "inside", "compare")  # where a card can send the class


@dataclass(frozen=True)
class Predict:
    kind: ClassVar[str] = "predict"
    questions: tuple[Question, ...]


@dataclass(frozen=True)
class Experiment:
    """Open `spec` on `page` ("architecture" or "train"); the Train page also gets `config`."""

    kind: ClassVar[str] = "experiment"
    page: str
    spec: Spec
    expect: str
    config: TrainConfig | None = None


@dataclass(frozen=True)
class Paired:
    """Two runs of `spec` with `config`: `field` (a spec or config field) at each of `values`."""

    kind: ClassVar[str] = "paired"
    spec: Spec
    config: TrainConfig
    field: str
    values: tuple[Any, Any]
    expect: str


@dataclass(frozen=True)
class Sweep:
    """One run per value of `field`; with `across` (field, values), that sweep once per value
    of the second field too (a small grid, queued as one group)."""

    kind: ClassVar[str] = "sweep"
    spec: Spec
    config: TrainConfig
    field: str
    values: tuple[Any, ...]
    expect: str
    across: tuple[str, tuple[Any, ...]] | None = None


@dataclass(frozen=True)
class Discussion:
    """Not something to compute: `why`, and the page (with `spec`, if any) that helps."""

    kind: ClassVar[str] = "discussion"
    why: str
    page: str
    spec: Spec | None = None


Task = Predict | Experiment | Paired | Sweep | Discussion


@dataclass(frozen=True)
class Exercise:
    section: str  # "7.1" .. "7.7"
    number: int  # as numbered in the chapter's exercise list
    question: str  # the exercise in our own words
    what_to_try: str
    task: Task

    @property
    def id(self) -> str:
        return f"{self.section}.{self.number}"

    @property
    def kind(self) -> str:
        return self.task.kind


def on_sample(spec: Spec, epochs: int, **changes: Any) -> TrainConfig:
    """The textbook's recipe for `spec` (lr, batch size), on the shipped 3,000-image sample for
    `epochs`: minutes on a CPU, not hours; accuracy is lower than the book's full-data runs."""
    return default_config(spec).replace(data="sample", epochs=epochs, **changes)


P = PRESETS
LENET, BN_LENET = P["lenet"], P["bn-lenet"]
ALEXNET_28 = P["alexnet-small"]
RESNET_48 = P["resnet18"].replace(input_size=48)  # ~4x cheaper than 96 px; still 2x2 at the end
DENSENET_48 = P["densenet"].replace(input_size=48)


def q(prompt: str, spec: Spec, measure: str, **options: Any) -> Question:
    return Question(prompt, spec, measure, **options)


ALEXNET = (
    Exercise("7.1", 1, "Train AlexNet for more epochs. How do its curves differ from LeNet's, "
             "and why?",
             "Start the 28 px AlexNet for 20 epochs, then LeNet with the same settings, and "
             "overlay both on the Compare page.",
             Experiment("train", ALEXNET_28,
                        "The bigger network's training accuracy climbs past its test accuracy: "
                        "2.8 M parameters can memorise 3,000 images. 16x fewer FLOPs than the "
                        "224 px AlexNet, so a CPU can train it.", on_sample(ALEXNET_28, 20))),
    Exercise("7.1", 2, "AlexNet was built for 224 px photos. Make it cheaper for Fashion-MNIST "
             "without losing accuracy, or design one for 28x28 inputs.",
             "Open the 28 px AlexNet: 3x3 kernels without stride, a 1024-unit head. Compare "
             "its parameters and FLOPs with AlexNet's, shrink it further, then train it.",
             Experiment("architecture", ALEXNET_28,
                        "About 16x fewer parameters and FLOPs than the 224 px AlexNet.")),
    Exercise("7.1", 3, "Change the batch size. What happens to accuracy and to memory?",
             "Three runs of the 28 px AlexNet at batch 32, 128 and 512, same learning rate "
             "and epochs. The Train page's memory check shows the memory side.",
             Sweep(ALEXNET_28, on_sample(ALEXNET_28, 3), "batch_size", (32, 128, 512),
                   "Bigger batches take fewer steps per epoch, so at one learning rate they "
                   "learn less in 3 epochs; activation memory grows with the batch, the "
                   "weights' does not.")),
    Exercise("7.1", 4, "Rooflines: what dominates AlexNet's memory footprint, its computation, "
             "and how much arithmetic is done per byte of weights read?",
             "Name the block holding the most parameters and the one doing the most FLOPs, "
             "then estimate FLOPs per byte of weights for one image.",
             Predict((
                 q("Which block holds the most parameters?", P["alexnet"], "most_params"),
                 q("Which block does the most FLOPs per image?", P["alexnet"], "most_flops"),
                 q("FLOPs per byte of float32 weights, one image (each weight read once)",
                   P["alexnet"], "flops_per_byte")))),
    Exercise("7.1", 5, "Use ReLU (and dropout) in LeNet. Does it help? What about "
             "preprocessing?",
             "Two LeNet runs that differ only in the activation. For preprocessing, turn on "
             "random flips on the Train page.",
             Paired(LENET, on_sample(LENET, 10), "activation", ("sigmoid", "relu"),
                    "ReLU learns in fewer epochs at the book's learning rate; sigmoid LeNet "
                    "can sit near 10% for the first epochs. Seconds per run.")),
)

VGG = (
    Exercise("7.2", 1, "The shape printout of VGG-11 shows 8 lines, yet VGG-11 has 11 weight "
             "layers. Where did three go?",
             "Count the convolutions inside the five VGG blocks.",
             Predict((q("How many convolution layers are in VGG-11?", P["vgg11"], "conv_layers",
                        tolerance=0.0),))),
    Exercise("7.2", 2, "VGG is slower than AlexNet and needs more memory. Why?",
             "AlexNet does 1.88 GFLOPs per 224 px image. Estimate VGG-11's, and its training "
             "memory.",
             Predict((
                 q("VGG-11's FLOPs per 224 px image", P["vgg11"], "flops"),
                 q("VGG-11's training memory at batch 128 with SGD", P["vgg11"],
                   "train_memory", batch_size=128)))),
    Exercise("7.2", 3, "Shrink the images from 224 to 96 px. What changes?",
             "Predict VGG-11's size and cost at 96 px (at 224: 128.8 M parameters, 15.1 "
             "GFLOPs).",
             Predict((
                 q("VGG-11's parameters at 96 px", P["vgg11"].replace(input_size=96), "params"),
                 q("VGG-11's FLOPs per 96 px image", P["vgg11"].replace(input_size=96),
                   "flops")))),
    Exercise("7.2", 4, "Build VGG-16 and VGG-19 from Table 1 of the VGG paper.",
             "VGG-16 opens on the Architecture page. Edit conv_arch to config E, ((2, 64), "
             "(2, 128), (4, 256), (4, 512), (4, 512)), for VGG-19. A slip like (32, 512) "
             "builds 42 convolutions: the table shows it at once.",
             Experiment("architecture", P["vgg16"],
                        "VGG-16 has 134.3 M parameters, most of them in the first dense "
                        "layer.")),
)

NIN = (
    Exercise("7.3", 1, "Tune the hyperparameters to improve NiN's accuracy.",
             "Four runs of the 28 px NiN at learning rates 0.02 to 0.2; then try more epochs "
             "or another optimizer on the Train page.",
             Sweep(P["nin-small"], on_sample(P["nin-small"], 5), "lr", (0.02, 0.05, 0.1, 0.2),
                   "Too small learns slowly, too large stalls; NiN is sensitive because it "
                   "has no dense layers to absorb a bad start.")),
    Exercise("7.3", 2, "Why two 1x1 convolutions per NiN block? Remove one and see.",
             "Two runs of the 28 px NiN, with two and with one 1x1 convolution per block.",
             Paired(P["nin-small"], on_sample(P["nin-small"], 5), "one_by_one", (2, 1),
                    "One fewer nonlinearity per block: fewer parameters and FLOPs; compare "
                    "how fast each learns.")),
    Exercise("7.3", 3, "Count NiN's resources: parameters, computation, memory for training "
             "and for inference.",
             "The 224 px NiN of the chapter.",
             Predict((
                 q("NiN's parameters", P["nin"], "params"),
                 q("NiN's multiply-adds per image", P["nin"], "macs"),
                 q("Training memory at batch 128 with SGD", P["nin"], "train_memory",
                   batch_size=128),
                 q("Memory to predict one image", P["nin"], "inference_memory")))),
    Exercise("7.3", 4, "What can go wrong when the last block maps 384x5x5 straight to "
             "10x5x5?",
             "Look at the last NiN block in the layer table: one 3x3 convolution squeezes 384 "
             "channels into 10 class maps.",
             Discussion("A judgment about information squeezed through 10 channels at once; no "
                        "single number settles it, but the table shows where it happens.",
                        "architecture", P["nin"])),
)

GOOGLENET = (
    Exercise("7.4", 1, "Try later versions of GoogLeNet: batch normalization, changed Inception "
             "blocks, label smoothing, residual connections.",
             "Two GoogLeNet runs without and with batch normalization; then add label "
             "smoothing 0.1 on the Train page, or edit the Inception splits on the "
             "Architecture page.",
             Paired(P["googlenet"], on_sample(P["googlenet"], 2), "batch_norm", (False, True),
                    "With BN the loss falls faster in the first epochs. The slowest pair here: "
                    "about half a minute per epoch per run on a 2-core CPU.")),
    Exercise("7.4", 2, "What is the smallest image GoogLeNet works on?",
             "Every convolution and pool in GoogLeNet is padded. Guess, then see the shapes at "
             "that size.",
             Predict((q("The smallest input size", P["googlenet"],
                        "smallest_input", tolerance=0.0),))),
    Exercise("7.4", 3, "Compare the parameter counts of AlexNet, VGG and NiN with GoogLeNet's. "
             "How do NiN and GoogLeNet stay so small?",
             "AlexNet has 46.8 M parameters, VGG-11 128.8 M, NiN 2.0 M.",
             Predict((
                 q("GoogLeNet's parameters", P["googlenet"], "params"),
                 q("Share of AlexNet's parameters in its dense layers", P["alexnet"],
                   "dense_share")))),
    Exercise("7.4", 4, "Why start with a large convolution?",
             "GoogLeNet's first block is a 7x7 convolution with stride 2 and a 3x3 pool.",
             Predict((q("How wide is the input patch one output of block b1 sees?",
                        P["googlenet"], "receptive_field", block="b1"),))),
)

BATCH_NORM = (
    Exercise("7.5", 1, "Can we drop the bias of a layer that BN follows? Find an equivalent "
             "transformation and say whether it helps.",
             "BN subtracts the batch mean, so a bias before it cancels out. Count the "
             "parameters that removes from BN-LeNet.",
             Predict((q("Parameters saved by removing the biases before BN", BN_LENET,
                        "params_saved", other=BN_LENET.replace(conv_bias=False),
                        tolerance=0.0),))),
    Exercise("7.5", 2, "Compare learning rates for LeNet with and without BN. How large can the "
             "learning rate get?",
             "Six BN-LeNet runs: learning rates 0.1, 1 and 4, each with BN and without.",
             Sweep(BN_LENET, on_sample(BN_LENET, 10), "lr", (0.1, 1.0, 4.0),
                   "With BN all three should learn; without BN the small rate barely moves "
                   "in 10 epochs and the large one may diverge (the run stops and says so).",
                   across=("batch_norm", ("torch", "none")))),
    Exercise("7.5", 3, "Do we need BN in every layer?",
             "Two BN-LeNet runs: BN after every layer, and BN in the convolutions only.",
             Paired(BN_LENET, on_sample(BN_LENET, 10), "norm_in_head", (True, False),
                    "Close results: most of the benefit comes from the convolutional part.")),
    Exercise("7.5", 4, "Can BN replace dropout? How does the behaviour change?",
             "Two BN-LeNet runs: BN alone, and BN with dropout 0.5 in the dense layers.",
             Paired(BN_LENET, on_sample(BN_LENET, 10), "dropout", (0.0, 0.5),
                    "If BN alone generalises as well, it already regularises: watch the gap "
                    "between training and test accuracy.")),
    Exercise("7.5", 5, "Fix BN's scale gamma and shift beta. What happens?",
             "Two BN-LeNet runs: gamma and beta learned, and fixed at 1 and 0.",
             Paired(BN_LENET, on_sample(BN_LENET, 10), "norm_affine", (True, False),
                    "Fixed gamma and beta cost a little accuracy: each layer's outputs are "
                    "forced to zero mean and unit variance.")),
    Exercise("7.5", 6, "Read PyTorch's BatchNorm documentation: where else is BN used?",
             "After a run, the Inside page shows every BN layer's gamma, beta and running "
             "statistics.",
             Discussion("Reading documentation is not something to compute; the Inside page "
                        "shows what BN learned in a real run.", "inside")),
    Exercise("7.5", 7, "Research: which other normalizations could work? (The probability "
             "integral transform, a full covariance estimate.)",
             "Four BN-LeNet runs with batch, group, layer and no normalization.",
             Sweep(BN_LENET, on_sample(BN_LENET, 10), "norm_kind",
                   ("batch", "group", "layer", "none"),
                   "Group and layer norm do not depend on the batch; compare how each "
                   "learns. The integral transform and full covariance are research, beyond "
                   "these runs.")),
)

RESNET = (
    Exercise("7.6", 1, "Build the variants in Table 1 of the ResNet paper.",
             "ResNet-34 stacks (3, 4, 6, 3) basic blocks of 64 to 512 channels.",
             Predict((
                 q("ResNet-34's parameters (1 channel, 10 classes)", P["resnet34"], "params"),
                 q("ResNet-34's FLOPs per 96 px image", P["resnet34"], "flops")))),
    Exercise("7.6", 2, "Deep ResNets use a bottleneck block (1x1, 3x3, 1x1). Build it.",
             "ResNet-18 has 11.2 M parameters. Swap its blocks for bottlenecks with the same "
             "stage widths (the 3x3 works on a quarter of the channels).",
             Predict((
                 q("Parameters of ResNet-18 with bottleneck blocks",
                   P["resnet18"].replace(block="bottleneck"), "params"),
                 q("Its FLOPs per 96 px image", P["resnet18"].replace(block="bottleneck"),
                   "flops")))),
    Exercise("7.6", 3, "Later ResNets order each block BN, ReLU, convolution (pre-activation). "
             "Make the change.",
             "Two ResNet-18 runs at 48 px, the original order and pre-activation.",
             Paired(RESNET_48, on_sample(RESNET_48, 3), "preact", (False, True),
                    "Similar accuracy at 18 layers; pre-activation matters for much deeper "
                    "nets. 48 px costs a quarter of the book's 96 px.")),
    Exercise("7.6", 4, "Prove that a residual block can express the identity when its input "
             "comes from a ReLU.",
             "Look at the Residual block in the diagram: what must the weights be for the "
             "block to pass x through?",
             Discussion("A proof: runs cannot prove it, but the diagram shows the skip "
                        "connection it rests on.", "architecture", P["resnet18"])),
    Exercise("7.6", 5, "Why can't we grow function classes without bound, even nested ones?",
             "Compare runs of networks of different depth on the Compare page.",
             Discussion("A question about generalisation and compute; the Compare page shows "
                        "bigger networks' cost next to their accuracy.", "compare")),
)

DENSENET = (
    Exercise("7.7", 1, "Why average pooling rather than max pooling in the transition layers?",
             "Two DenseNet runs at 48 px, average and max pooling in the transitions.",
             Paired(DENSENET_48, on_sample(DENSENET_48, 3), "transition_pool", ("avg", "max"),
                    "Average pooling keeps every concatenated feature's contribution; max keeps "
                    "only the strongest. Expect close results on Fashion-MNIST.")),
    Exercise("7.7", 2, "DenseNet has fewer parameters than ResNet. Why?",
             "ResNet-18 has 11.2 M parameters at 96 px.",
             Predict((
                 q("DenseNet's parameters", P["densenet"], "params"),
                 q("Which block holds the most parameters?", P["densenet"], "most_params")))),
    Exercise("7.7", 3, "DenseNet is said to need a lot of memory. Is it so at 224 px?",
             "Estimate training memory at 224 px and batch 256 (the recipe's), for DenseNet and "
             "for ResNet-18.",
             Predict((
                 q("DenseNet, 224 px, batch 256, SGD",
                   P["densenet"].replace(input_size=224), "train_memory", batch_size=256),
                 q("ResNet-18, 224 px, batch 256, SGD",
                   P["resnet18"].replace(input_size=224), "train_memory", batch_size=256)))),
    Exercise("7.7", 4, "Build the DenseNet versions of Table 1 in the DenseNet paper.",
             "DenseNet-121 opens on the Architecture page: blocks of (6, 12, 24, 16) with "
             "bottlenecks. Edit the block sizes for DenseNet-169 (6, 12, 32, 32).",
             Experiment("architecture", P["densenet121"],
                        "Parameters grow slowly with depth: each layer adds only growth_rate "
                        "channels.")),
    Exercise("7.7", 5, "Why does ResNet add x and f(x) while DenseNet must concatenate for more "
             "than two terms?",
             "Compare the diagrams of ResNet-18 and DenseNet: a sum versus a growing "
             "concatenation.",
             Discussion("A question of reasoning; the DenseNet diagram shows the "
                        "concatenations growing block by block.", "architecture",
                        P["densenet"])),
    Exercise("7.7", 6, "Design a dense network of fully connected layers for the house-price "
             "data.",
             "Out of this app's scope: sketch it on paper from the DenseBlock you see here.",
             Discussion("cnnlab trains convolutional networks on Fashion-MNIST only: it has "
                        "no house-price data and no fully connected family.", "architecture",
                        P["densenet"])),
)

EXERCISES: tuple[Exercise, ...] = ALEXNET + VGG + NIN + GOOGLENET + BATCH_NORM + RESNET + DENSENET


def by_section() -> dict[str, list[Exercise]]:
    """The exercises under their section, in the chapter's order."""
    grouped: dict[str, list[Exercise]] = {section: [] for section in SECTIONS}
    for exercise in EXERCISES:
        grouped[exercise.section].append(exercise)
    return grouped


def exercise(exercise_id: str) -> Exercise:
    """The exercise "7.5.5"; KeyError lists the ids."""
    for found in EXERCISES:
        if found.id == exercise_id:
            return found
    raise KeyError(f"no exercise {exercise_id!r}; the ids are "
                   f"{', '.join(e.id for e in EXERCISES)}")
