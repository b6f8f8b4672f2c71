"""cnnlab.analysis.layers: the meta-device summary reproduces the textbook's shapes and counts."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cnnlab.analysis import layers
from cnnlab.analysis.layers import InspectionError, inspect_model, inspect_spec
from cnnlab.analysis.smallest_input import smallest_input_size
from cnnlab.analysis.table_text import human_bytes
from cnnlab.arch.checks import check, validate
from cnnlab.arch.models import build
from cnnlab.arch.parse import spec_from_data
from cnnlab.arch.presets import PRESETS
from tests.conftest import meta_model


def table_of(name: str, **changes):
    return inspect_spec(PRESETS[name].replace(**changes) if changes else PRESETS[name])


def block_shapes(table) -> dict[str, tuple[int, ...]]:
    return {b.name: b.output_shape for b in table.blocks}


def rows_of_type(table, type_name: str):
    return [r for r in table.rows if r.type == type_name]


@pytest.fixture
def one_thread():
    """Real forward passes of tiny models: one thread, as OpenMP's spinning on a busy
    two-core machine makes them take seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def real_small(name: str) -> nn.Module:
    """A real (CPU) quarter-width model at 32 px: cheap enough to run for real."""
    torch.manual_seed(0)
    return build(PRESETS[name].replace(input_size=32, width=0.25))


# --- the textbook's shapes -----------------------------------------------------------------


def test_alexnet_at_224_has_the_books_shapes():
    shapes = table_of("alexnet").shapes
    assert shapes["conv1"] == (96, 54, 54)
    assert shapes["pool1"] == (96, 26, 26)
    assert shapes["conv2"] == (256, 26, 26)
    assert shapes["pool2"] == (256, 12, 12)
    assert shapes["conv5"] == (256, 12, 12)
    assert shapes["pool5"] == (256, 5, 5)


def test_vgg11_blocks_halve_the_size_as_in_the_book():
    blocks = block_shapes(table_of("vgg11"))
    assert [blocks[f"vgg_block{i}"] for i in range(1, 6)] == [
        (64, 112, 112), (128, 56, 56), (256, 28, 28), (512, 14, 14), (512, 7, 7)]


def test_nin_has_384x5x5_before_dropout_and_ten_outputs():
    table = table_of("nin")
    assert table.shapes["pool3"] == (384, 5, 5)
    assert table.output_shape == (10,)


def test_googlenet_stages_have_the_books_shapes():
    blocks = block_shapes(table_of("googlenet"))
    assert [blocks[f"b{i}"] for i in range(1, 6)] == [
        (64, 24, 24), (192, 12, 12), (480, 6, 6), (832, 3, 3), (1024,)]


def test_resnet18_stem_gives_64x24x24_at_96():
    assert block_shapes(table_of("resnet18"))["stem"] == (64, 24, 24)


def test_shapes_include_containers_like_inception_and_residual():
    assert table_of("googlenet").shapes["b3.0"] == (256, 12, 12)
    assert table_of("resnet18").shapes["resnet_block2.0"] == (128, 12, 12)


@pytest.mark.parametrize("name", ["resnet18", "googlenet", "densenet", "bn-lenet-scratch"])
def test_meta_shapes_equal_a_real_forward_pass(name, one_thread):
    model = real_small(name).eval()
    real: dict[str, tuple[int, ...]] = {}
    for path, module in model.named_modules():
        module.register_forward_hook(
            lambda m, args, out, path=path: real.__setitem__(path, tuple(out.shape[1:])))
    with torch.no_grad():
        model(torch.randn(2, 1, 32, 32))
    assert inspect_model(model, (1, 1, 32, 32)).shapes == real


# --- totals --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["resnet18", "googlenet", "lenet"])
def test_total_params_equal_the_real_models_count(name):
    model = real_small(name)
    assert inspect_model(model, (1, 1, 32, 32)).total_params == sum(
        p.numel() for p in model.parameters())


def test_textbook_parameter_counts_come_out_of_the_table():
    assert table_of("vgg11").total_params == 128_806_154
    assert table_of("densenet").total_params == 758_226


def test_frozen_parameters_are_not_trainable():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, 3))
    model[0].requires_grad_(False)
    table = inspect_model(model, (1, 1, 8, 8))
    assert table.trainable_params == table.total_params - 20


