"""What the server has (device, data, memory) and whether a run fits: cnnlab.training.resources."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnnlab.arch.presets import PRESETS
from cnnlab.training import files, resources
from cnnlab.training.config import TrainConfig
from cnnlab.training.resources import DeviceMemory, estimate, fits_device

GiB = 2**30
CPU_20G = DeviceMemory("cpu", "the CPU's RAM", total=24 * GiB, free=20 * GiB)


def gpu(total_gib: float, free_gib: float) -> DeviceMemory:
    return DeviceMemory("cuda:0", "Test GPU", total=int(total_gib * GiB), free=int(free_gib * GiB))


# --- device and data ---------------------------------------------------------------------------


def test_without_a_gpu_the_device_is_the_cpu_with_its_cores(monkeypatch):
    monkeypatch.setattr(resources, "gpu_names", lambda: [])
    monkeypatch.setattr(resources, "cpu_cores", lambda: 2)
    assert resources.device_summary() == "CPU, 2 cores"


def test_a_gpu_is_named_and_several_equal_ones_counted(monkeypatch):
    monkeypatch.setattr(resources, "gpu_names", lambda: ["NVIDIA H100 80GB HBM3"])
    assert resources.device_summary() == "NVIDIA H100 80GB HBM3"
    monkeypatch.setattr(resources, "gpu_names", lambda: ["NVIDIA A100"] * 4)
    assert resources.device_summary() == "4 x NVIDIA A100"


def test_the_cpu_core_count_is_what_this_process_may_use():
    assert 1 <= resources.cpu_cores() <= (__import__("os").cpu_count() or 1)


def test_full_data_on_disk_is_reported_with_its_source(monkeypatch):
    paths = {key: Path("/usr/share/datasets/fashion-mnist") / f"{name}.gz"
             for key, name in files.IDX_FILES.items()}
    monkeypatch.setattr(files, "find_fashion_mnist", lambda: (files.Source.DEBIAN, paths))
    summary = resources.data_summary()
    assert "full" in summary and "60,000" in summary and files.DEBIAN_PACKAGE in summary
    assert resources.full_data_found()
    assert resources.train_size("auto") == resources.train_size("full") == 60_000


def test_without_the_full_set_runs_use_the_sample(monkeypatch):
    monkeypatch.setattr(files, "find_fashion_mnist", lambda: None)
    summary = resources.data_summary()
    assert "sample" in summary and "3,000" in summary and "apt install" in summary
    assert not resources.full_data_found()
    assert resources.train_size("auto") == 3_000


def test_a_broken_data_set_is_reported_not_raised(monkeypatch):
    def broken():
        raise files.DataCorrupt("incomplete Fashion-MNIST in /x: missing t10k-labels-idx1-ubyte")

    monkeypatch.setattr(files, "find_fashion_mnist", broken)
    assert "incomplete" in resources.data_summary()
    assert not resources.full_data_found()


def test_a_missing_sample_is_reported(monkeypatch, tmp_path):
    monkeypatch.setattr(files, "find_fashion_mnist", lambda: None)
    monkeypatch.setattr(files, "SAMPLE_PATH", tmp_path / "missing.npz")
    assert "No Fashion-MNIST" in resources.data_summary()


def test_full_data_that_is_not_installed_is_a_problem_of_the_data_field(monkeypatch):
    monkeypatch.setattr(files, "find_fashion_mnist", lambda: None)
    problems = resources.data_problems(TrainConfig(data="full"))
    assert [p.field for p in problems] == ["data"]
    assert files.DEBIAN_PACKAGE in problems[0].fix


def test_a_subset_larger_than_the_training_set_is_a_problem_of_the_subset_field():
    problems = resources.data_problems(TrainConfig(data="sample", subset=5_000))
    assert [p.field for p in problems] == ["subset"]
    assert "3,000" in problems[0].message
    assert resources.data_problems(TrainConfig(data="sample", subset=3_000)) == []


# --- memory ------------------------------------------------------------------------------------


def test_ram_comes_from_meminfo(monkeypatch, tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16000000 kB\nMemFree:  100 kB\n"
                       "MemAvailable:   12000000 kB\n")
    monkeypatch.setattr(resources, "MEMINFO", meminfo)
    monkeypatch.setattr(resources, "CGROUP_V2", tmp_path / "no-cgroup")
    monkeypatch.setattr(resources, "CGROUP_V1", tmp_path / "no-cgroup")
    memory = resources.device_memory("cpu")
    assert (memory.total, memory.free) == (16_000_000 * 1024, 12_000_000 * 1024)
    assert not memory.is_gpu


def test_a_containers_memory_limit_caps_the_ram(monkeypatch, tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 16000000 kB\nMemAvailable: 12000000 kB\n")
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    (cgroup / "memory.max").write_text(f"{4 * GiB}\n")
    (cgroup / "memory.current").write_text(f"{1 * GiB}\n")
    monkeypatch.setattr(resources, "MEMINFO", meminfo)
    monkeypatch.setattr(resources, "CGROUP_V2", cgroup)
    memory = resources.device_memory("cpu")
    assert (memory.total, memory.free) == (4 * GiB, 3 * GiB)
    (cgroup / "memory.max").write_text("max\n")
    assert resources.device_memory("cpu").free == 12_000_000 * 1024


def test_the_estimate_grows_with_the_batch_and_momentum_adds_a_buffer():
    spec = PRESETS["resnet18"]
    small = estimate(spec, TrainConfig(batch_size=32), "cpu")
    large = estimate(spec, TrainConfig(batch_size=512), "cpu")
    assert large.total > small.total
    assert large.fixed == small.fixed
    with_momentum = estimate(spec, TrainConfig(batch_size=32, momentum=0.9), "cpu")
    assert with_momentum.memory.optimizer_state == small.memory.weights - 4 * _buffers(spec)
    adam = estimate(spec, TrainConfig(batch_size=32, optimizer="adam"), "cpu")
    assert adam.memory.optimizer_state == 2 * with_momentum.memory.optimizer_state


def _buffers(spec) -> int:
    from cnnlab.analysis.layers import inspect_spec

    return inspect_spec(spec).buffer_elements


def test_the_estimate_covers_the_models_own_count_and_the_runtime():
    spec = PRESETS["bn-lenet"]
    need = estimate(spec, TrainConfig(batch_size=256), "cpu")
    assert need.total > need.memory.total + resources.RUNTIME_OVERHEAD["cpu"]


def test_evaluation_batches_count_even_when_the_training_batch_is_small():
    # cnnlab.training.loop scores the test set in batches of about 1024 images at 96 px (188 at 224 px)
    need = estimate(PRESETS["vgg11"], TrainConfig(batch_size=1), "cpu")
    assert need.total > need.fixed + 100 * need.eval_per_image


def test_the_largest_batch_is_the_boundary_of_the_budget():
    need = estimate(PRESETS["vgg11"], TrainConfig(batch_size=128), "cpu")
    budget = 16 * GiB
    largest = need.largest_batch(budget)
    assert largest >= 1
    assert need.at(largest) <= budget < need.at(largest + 1)
    assert need.largest_batch(need.fixed // 2) == 0


def test_a_small_run_fits_and_says_how_much_it_needs():
    ok, message = fits_device(PRESETS["bn-lenet"], TrainConfig(), memory=CPU_20G)
    assert ok
    assert "needs about" in message and "20.0 GiB available" in message


def test_a_run_too_big_for_the_device_is_refused_with_what_to_lower():
    spec = PRESETS["vgg16"].replace(input_size=512)
    config = TrainConfig(batch_size=4096)
    ok, message = fits_device(spec, config, memory=CPU_20G)
    assert not ok
    for words in ("Too big", "batch size (now 4,096)", "input size (now 512 px)", "width (now 1)"):
        assert words in message


def test_the_suggested_batch_size_fits():
    spec = PRESETS["vgg16"].replace(input_size=512)
    ok, message = fits_device(spec, TrainConfig(batch_size=4096), memory=CPU_20G)
    suggested = int(message.split("a batch size of ")[1].split(" or less")[0].replace(",", ""))
    ok, _ = fits_device(spec, TrainConfig(batch_size=suggested), memory=CPU_20G)
    assert ok


def test_when_even_one_image_is_too_much_the_fix_is_the_input_size_or_width():
    spec = PRESETS["vgg11"].replace(input_size=1024, width=0.5)  # 1.1 G parameters
    laptop = DeviceMemory("cpu", "the CPU's RAM", total=8 * GiB, free=8 * GiB)
    ok, message = fits_device(spec, TrainConfig(batch_size=8), memory=laptop)
    assert not ok
    assert "even a batch of one image does not fit" in message


def test_on_a_gpu_the_total_memory_decides_since_runs_take_turns():
    spec = PRESETS["resnet18"]
    config = TrainConfig(batch_size=256)
    need = estimate(spec, config, "cuda").total / GiB
    ok, message = fits_device(spec, config, memory=gpu(total_gib=need * 2, free_gib=need / 2))
    assert ok
    assert "Only" in message and "free on it right now" in message
    ok, _ = fits_device(spec, config, memory=gpu(total_gib=need * 0.8, free_gib=need * 0.8))
    assert not ok


def test_the_gpu_estimate_includes_a_cuda_context():
    spec = PRESETS["bn-lenet"]
    on_gpu = estimate(spec, TrainConfig(), "cuda")
    on_cpu = estimate(spec, TrainConfig(), "cpu")
    assert on_gpu.fixed - on_cpu.fixed == (resources.RUNTIME_OVERHEAD["cuda"]
                                           - resources.RUNTIME_OVERHEAD["cpu"])


def test_a_step_captured_as_cuda_graphs_keeps_its_memory_through_evaluation():
    spec, config = PRESETS["resnet18"], TrainConfig(batch_size=128)
    eager = estimate(spec, config, "cuda")
    graphed = estimate(spec, config.replace(cuda_graphs=True), "cuda")
    training, evaluation = 128 * eager.per_image, 128 * eager.eval_per_image
    assert eager.total == eager.fixed + max(training, evaluation)
    assert graphed.total == eager.fixed + training + evaluation
    # on a CPU the config's cuda_graphs is ignored, and so it is here
    assert estimate(spec, config.replace(cuda_graphs=True), "cpu").total == \
        estimate(spec, config, "cpu").total


def test_the_training_device_follows_the_config(monkeypatch):
    monkeypatch.setattr(resources.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(resources.torch.cuda, "device_count", lambda: 1)
    assert resources.training_device(TrainConfig(device="auto")) == "cuda"
    assert resources.training_device(TrainConfig(device="cpu")) == "cpu"
    monkeypatch.setattr(resources.torch.cuda, "is_available", lambda: False)
    assert resources.training_device(TrainConfig(device="auto")) == "cpu"


@pytest.mark.parametrize("batch, friendly", [(1, 1), (3, 2), (100, 64), (130, 128), (1000, 992)])
def test_suggested_batch_sizes_are_round_numbers(batch, friendly):
    assert resources._round_down(batch) == friendly


def test_a_familys_registered_slack_scales_its_activation_estimate(monkeypatch):
    import dataclasses

    from cnnlab.arch import families

    spec, config = PRESETS["densenet"], TrainConfig(batch_size=256)
    before = estimate(spec, config, "cpu").per_image
    densenet = families.FAMILIES["densenet"]
    slack = densenet.activation_slack or resources.ACTIVATION_SLACK
    monkeypatch.setitem(families.FAMILIES, "densenet", dataclasses.replace(
        densenet, activation_slack=2 * slack))
    assert estimate(spec, config, "cpu").per_image > 1.9 * before  # the input part is small
