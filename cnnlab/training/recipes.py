"""The textbook's settings and results: what d2l chapter 7 trains each model with, and what it
reached. Compare, the CLI and the pages read these without importing the training loop.
"""

from __future__ import annotations

from dataclasses import dataclass

from cnnlab.arch.families import FAMILIES
from cnnlab.arch.presets import preset, preset_name
from cnnlab.arch.specs import Spec
from cnnlab.training.config import TrainConfig


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


def family_recipe(spec: Spec) -> str:
    """The textbook preset whose recipe a spec of this family borrows."""
    return FAMILIES[spec.family].recipe(spec)


def scaled_batch(config: TrainConfig, k: int) -> TrainConfig:
    """`config` at k times its batch size and learning rate: the linear scaling rule (Goyal et
    al. 2017, "Accurate, Large Minibatch SGD"), which keeps an epoch's total step size. On this
    machine's CPU it kept BN-LeNet's accuracy at k=2 and cost the networks without BatchNorm
    (`bench/schedules.py --batch-scales 1 2`, README)."""
    return config.replace(batch_size=config.batch_size * k, lr=config.lr * k)


def textbook_config(name: str) -> TrainConfig:
    """The book's lr, batch size and epochs for a preset (its family's for presets the book
    does not train: each family names the preset it borrows from, in its registration).
    Raises KeyError listing the presets for an unknown name."""
    recipe = TEXTBOOK_RECIPES.get(name) or TEXTBOOK_RECIPES[family_recipe(preset(name))]
    return TrainConfig(lr=recipe.lr, batch_size=recipe.batch_size, epochs=recipe.epochs)


def default_config(spec: Spec) -> TrainConfig:
    """The textbook config for any spec: its preset's if it is one, else its family's."""
    name = preset_name(spec, any_input_size=True)
    return textbook_config(name if name in TEXTBOOK_RECIPES else family_recipe(spec))