def test_layer_params_and_block_params_sum_to_the_total():
    table = table_of("resnet18")
    assert sum(r.params for r in table.rows) == table.total_params
    assert sum(b.params for b in table.blocks) == table.total_params


@pytest.mark.parametrize(
    "name", ["alexnet", "googlenet", "bn-lenet-scratch", "resnet50", "densenet"])
def test_total_flops_equal_flop_counter_modes(name):
    spec = PRESETS[name]
    model = meta_model(spec)
    x = torch.empty(1, spec.in_channels, spec.input_size, spec.input_size, device="meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    assert inspect_spec(spec).total_flops == counter.get_total_flops()


class Products(nn.Module):
    """Batched matrix products and attention: ops beyond the chapter's conv and linear."""

    def forward(self, x):
        q = x.flatten(2)  # (N, C, HW)
        scores = torch.bmm(q, q.transpose(1, 2))
        mixed = torch.baddbmm(scores, scores, scores)
        return torch.nn.functional.scaled_dot_product_attention(q, q, q) + mixed.sum()


@pytest.mark.parametrize("model", [
    nn.Conv2d(4, 6, 3, stride=2, padding=1, dilation=2, groups=2),
    nn.ConvTranspose2d(4, 6, 3, stride=2),
    nn.Sequential(nn.Flatten(), nn.Linear(4 * 8 * 8, 5, bias=False)),
    Products(),
], ids=["grouped-dilated-conv", "transposed-conv", "linear-without-bias", "bmm-attention"])
def test_flops_equal_flop_counter_modes_beyond_the_presets(model):
    x = torch.empty(2, 4, 8, 8, device="meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.to("meta")(x)
    assert inspect_model(model, (2, 4, 8, 8)).total_flops * 2 == counter.get_total_flops()


def test_flops_are_per_image_whatever_the_batch():
    model = meta_model(PRESETS["lenet"])
    one = inspect_model(model, (1, 1, 28, 28))
    eight = inspect_model(model, (8, 1, 28, 28))
    assert eight.total_flops == one.total_flops
    assert eight.total_other_ops == one.total_other_ops


# --- the exercise's split (seed 003) ---------------------------------------------------------


def test_vgg11_conv_and_fc_split_matches_the_exercise_solution():
    split = table_of("vgg11", in_channels=3).conv_fc_split()
    assert (split.conv_params, split.fc_params) == (9_220_480, 119_586_826)
    assert split.conv_flops == 2 * 7_485_456_384


def test_alexnet_conv_and_fc_split_matches_the_exercise_solution():
    split = table_of("alexnet", in_channels=3).conv_fc_split()
    assert (split.conv_params, split.fc_params) == (3_747_200, 43_040_778)
    assert split.conv_flops == 2 * 962_858_112


# --- FLOPs and other ops -------------------------------------------------------------------


def test_conv_flops_are_two_per_multiply_add():
    table = inspect_model(nn.Conv2d(3, 8, 5, padding=2), (1, 3, 16, 16))
    assert table.rows[0].flops == 2 * (8 * 16 * 16) * (3 * 5 * 5)


def test_linear_flops_are_two_per_multiply_add():
    table = inspect_model(nn.Linear(20, 30), (1, 20))
    assert table.total_flops == 2 * 20 * 30


def test_batch_norm_relu_and_pooling_count_as_other_ops():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.MaxPool2d(2))
    conv, bn, relu, pool = inspect_model(model, (1, 1, 10, 10)).rows
    assert conv.other_ops == 0  # no bias: the conv is all FLOPs
    assert bn.other_ops == 4 * 4 * 8 * 8
    assert relu.other_ops == 4 * 8 * 8
    assert pool.other_ops == (2 * 2) * (4 * 4 * 4)
    assert bn.flops == relu.flops == pool.flops == 0


def test_residual_additions_are_counted_on_the_residual_block():
    residuals = rows_of_type(table_of("resnet18"), "Residual")
    assert len(residuals) == 8
    assert all(r.other_ops == math.prod(r.output_shape) for r in residuals)


def test_dense_block_concatenations_are_counted_on_the_dense_block():
    table = table_of("densenet")
    concats = [r for r in table.rows if r.path == "dense_block1.concat"]
    assert all(r.type == "DenseBlock" for r in concats)
    # 64 stem channels + 32, + 64, + 96, + 128 at 24x24: one copy per element of each result.
    assert sum(r.other_ops for r in concats) == (96 + 128 + 160 + 192) * 24 * 24


def test_each_dense_block_concatenation_is_a_row_after_its_conv_block():
    table = table_of("densenet")
    paths = [r.path for r in table.rows if r.block == "dense_block1"]
    assert "dense_block1" not in paths  # no row named like the block in the middle of it
    ends = [i for i, p in enumerate(paths) if p.endswith(".2")]  # each conv block's conv
    assert [paths[i + 1] for i in ends] == ["dense_block1.concat"] * 4
    concats = [r for r in table.rows if r.path == "dense_block1.concat"]
    assert [r.output_shape for r in concats] == [(c, 24, 24) for c in (96, 128, 160, 192)]
    assert [r.other_ops for r in concats] == [c * 24 * 24 for c in (96, 128, 160, 192)]
    assert concats[-1].receptive_field == table.blocks[1].receptive_field


def test_a_container_running_its_own_ops_once_keeps_one_row_named_after_it():
    table = table_of("densenet", block_sizes=(1, 1))
    assert [r.path for r in table.rows if r.type == "DenseBlock"] == [
        "dense_block1", "dense_block2"]


def test_a_module_called_twice_gets_two_rows_and_its_params_once():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 3, padding=1)

        def forward(self, x):
            return self.conv(self.conv(x))

    table = inspect_model(Twice(), (1, 2, 8, 8))
    assert [r.path for r in table.rows] == ["conv", "conv"]
    assert [r.params for r in table.rows] == [2 * 2 * 9 + 2, 0]
    assert table.rows[0].flops == table.rows[1].flops > 0


