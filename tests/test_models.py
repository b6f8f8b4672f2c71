"""The presets reproduce the textbook's parameter counts and printed output shapes."""

from __future__ import annotations

import pytest
import torch
import torchvision

from cnnlab.arch.models import build
from cnnlab.arch.models.lenet import BatchNorm
from cnnlab.arch.presets import PRESETS, VGG_B, VGG_D, VGG_E
from cnnlab.arch.specs import VGGSpec
from tests.conftest import block_shapes, meta_model


def params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# The reference table of the chapter's numbers: its code with a 1-channel input and 10 classes.
TEXTBOOK_PARAMS = {
    "alexnet": 46_764_746,
    "vgg11": 128_806_154,
    "nin": 1_992_166,
    "googlenet": 5_977_530,
    "resnet18": 11_178_378,
    "densenet": 758_226,
    "bn-lenet": 44_878,
    "bn-lenet-scratch": 44_878,
    "lenet": 61_706,  # d2l 6.6's LeNet-5
}


@pytest.mark.parametrize("name", TEXTBOOK_PARAMS)
def test_preset_parameter_count_matches_the_book(name):
    assert params(meta_model(PRESETS[name])) == TEXTBOOK_PARAMS[name]


def test_vgg11_at_96_has_the_exercise_solutions_count():
    assert params(meta_model(PRESETS["vgg11"].replace(input_size=96))) == 44_920_074


def test_alexnet_shapes_match_7_1_2():
    shapes = list(block_shapes(PRESETS["alexnet"]).values())
    assert shapes[:8] == [(96, 54, 54), (96, 26, 26), (256, 26, 26), (256, 12, 12),
                          (384, 12, 12), (384, 12, 12), (256, 12, 12), (256, 5, 5)]
    assert shapes[-1] == (10,)


def test_vgg11_block_shapes_match_7_2_2():
    shapes = block_shapes(PRESETS["vgg11"])
    assert [shapes[f"vgg_block{i}"] for i in range(1, 6)] == [
        (64, 112, 112), (128, 56, 56), (256, 28, 28), (512, 14, 14), (512, 7, 7)]
    assert shapes["fc1"] == (4096,) and shapes["output"] == (10,)


def test_nin_shapes_match_7_3_2():
    shapes = block_shapes(PRESETS["nin"])
    assert list(shapes.values()) == [
        (96, 54, 54), (96, 26, 26), (256, 26, 26), (256, 12, 12), (384, 12, 12), (384, 5, 5),
        (384, 5, 5), (10, 5, 5), (10, 1, 1), (10,)]


def test_nin_for_28_pixels_matches_the_lecture_notes():
    shapes = list(block_shapes(PRESETS["nin-small"]).values())
    assert shapes[:6] == [(24, 26, 26), (24, 25, 25), (64, 14, 14), (64, 13, 13),
                          (96, 6, 6), (96, 2, 2)]
    assert shapes[-1] == (10,)


def test_googlenet_stage_shapes_match_7_4_2():
    shapes = block_shapes(PRESETS["googlenet"])
    assert [shapes[b] for b in ("b1", "b2", "b3", "b4", "b5", "output")] == [
        (64, 24, 24), (192, 12, 12), (480, 6, 6), (832, 3, 3), (1024,), (10,)]


def test_resnet18_stage_shapes_at_96():
    shapes = block_shapes(PRESETS["resnet18"])
    assert [shapes[b] for b in ("stem", "resnet_block1", "resnet_block2", "resnet_block3",
                                "resnet_block4")] == [
        (64, 24, 24), (64, 24, 24), (128, 12, 12), (256, 6, 6), (512, 3, 3)]


def test_resnet18_at_224_matches_7_6_3():
    shapes = block_shapes(PRESETS["resnet18"].replace(input_size=224))
    assert [shapes[f"resnet_block{i}"] for i in range(1, 5)] == [
        (64, 56, 56), (128, 28, 28), (256, 14, 14), (512, 7, 7)]


def test_densenet_transitions_halve_channels_and_size():
    shapes = block_shapes(PRESETS["densenet"])
    assert shapes["dense_block1"] == (64 + 4 * 32, 24, 24)
    assert shapes["transition_block1"] == (96, 12, 12)
    assert shapes["dense_block4"] == (120 + 4 * 32, 3, 3)  # 240 channels halved, then +4x32
    assert shapes["output"] == (10,)


def test_bn_lenet_shapes_match_7_5_4():
    shapes = block_shapes(PRESETS["bn-lenet"])
    assert shapes["conv1"] == (6, 12, 12) and shapes["conv2"] == (16, 4, 4)


@pytest.mark.parametrize(("name", "config", "tv"), [
    ("vgg13", VGG_B, torchvision.models.vgg13),
    ("vgg16", VGG_D, torchvision.models.vgg16),
    ("vgg19", VGG_E, torchvision.models.vgg19),
])
def test_vgg_presets_are_the_papers_configurations(name, config, tv):
    spec = PRESETS[name]
    assert spec.conv_arch == config
    # torchvision builds the VGG paper's configurations: same params with 3 channels at 224.
    with torch.device("meta"):
        reference = tv(num_classes=10)
    assert params(meta_model(spec.replace(in_channels=3))) == params(reference)


