"""Tests for cnnlab.training.setup: the machine's facts (a GPU for "cuda", enough images for a
subset)."""

from __future__ import annotations

import pytest
import torch

from cnnlab.training.config import ConfigError, TrainConfig
from cnnlab.training.setup import resolve_device, subset_problems


def test_cuda_without_a_gpu_is_refused_naming_the_device_field() -> None:
    with pytest.raises(ConfigError, match="CUDA is not available") as caught:
        resolve_device("cuda", gpus=0)
    assert [p.field for p in caught.value.problems] == ["device"]


def test_auto_takes_a_gpu_only_when_there_is_one() -> None:
    assert resolve_device("auto", gpus=0) == torch.device("cpu")
    assert resolve_device("auto", gpus=2) == torch.device("cuda")
    assert resolve_device("cpu", gpus=2) == torch.device("cpu")


def test_a_subset_larger_than_the_images_here_is_one_problem_with_the_largest_that_fits() -> None:
    (problem,) = subset_problems(5_000, 3_000)
    assert problem.field == "subset" and "3,000" in problem.fix
    assert subset_problems(3_000, 3_000) == subset_problems(None, 10) == []