def test_activation_bytes_are_four_per_output_element():
    row = inspect_model(nn.Conv2d(1, 6, 5), (1, 1, 28, 28)).rows[0]
    assert row.activation_bytes == 6 * 24 * 24 * 4


# --- receptive fields ----------------------------------------------------------------------


def test_two_stacked_3x3_convs_see_5x5():
    model = nn.Sequential(nn.Conv2d(1, 1, 3), nn.Conv2d(1, 1, 3))
    assert [r.receptive_field for r in inspect_model(model, (1, 1, 16, 16)).rows] == [3, 5]


def test_a_stride_2_pool_doubles_the_growth_of_later_layers():
    model = nn.Sequential(nn.Conv2d(1, 1, 3), nn.MaxPool2d(2, 2), nn.Conv2d(1, 1, 3))
    rows = inspect_model(model, (1, 1, 16, 16)).rows
    assert [(r.receptive_field, r.jump) for r in rows] == [(3, 1), (4, 2), (8, 2)]


def test_global_pooling_and_linear_see_the_whole_map():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(2, 3))
    conv, pool, flatten, linear = inspect_model(model, (1, 1, 8, 8)).rows
    assert conv.receptive_field == 3
    assert pool.receptive_field == linear.receptive_field == 8  # 3 + (6 - 1) * 1


def test_inception_takes_the_field_of_its_widest_path():
    table = table_of("googlenet")
    before = next(b for b in table.blocks if b.name == "b2")
    inception = next(r for r in table.rows if r.path == "b3.0")
    assert inception.receptive_field == before.receptive_field + 4 * before.jump  # the 5x5 path


def test_a_block_reports_its_widest_field():
    table = table_of("vgg11")
    block1 = table.blocks[0]
    assert block1.receptive_field == max(
        r.receptive_field for r in table.rows if r.block == "vgg_block1") == 4


# --- memory --------------------------------------------------------------------------------


def test_training_memory_parts_add_up_to_the_total():
    memory = table_of("resnet18").memory(batch_size=32)
    assert memory.total == (memory.weights + memory.gradients + memory.optimizer_state
                            + memory.activations)


def test_plain_sgd_keeps_no_state_momentum_one_copy_adam_two():
    table = table_of("resnet18")
    gradients = table.memory(optimizer="sgd").gradients
    assert table.memory(optimizer="sgd").optimizer_state == 0
    assert table.memory(optimizer="momentum").optimizer_state == gradients
    assert table.memory(optimizer="adam").optimizer_state == 2 * gradients


def test_activation_memory_grows_with_the_batch():
    table = table_of("bn-lenet")
    assert table.memory(batch_size=64).activations == 64 * table.memory(batch_size=1).activations


def test_an_unknown_optimizer_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="momentum"):
        table_of("lenet").memory(optimizer="rmsprop")