def test_vgg16_has_thirteen_convolutions():
    convs = [m for m in meta_model(PRESETS["vgg16"]).modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 13


def test_vgg11_small_divides_channels_by_four_like_the_book():
    spec = PRESETS["vgg11-small"]
    widths = [m.out_channels for m in meta_model(spec).modules()
              if isinstance(m, torch.nn.Conv2d)]
    assert widths == [16, 32, 64, 64, 128, 128, 128, 128]


def test_every_preset_builds_on_meta_without_allocating():
    for name, spec in PRESETS.items():
        model = meta_model(spec)
        assert all(p.is_meta for p in model.parameters()), name


def test_no_lazy_modules_anywhere():
    for spec in PRESETS.values():
        assert not any(isinstance(m, torch.nn.modules.lazy.LazyModuleMixin)
                       for m in meta_model(spec).modules())


@pytest.mark.parametrize("name", list(PRESETS))
def test_real_forward_at_small_width_gives_class_scores(name):
    spec = PRESETS[name]
    spec = spec.replace(width=0.125, input_size=max(spec.input_size // 2, 28))
    if spec.family in ("alexnet", "vgg"):  # keep the dense head small on the CPU
        spec = spec.replace(hidden=(64, 64))
    torch.manual_seed(0)
    model = build(spec).eval()
    with torch.no_grad():
        y = model(torch.rand(2, 1, spec.input_size, spec.input_size))
    assert y.shape == (2, 10) and torch.isfinite(y).all()


def test_resnet_bottleneck_blocks_expand_four_times():
    model = meta_model(PRESETS["resnet50"])
    first = model.resnet_block1[0]
    assert (first.conv1.out_channels, first.conv2.out_channels, first.conv3.out_channels) == (
        64, 64, 256)
    assert first.shortcut is not None  # 64 -> 256 channels needs the 1x1 conv


def test_residual_names_its_layers_as_torchvision_does():
    basic = meta_model(PRESETS["resnet18"]).resnet_block2[0]
    bottleneck = meta_model(PRESETS["resnet50"]).resnet_block2[0]
    assert [name for name, _ in basic.named_children()] == [
        "conv1", "bn1", "relu1", "conv2", "bn2", "relu2", "shortcut", "relu_out"]
    assert [conv for conv, _, _ in basic.main_path()] == [basic.conv1, basic.conv2]
    assert [bn for _, bn, _ in bottleneck.main_path()] == [
        bottleneck.bn1, bottleneck.bn2, bottleneck.bn3]
    assert bottleneck.conv2.stride == (2, 2)  # the stride sits on the 3x3 conv


def test_preactivation_resnet_puts_batch_norm_before_the_convolution():
    spec = PRESETS["resnet18"].replace(preact=True, width=0.125, input_size=32)
    block = build(spec).resnet_block2[0]
    assert block.bn1.num_features == block.conv1.in_channels
    y = block(torch.rand(2, block.conv1.in_channels, 8, 8))
    assert y.shape == (2, block.conv2.out_channels, 4, 4)
    assert (y < 0).any()  # no ReLU after the addition


def test_scratch_batch_norm_matches_torch_batch_norm():
    torch.manual_seed(0)
    x = torch.randn(8, 6, 5, 5)
    ours, theirs = BatchNorm(6, num_dims=4), torch.nn.BatchNorm2d(6)
    assert torch.allclose(ours(x), theirs(x), atol=1e-5)
    assert torch.allclose(ours.moving_mean.flatten(), theirs.running_mean, atol=1e-6)
    ours.eval()
    expected = (x - ours.moving_mean) / torch.sqrt(ours.moving_var + ours.eps)
    assert torch.allclose(ours(x), expected, atol=1e-6)  # gamma 1, beta 0: moving stats only


def test_scratch_batch_norm_keeps_its_buffers_in_place_across_steps_as_torchs_does():
    # A training step captured as a CUDA graph replays on the buffers' memory: it must stay put.
    torch.manual_seed(0)
    ours, theirs = BatchNorm(6, num_dims=4), torch.nn.BatchNorm2d(6)
    where = ours.moving_mean.data_ptr(), ours.moving_var.data_ptr()
    for _ in range(3):
        x = (torch.randn(8, 6, 5, 5) * 2 + 1).requires_grad_()
        ours(x).sum().backward()
        theirs(x)
    assert (ours.moving_mean.data_ptr(), ours.moving_var.data_ptr()) == where
    assert torch.allclose(ours.moving_mean.flatten(), theirs.running_mean, atol=1e-6)
    assert not ours.moving_mean.requires_grad


def test_scratch_batch_norm_updates_moving_statistics_only_in_training():
    bn = BatchNorm(3, num_dims=2)
    bn(torch.randn(16, 3) + 5)
    trained = bn.moving_mean.clone()
    assert (trained > 0.1).all()
    bn.eval()
    bn(torch.randn(16, 3) + 5)
    assert torch.equal(bn.moving_mean, trained)


def test_nin_with_one_1x1_conv_per_block_has_fewer_layers():
    two = meta_model(PRESETS["nin"])
    one = meta_model(PRESETS["nin"].replace(one_by_one=1))
    count = lambda m: sum(isinstance(x, torch.nn.Conv2d) for x in m.modules())  # noqa: E731
    assert count(two) - count(one) == 4  # four nin_blocks lose one 1x1 conv each


def test_googlenet_with_batch_norm_adds_a_norm_after_every_conv():
    model = meta_model(PRESETS["googlenet"].replace(batch_norm=True))
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    norms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert convs == norms


def test_width_scales_every_channel_count():
    half = meta_model(VGGSpec(width=0.5))
    assert [m.out_channels for m in half.modules() if isinstance(m, torch.nn.Conv2d)][:2] == [
        32, 64]
