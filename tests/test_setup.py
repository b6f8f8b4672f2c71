"""Tests for cnnlab.training.setup: the machine's facts (a GPU for "cuda", enough images for a
subset) and the book's init."""

from __future__ import annotations

import math
import threading

import pytest
import torch
from torch import nn

from cnnlab.arch.presets import PRESETS
from cnnlab.training.config import ConfigError, TrainConfig
from cnnlab.training.setup import make_model, resolve_device, subset_problems


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


@pytest.mark.parametrize("name", ["nin", "alexnet", "googlenet", "densenet"])
def test_the_book_init_is_xavier_uniform_weights_and_zero_biases(name: str) -> None:
    # Gluon's init.Xavier() with its layers' bias_initializer='zeros', as the chapter trains.
    model = make_model(PRESETS[name], seed=3)
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert layers
    for layer in layers:
        fan_in, fan_out = layer.weight[0].numel(), layer.weight[:, 0].numel()
        bound = math.sqrt(6 / (fan_in + fan_out))
        assert float(layer.weight.detach().abs().max()) <= bound * (1 + 1e-6)  # float32 rounding
        assert float(layer.weight.detach().abs().max()) > 0.9 * bound  # uniform over the whole range
        if layer.bias is not None:
            assert torch.count_nonzero(layer.bias) == 0
    same = make_model(PRESETS[name], seed=3).state_dict()
    assert all(torch.equal(v, same[k]) for k, v in model.state_dict().items())


def test_runs_starting_together_in_threads_each_get_their_seeds_weights() -> None:
    # Ray tasks and bench/gpu.py --in-process start runs in threads of one process, and the
    # init draws from torch's one global generator.
    seeds = list(range(6))
    alone = {seed: make_model(PRESETS["resnet18"], seed).state_dict() for seed in seeds}
    together: dict[int, dict[str, torch.Tensor]] = {}
    start = threading.Barrier(len(seeds))

    def build(seed: int) -> None:
        start.wait()
        together[seed] = make_model(PRESETS["resnet18"], seed).state_dict()

    threads = [threading.Thread(target=build, args=(seed,)) for seed in seeds]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for seed in seeds:
        assert all(torch.equal(v, together[seed][k]) for k, v in alone[seed].items()), seed