def _saved_on_the_cpu(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    """Bytes per image autograd saves in one real training forward, by the type of the layer
    running when a storage was first saved (saved_tensors_hooks, deduplicated by data_ptr);
    parameters, buffers and the input left out, as `saved_for_backward` does."""
    running: list[str] = []
    hooks = [h for m in model.modules() for h in (
        m.register_forward_pre_hook(lambda m, a: running.append(type(m).__name__)),
        m.register_forward_hook(lambda m, a, o: running.pop() and None))]
    keep = [*model.parameters(), *model.buffers(), x]
    skip = {t.untyped_storage().data_ptr() for t in keep}
    saved: dict[int, tuple[str, int]] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in skip and ptr not in saved:
            keep.append(t)
            saved[ptr] = (running[-1], t.untyped_storage().nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model.train()(x)
    for hook in hooks:
        hook.remove()
    by_type: dict[str, int] = {}
    for kind, nbytes in saved.values():
        by_type[kind] = by_type.get(kind, 0) + nbytes // x.shape[0]
    return by_type


@pytest.mark.parametrize("name", ["bn-lenet", "bn-lenet-scratch", "nin-small", "resnet18",
                                  "densenet", "googlenet"])
def test_saved_for_backward_on_meta_is_what_autograd_saves_on_the_cpu(name):
    """The training-memory model against a real batch of 4 on the CPU, layer type by layer
    type: within 1% or 1 KiB (BN's per-channel mean and invstd do not grow with the batch)."""
    spec = PRESETS[name]
    table = table_of(name)
    torch.manual_seed(0)
    real = _saved_on_the_cpu(build(spec), torch.randn(4, spec.in_channels, spec.input_size,
                                                      spec.input_size))
    assert table.saved_by_type.keys() == real.keys()
    for kind, nbytes in real.items():
        assert table.saved_by_type[kind] == pytest.approx(nbytes, rel=0.01, abs=1024), kind
    assert table.saved_bytes == sum(table.saved_by_type.values())


def test_autograd_keeps_less_than_every_output_once_where_relu_and_bn_share_or_skip_outputs():
    # A conv's output is freed once ReLU has its own; BN + in-place ReLU share one storage.
    fractions = {name: table_of(name).saved_bytes / (4 * table_of(name).output_elements)
                 for name in ("nin", "resnet18", "vgg11-small", "googlenet")}
    assert all(0.5 < f < 1 for f in fractions.values()), fractions
    assert fractions["nin"] < 0.65 < fractions["googlenet"]  # GoogLeNet: max-pool indices


def test_saved_layers_follow_autograds_rules():
    inplace = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(True))
    table = inspect_model(inplace, (1, 1, 8, 8))
    # BN keeps the conv's output, the in-place ReLU the BN's output: its own storage, once.
    assert table.saved_by_type == {"BatchNorm2d": 4 * 64 * 4 + 2 * 4 * 4 // 2,
                                   "ReLU": 4 * 64 * 4}
    pooled = inspect_model(nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
                                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 2)),
                           (1, 1, 8, 8))
    # ReLU keeps its output (the conv's is freed); max pooling keeps int64 indices; the
    # Linear keeps the pooled map (Flatten is a view of it).
    assert pooled.saved_by_type == {"ReLU": 4 * 64 * 4, "MaxPool2d": 8 * 16 * 4,
                                    "Linear": 4 * 16 * 4}
    assert pooled.memory(batch_size=8).activations == 8 * pooled.saved_bytes


def test_a_model_that_fails_in_training_mode_falls_back_to_every_output_once():
    class EvalOnly(nn.Module):
        def forward(self, x):
            if self.training:
                raise RuntimeError("eval only")
            return x * 2

    table = inspect_model(nn.Sequential(nn.Conv2d(1, 2, 3), EvalOnly()), (1, 1, 5, 5))
    assert table.saved_bytes is None
    assert table.memory(batch_size=3).activations == 3 * 4 * table.output_elements


def test_inference_memory_is_weights_plus_the_widest_neighbouring_activations():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
    table = inspect_model(model, (1, 1, 8, 8))
    weights = 4 * 9 + 4
    assert table.inference_memory(batch_size=2) == 4 * (weights + 2 * (4 * 64 + 4 * 64))


def test_human_bytes_uses_binary_units():
    assert human_bytes(512) == "512 B"
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(3 * 1024**3) == "3.0 GiB"


# --- the smallest input that works, and where a forward pass breaks ---------------------------


