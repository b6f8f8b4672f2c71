"""Looking inside a real, briefly trained BN-LeNet (d2l 7.5): its filters, its feature maps
block by block, gamma and beta of both BatchNorm kinds, and its predictions on the sample."""

from __future__ import annotations

import pytest
import torch

from cnnlab.analysis.layers import inspect_spec
from cnnlab.arch.checks import SpecError, check
from cnnlab.arch.models.lenet import BatchNorm
from cnnlab.arch.presets import PRESETS
from cnnlab.errors import CnnlabError
from cnnlab.runs.checkpoints import CheckpointError
from cnnlab.runs.store import RunStore
from cnnlab.training.data import load_fashion_mnist
from cnnlab.training.setup import make_model
from cnnlab.views import inside
from tests.conftest import ONE_EPOCH, record_tiny_run

BN_WIDTHS = [6, 16, 120, 84]  # conv1, conv2, fc1, fc2 of BN-LeNet (d2l 7.5.4)
BN_PATHS = ["conv1.1", "conv2.1", "fc1.1", "fc2.1"]




@pytest.fixture(scope="module")
def store(tmp_path_factory) -> RunStore:
    return RunStore(tmp_path_factory.mktemp("inside") / "runs")


@pytest.fixture(scope="module")
def runs(store: RunStore) -> dict[str, str]:
    """Run ids by BatchNorm kind: "torch" (nn.BatchNorm2d/1d) and "scratch" (d2l's own)."""
    return {"torch": record_tiny_run(store, "bn-lenet"), "scratch": record_tiny_run(store, "bn-lenet-scratch")}


@pytest.fixture(scope="module")
def model(store: RunStore, runs: dict[str, str]) -> torch.nn.Module:
    return inside.load_run_model(store, runs["torch"])


@pytest.fixture(scope="module")
def sample():
    return load_fashion_mnist(source="sample")


# ---------------------------------------------------------------- loading


def test_a_run_loads_from_its_final_checkpoint_in_eval_mode(store, runs, model) -> None:
    state = store.load_checkpoint(runs["torch"], "final")["state_dict"]
    assert not model.training
    params = sum(p.numel() for p in model.parameters())
    assert params == inspect_spec(PRESETS["bn-lenet"]).total_params
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_an_epoch_checkpoint_loads_too(store, runs) -> None:
    assert store.checkpoints(runs["scratch"]) == ["epoch-001", "final"]
    model = inside.load_run_model(store, runs["scratch"], "epoch-001")
    assert isinstance(model.conv1[1], BatchNorm)


def test_a_missing_checkpoint_says_which_ones_exist(store, runs) -> None:
    with pytest.raises(inside.NoCheckpoint, match="epoch-001, final"):
        inside.load_run_model(store, runs["torch"], "epoch-009")


