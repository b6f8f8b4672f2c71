"""Tests for cnnlab.training.config and cnnlab.training.recipes: the checked config, its JSON
form, and the textbook's settings."""

from __future__ import annotations

import json

import pytest

from cnnlab.training.config import ConfigError, TrainConfig
from cnnlab.training.recipes import TEXTBOOK_RESULTS, textbook_config


def test_config_round_trips_through_json() -> None:
    config = TrainConfig(lr=0.05, subset=1000, schedule="cosine", max_steps=3, flip=True)
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_a_bad_config_lists_every_problem_by_field() -> None:
    with pytest.raises(ConfigError) as caught:
        TrainConfig.from_dict({"lr": -1, "epochs": 0, "schedule": "linear"})
    assert [p.field for p in caught.value.problems] == ["epochs", "lr", "schedule"]


def test_unknown_config_fields_are_named() -> None:
    with pytest.raises(ConfigError, match="learning_rate"):
        TrainConfig.from_dict({"learning_rate": 0.1})


def test_textbook_config_has_the_books_settings() -> None:
    assert (textbook_config("alexnet").lr, textbook_config("alexnet").batch_size) == (0.01, 128)
    assert (textbook_config("resnet18").lr, textbook_config("resnet18").batch_size) == (0.05, 256)
    assert textbook_config("bn-lenet-scratch").lr == 1.0
    assert textbook_config("resnet34") == textbook_config("resnet18")  # the family's recipe
    assert TEXTBOOK_RESULTS["bn-lenet-scratch"].test_acc == 0.874


def test_cuda_graphs_are_a_switch_that_needs_a_gpu_and_excludes_compile() -> None:
    assert TrainConfig(cuda_graphs=True).cuda_graphs  # device auto: graphs where there is a GPU
    for changes, says in (({"cuda_graphs": "yes"}, "must be true or false"),
                          ({"cuda_graphs": True, "compile": True}, "cannot be used with compile"),
                          ({"cuda_graphs": True, "device": "cpu"}, "needs a GPU")):
        with pytest.raises(ConfigError) as caught:
            TrainConfig.from_dict(changes)
        (problem,) = caught.value.problems
        assert problem.field == "cuda_graphs" and says in problem.message