def test_vgg_needs_32_pixels_for_its_five_2x2_pools():
    def vgg_at(size: int) -> nn.Module:
        return build(PRESETS["vgg11"].replace(input_size=size))

    assert smallest_input_size(vgg_at, upper=512) == 32


def test_bn_lenet_without_padding_needs_16_pixels():
    # Two 5x5 convs (no padding) and two 2x2 pools: (s - 4) // 2 - 4 >= 2, so s >= 16.
    def bn_lenet_at(size: int) -> nn.Module:
        return build(PRESETS["bn-lenet"].replace(input_size=size))

    assert smallest_input_size(bn_lenet_at, upper=224) == 16


def test_a_built_vgg_works_down_to_its_own_size_only():
    model = meta_model(PRESETS["vgg11"])
    assert smallest_input_size(model, upper=224) == 224
    assert smallest_input_size(model, upper=200) is None


def test_a_failed_inspection_names_the_layer_where_it_breaks():
    with pytest.raises(InspectionError) as info:
        inspect_model(meta_model(PRESETS["vgg11"]), (1, 1, 96, 96))
    assert info.value.layer == "fc1.0"
    assert "4608" in info.value.message


def test_a_failed_inspection_names_a_conv_whose_input_is_too_small():
    model = nn.Sequential(nn.Conv2d(1, 1, 3), nn.Conv2d(1, 1, 5))
    with pytest.raises(InspectionError) as info:
        inspect_model(model, (1, 1, 6, 6))
    assert info.value.layer == "1"
    assert info.value.message


def test_inspecting_an_input_that_does_not_fit_raises_naming_the_layer():
    with pytest.raises(InspectionError, match="fc1.0") as info:
        inspect_model(meta_model(PRESETS["alexnet"]), (1, 1, 96, 96))
    assert info.value.layer == "fc1.0"


def test_checking_and_summarising_a_spec_run_one_forward_pass(monkeypatch):
    spec = PRESETS["lenet"].replace(num_classes=7)  # a spec no other test has inspected
    passes = []

    class Counting(layers.Recorder):  # every recorded meta forward starts a Recorder
        def __init__(self, model):
            passes.append(model)
            super().__init__(model)

    monkeypatch.setattr(layers, "Recorder", Counting)
    spec = spec_from_data(spec.to_dict())  # validates, as `cnnlab summary` does
    check(spec)
    assert inspect_spec(spec).output_shape == (7,)
    assert len(passes) == 1


def test_a_spec_holding_lists_is_refused_before_any_cached_inspection():
    # validate refuses lists in tuple fields, so every spec that reaches the cached
    # inspect_spec hashes.
    spec = PRESETS["vgg11"].replace(conv_arch=[[1, 64], [1, 128]])
    assert [p.field for p in validate(spec)] == ["conv_arch"]


# --- the caller's module is left alone ------------------------------------------------------


def test_a_real_module_stays_on_the_cpu_with_the_same_weights_and_mode():
    model = real_small("resnet18").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    inspect_model(model, (1, 1, 32, 32))
    after = model.state_dict()
    assert all(v.device.type == "cpu" for v in after.values())
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(m.training for m in model.modules())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_a_meta_module_is_used_in_place_and_keeps_its_mode():
    model = meta_model(PRESETS["bn-lenet"]).train()
    inspect_model(model, (1, 1, 28, 28))
    assert all(m.training for m in model.modules())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


# --- plain data out ------------------------------------------------------------------------


def test_inspect_spec_is_cached_by_spec():
    assert inspect_spec(PRESETS["nin"]) is inspect_spec(PRESETS["nin"])


def test_to_dict_is_json_with_the_clis_fields():
    data = json.loads(json.dumps(table_of("googlenet").to_dict()))
    assert data["total_params"] == 5_977_530
    assert data["output_shape"] == [10]
    assert data["total_flops"] > 0
    layer = data["layers"][0]
    assert {"name", "type", "output_shape", "params", "flops", "other_ops",
            "receptive_field", "activation_bytes"} <= set(layer)


def test_format_table_shows_blocks_layers_separators_and_totals():
    text = table_of("vgg11").format_table()
    assert "vgg_block1" in text and "  vgg_block1.0.0" in text
    assert "128,806,154" in text
    assert "Training memory at batch 256" in text
    widths = {len(line) for line in text.splitlines()[2:8] if line}
    assert len(widths) <= 2  # columns line up (block lines and layer lines)