DAMAGE = {
    "empty": b"",
    "random bytes": bytes(range(256)) * 8,
    "a pickle of other things": __import__("pickle").dumps({"not": "weights", "x": {1, 2}}),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_checkpoint_is_a_message_offering_the_others(store, model, damage) -> None:
    run = store.create("bn-lenet", PRESETS["bn-lenet"].to_dict(), ONE_EPOCH.to_dict())
    store.save_checkpoint(run.id, "epoch-001", model.state_dict(), {})
    store.save_checkpoint(run.id, "final", model.state_dict(), {})
    store.checkpoint_path(run.id, "final").write_bytes(DAMAGE[damage])
    with pytest.raises(CheckpointError) as caught:
        inside.load_run_model(store, run.id, "final")
    assert "'final' is damaged" in str(caught.value) and "epoch-001" in str(caught.value)
    assert isinstance(caught.value, CnnlabError)  # what pages and the CLI catch
    assert inside.load_run_model(store, run.id, "epoch-001") is not None  # the others still load


def test_a_run_without_checkpoints_says_when_one_will_come(store) -> None:
    run = store.create("bn-lenet", PRESETS["bn-lenet"].to_dict(), ONE_EPOCH.to_dict())
    with pytest.raises(inside.NoCheckpoint, match="after each epoch"):
        inside.load_run_model(store, run.id)
    assert inside.latest_checkpoint(store, run.id) is None


def test_latest_checkpoint_is_final_else_the_newest_epoch(store, model) -> None:
    run = store.create("bn-lenet", PRESETS["bn-lenet"].to_dict(), ONE_EPOCH.to_dict())
    for name in ("epoch-001", "epoch-002"):
        store.save_checkpoint(run.id, name, model.state_dict(), {})
    assert inside.latest_checkpoint(store, run.id) == "epoch-002"
    store.save_checkpoint(run.id, "final", model.state_dict(), {})
    assert inside.latest_checkpoint(store, run.id) == "final"


def test_weights_that_do_not_fit_the_spec_raise_an_inside_error(store, model) -> None:
    run = store.create("lenet", PRESETS["lenet"].to_dict(), ONE_EPOCH.to_dict())
    store.save_checkpoint(run.id, "final", model.state_dict(), {})  # BN-LeNet's weights
    with pytest.raises(inside.InsideError, match="does not fit"):
        inside.load_run_model(store, run.id)


def test_an_untrained_model_is_where_training_starts() -> None:
    spec = PRESETS["bn-lenet"]
    for seed in (0, 3):
        expected = make_model(spec, seed).state_dict()
        got = inside.untrained_model(spec, seed).state_dict()
        assert all(torch.equal(got[k], v) for k, v in expected.items())
    assert not torch.equal(inside.first_layer_filters(inside.untrained_model(spec, 0)),
                           inside.first_layer_filters(inside.untrained_model(spec, 1)))


# ---------------------------------------------------------------- filters and feature maps


def test_first_layer_filters_are_six_5x5_filters_that_training_changed(model) -> None:
    filters = inside.first_layer_filters(model)
    assert filters.shape == (6, 1, 5, 5)
    assert torch.equal(filters, model.conv1[0].weight.detach())
    before = inside.first_layer_filters(inside.untrained_model(PRESETS["bn-lenet"], 0))
    assert not torch.allclose(filters, before)


def test_feature_maps_follow_bn_lenet_block_by_block(model, sample) -> None:
    maps = inside.feature_maps(model, sample.test_images[0], 28, include_input=True)
    assert [(name, tuple(m.shape)) for name, m in maps] == [
        ("input", (1, 28, 28)), ("conv1", (6, 12, 12)), ("conv2", (16, 4, 4))]
    assert maps[0][1].max() <= 1.0 and maps[0][1].min() >= 0.0  # pixels scaled as in training


def test_feature_maps_resize_the_image_to_the_input_size(sample) -> None:
    model = inside.untrained_model(PRESETS["bn-lenet"].replace(input_size=32))
    maps = dict(inside.feature_maps(model, sample.test_images[0], 32, include_input=True))
    assert maps["input"].shape == (1, 32, 32) and maps["conv1"].shape == (6, 14, 14)


def test_feature_maps_leave_no_hooks_and_the_mode_as_it_was(model, sample) -> None:
    model.train()
    try:
        inside.feature_maps(model, sample.test_images[1:2], 28)
        assert model.training
        assert all(not child._forward_hooks for child in model.children())
    finally:
        model.eval()


# ---------------------------------------------------------------- batch norm


@pytest.mark.parametrize("kind", ["torch", "scratch"])
def test_batch_norm_layers_are_found_for_both_kinds(store, runs, kind) -> None:
    layers = inside.batch_norm_layers(inside.load_run_model(store, runs[kind]))
    assert [layer.path for layer in layers] == BN_PATHS
    for layer, width in zip(layers, BN_WIDTHS):
        for values in (layer.gamma, layer.beta, layer.running_mean, layer.running_var):
            assert values.shape == (width,)
        assert (layer.running_var > 0).all()


def test_scratch_batch_norm_reads_gamma_beta_and_moving_statistics(store, runs) -> None:
    model = inside.load_run_model(store, runs["scratch"])
    first = inside.batch_norm_layers(model)[0]
    bn = model.conv1[1]
    assert torch.equal(first.gamma, bn.gamma.detach().reshape(-1))
    assert torch.equal(first.beta, bn.beta.detach().reshape(-1))
    assert torch.equal(first.running_mean, bn.moving_mean.reshape(-1))
    assert torch.equal(first.running_var, bn.moving_var.reshape(-1))


def test_gamma_and_beta_start_at_one_and_zero_and_training_moves_them(model) -> None:
    untrained = inside.batch_norm_layers(inside.untrained_model(PRESETS["bn-lenet-scratch"]))
    assert all(torch.equal(bn.gamma, torch.ones_like(bn.gamma)) for bn in untrained)
    assert all(torch.equal(bn.beta, torch.zeros_like(bn.beta)) for bn in untrained)
    trained = inside.batch_norm_layers(model)
    assert not torch.allclose(trained[0].gamma, torch.ones(6))


def test_a_network_without_batch_norm_has_no_layers_to_show() -> None:
    assert inside.batch_norm_layers(inside.untrained_model(PRESETS["lenet"])) == []


# ---------------------------------------------------------------- predictions


def test_predictions_are_probabilities_and_their_argmax(model, sample) -> None:
    probs, labels = inside.predict(model, sample.test_images[:300], 28)
    assert probs.shape == (300, 10) and labels.shape == (300,)
    assert torch.allclose(probs.sum(dim=1), torch.ones(300), atol=1e-5)
    assert torch.equal(labels, probs.argmax(dim=1))


def test_the_confusion_matrix_counts_every_image_once(model, sample) -> None:
    result = inside.evaluate_images(model, sample.test_images, sample.test_labels, 28)
    assert result.matrix.shape == (10, 10)
    assert int(result.matrix.sum()) == len(sample.test_labels) == 1000
    per_class = torch.bincount(sample.test_labels, minlength=10)
    assert result.matrix.sum(dim=1).tolist() == per_class.tolist()


def test_predictions_reproduce_the_accuracy_the_run_recorded(store, runs, model, sample) -> None:
    result = inside.evaluate_images(model, sample.test_images, sample.test_labels, 28)
    recorded = store.get(runs["torch"]).result["metrics"]["test_acc"]
    assert result.accuracy == pytest.approx(recorded, abs=0.002)
    assert result.accuracy > 0.1  # better than guessing after one epoch
    wrong = result.mistakes()
    assert len(wrong) == round((1 - result.accuracy) * 1000)
    assert all(result.preds[i] != result.targets[i] for i in wrong[:20])
    assert result.mistakes(5) == wrong[:5]


def test_confusion_matrix_puts_true_classes_in_rows() -> None:
    matrix = inside.confusion_matrix(torch.tensor([1, 1, 2, 0]), torch.tensor([0, 1, 2, 0]), 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    with pytest.raises(ValueError):
        inside.confusion_matrix(torch.tensor([1]), torch.tensor([1, 2]))


def test_suggested_eval_size_keeps_big_networks_quick() -> None:
    assert inside.suggested_eval_size(inspect_spec(PRESETS["bn-lenet"]).total_flops) == 1000
    assert inside.suggested_eval_size(inspect_spec(PRESETS["vgg16"]).total_flops) == 50
    resnet = inside.suggested_eval_size(inspect_spec(PRESETS["resnet18"]).total_flops)
    assert resnet * inspect_spec(PRESETS["resnet18"]).total_flops <= inside.EVAL_FLOPS_BUDGET
    assert resnet in inside.EVAL_SIZES


# ---------------------------------------------------------------- what the page may show


def test_only_runs_with_weights_are_offered(store, runs) -> None:
    queued = store.create("bn-lenet", PRESETS["bn-lenet"].to_dict(), {})
    offered = {r.id for r in inside.runs_with_weights(store)}
    assert set(runs.values()) <= offered and queued.id not in offered


def test_feature_maps_and_predictions_need_a_fashion_mnist_network() -> None:
    assert inside.fits_fashion_mnist(PRESETS["bn-lenet"])
    assert not inside.fits_fashion_mnist(PRESETS["bn-lenet"].replace(in_channels=3))
    assert not inside.fits_fashion_mnist(PRESETS["bn-lenet"].replace(num_classes=100))


def test_an_invalid_edited_spec_is_refused_before_it_is_built() -> None:
    with pytest.raises(SpecError):
        check(PRESETS["vgg11"].replace(input_size=16))


def test_small_networks_expand_every_batch_norm_layer_and_big_ones_the_first() -> None:
    assert inside.layers_to_expand(["a", "b"]) == ["a", "b"]
    assert inside.layers_to_expand([f"l{i}" for i in range(20)]) == ["l0"]


def test_the_books_gamma_and_beta_are_quoted_for_lenet_only(model) -> None:
    layers = inside.batch_norm_layers(model)
    note = inside.textbook_bn_note(PRESETS["bn-lenet"], layers)
    assert note is not None and "d2l 7.5.4" in note and "γ = 2.16" in note
    assert inside.textbook_bn_note(PRESETS["resnet18"], layers) is None


def test_a_runs_subject_keys_its_checkpoint_and_its_untrained_start(store, runs) -> None:
    run = store.get(runs["torch"])
    subject = inside.Subject.of_run(run, "final")
    assert subject.key == ("run", run.id, "final") and subject.after == "After (final)"
    assert subject.before == ("spec", PRESETS["bn-lenet"].to_json(), str(inside.run_seed(run)))
    before = inside.subject_model(store, subject.before)
    assert torch.equal(before.state_dict()["conv1.0.weight"],
                       make_model(PRESETS["bn-lenet"], inside.run_seed(run)).state_dict()[
                           "conv1.0.weight"])
    trained = inside.subject_model(store, subject.key)
    assert not torch.equal(trained.state_dict()["conv1.0.weight"],
                           before.state_dict()["conv1.0.weight"])
    untrained = inside.Subject.of_spec(PRESETS["lenet"], 3)
    assert untrained.key == ("spec", PRESETS["lenet"].to_json(), "3") and untrained.before is None
    assert subject.trained and not untrained.trained


def test_the_checkpoint_picker_follows_the_latest_then_lists_the_newest_first(store, runs) -> None:
    choices = inside.checkpoint_choices(store, runs["torch"])
    assert choices[0] == inside.LATEST and choices[1:] == store.checkpoints(runs["torch"])[::-1]
    assert inside.checkpoint_option(inside.LATEST, "final") == "latest (final)"
    assert inside.checkpoint_option(inside.LATEST, None) == inside.LATEST
    assert inside.chosen_checkpoint(inside.LATEST, "final") == "final"
    assert inside.chosen_checkpoint(inside.LATEST, None) is None  # nothing saved yet
    assert inside.chosen_checkpoint("epoch-001", "final") == "epoch-001"


def test_the_caption_names_the_network_its_size_and_weights_escaped() -> None:
    caption = inside.subject_caption("*mine*", PRESETS["bn-lenet"], "untrained, seed 0")
    params = inspect_spec(PRESETS["bn-lenet"]).total_params
    assert caption == (f"**\\*mine\\*** (lenet) at 28×28 px · {params:,} parameters · "
                       "untrained, seed 0")


def test_predictions_use_the_sizes_the_sample_has_and_the_gallery_its_first_or_wrong_images(
        model, sample) -> None:
    assert inside.eval_sizes(300) == [50, 100, 200]
    result = inside.evaluate_images(model, sample.test_images[:50], sample.test_labels[:50], 28)
    assert inside.gallery(result, mistakes=False, size=16) == list(range(16))
    assert inside.gallery(result, mistakes=True, size=4) == result.mistakes(4)


def _evaluation(preds: list[int], targets: list[int], classes: int = 4) -> inside.Evaluation:
    p, t = torch.tensor(preds), torch.tensor(targets)
    return inside.Evaluation(torch.zeros(len(p), classes), p, t,
                             inside.confusion_matrix(p, t, classes))


def test_the_classes_never_predicted_are_those_shown_but_never_picked() -> None:
    result = _evaluation(preds=[0, 0, 1, 1], targets=[0, 2, 1, 2])
    assert result.never_predicted() == [2]  # class 3 has no image here: not counted
    assert _evaluation([0, 1, 2], [0, 1, 2]).never_predicted() == []


def test_a_trained_nin_that_never_predicts_a_class_is_told_why() -> None:
    names = ("T-shirt", "Trouser", "*Pullover*", "Dress")
    result = _evaluation(preds=[0, 0, 1, 1], targets=[0, 2, 1, 3])
    note = inside.never_predicted_note(result, PRESETS["nin"], trained=True, class_names=names)
    assert note.startswith(r"Never predicted on these images: **\*Pullover\***, **Dress**")
    assert "ReLU on the class scores" in note and "0.05" in note
    other = inside.never_predicted_note(result, PRESETS["alexnet"], trained=True,
                                        class_names=names)
    assert "more epochs may help" in other and "ReLU" not in other
    # untrained networks pick few classes anyway; a network that predicts every class shown
    assert inside.never_predicted_note(result, PRESETS["nin"], trained=False,
                                       class_names=names) is None
    assert inside.never_predicted_note(_evaluation([0, 1], [0, 1]), PRESETS["nin"],
                                       trained=True, class_names=names) is None
