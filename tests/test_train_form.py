"""The Train page's rules without Streamlit: the form's values to a config, and a run's words."""

from __future__ import annotations

import math

from cnnlab.analysis.layers import inspect_spec
from cnnlab.arch.presets import PRESETS
from cnnlab.runs.live import progress
from cnnlab.runs.store import Run, Status
from cnnlab.training import resources
from cnnlab.training.config import DATA_CHOICES, OPTIMIZERS, SCHEDULES, TrainConfig
from cnnlab.training.recipes import TEXTBOOK_RESULTS
from cnnlab.views import run_display, train_form
from cnnlab.views.text import short


def form(**changes) -> dict:
    """What the widgets hold on a first visit with the sample data on the CPU, then `changes`."""
    values = train_form.first_values(TrainConfig(), full_found=False, gpus=[])
    return {**values, **changes}


def test_a_first_visit_fills_every_field_with_the_textbook_and_all_the_data():
    values = train_form.first_values(train_form.default_config(PRESETS["alexnet"]),
                                     full_found=False, gpus=[])
    assert set(values) == set(train_form.FIELDS)
    assert (values["epochs"], values["batch_size"], values["lr"]) == (10, 128, 0.01)
    assert values["data"] == "sample" and values["device"] == "cpu"
    assert values["subset"] == resources.train_size("sample")
    assert train_form.first_values(TrainConfig(), True, ["H200"])["device"] == "cuda"


def test_the_form_makes_the_config_it_shows():
    config, problems = train_form.config_from_form(form(epochs=3, lr=0.5))
    assert problems == [] and (config.epochs, config.lr, config.data) == (3, 0.5, "sample")


def test_all_the_training_images_means_no_subset():
    config, _ = train_form.config_from_form(form())
    assert config.subset is None
    config, _ = train_form.config_from_form(form(subset=1000))
    assert config.subset == 1000


def test_momentum_counts_only_for_sgd():
    config, _ = train_form.config_from_form(form(optimizer="adam", momentum=0.9))
    assert config.momentum == 0.0
    config, _ = train_form.config_from_form(form(optimizer="sgd", momentum=0.9))
    assert config.momentum == 0.9


def test_bad_values_come_back_as_train_configs_problems_by_field():
    config, problems = train_form.config_from_form(form(epochs=0, lr=-1.0, label_smoothing=1.5))
    assert config is None
    assert {p.field for p in problems} == {"epochs", "lr", "label_smoothing"}


def test_a_subset_larger_than_the_data_here_is_a_problem_of_the_subset():
    config, problems = train_form.config_from_form(form(subset=5000))
    assert config is None and [p.field for p in problems] == ["subset"]


def test_the_recipe_note_names_the_books_section_and_result():
    assert "d2l 7.5.5" in train_form.recipe_note(PRESETS["bn-lenet"])
    assert "0.814" in train_form.recipe_note(PRESETS["bn-lenet"])
    custom = PRESETS["resnet18"].replace(width=0.5)
    assert train_form.recipe_note(custom).startswith("The book does not train resnet-custom")
    assert train_form.recipe_values(custom) == {"epochs": 10, "batch_size": 256, "lr": 0.05}


def test_the_launch_check_splits_the_memory_it_needs():
    config = TrainConfig(data="sample", device="cpu", batch_size=256)
    check = train_form.launch_check(PRESETS["bn-lenet"], config)
    assert check.fits and "needs about" in check.message
    assert check.breakdown.startswith("Estimate: weights ")
    assert "data and PyTorch" in check.breakdown


def run(**fields) -> Run:
    return Run(**{"id": "r1", "status": Status.DONE, "model": "bn-lenet", "spec": {},
                  "config": {"lr": 1.0, "batch_size": 256, "optimizer": "sgd"},
                  "created_at": 0.0, **fields})


def test_a_runs_model_name_and_message_show_literally():
    evil = run(model="**bold**", message="loss was ![x](http://e/x.png)")
    assert "\\*\\*bold\\*\\*" in run_display.heading(evil)
    text, kind = run_display.ending(evil)
    assert kind == "success" and text.startswith("**Done.** Loss was !\\[x\\]")


def test_how_an_ended_run_is_announced():
    assert run_display.ending(run(status=Status.DIVERGED, message="loss is nan"))[1] == "error"
    assert run_display.ending(run(status=Status.CANCELLED))[0] == "**Cancelled.**"


def test_the_runs_table_keeps_missing_numbers_numeric():
    runs = [run(), run(id="r2", status=Status.QUEUED, data_source="sample")]
    columns = run_display.runs_columns(runs, [progress(r, []) for r in runs])
    assert columns["status"] == ["done", "waiting"] and columns["data"] == ["auto", "sample"]
    assert math.isnan(columns["best test acc"][1]) and columns["progress"] == [1.0, 0.0]


def test_the_watched_run_is_the_kept_one_else_the_links_and_only_a_known_one():
    known = {"r1", "r2"}
    assert run_display.watched("r1", "r2", known) == "r1"
    assert run_display.watched(None, "r2", known) == "r2"  # a reload: the URL's run
    assert run_display.watched("gone", None, known) is None  # deleted meanwhile
    assert run_display.watched(None, None, known) is None
    assert run_display.watched(None, "r9") == "r9"  # no runs to check against: the caller does


def test_the_books_line_is_drawn_only_for_a_run_on_the_books_full_data():
    assert run_display.book_test_acc(run(data_source="/usr/share/datasets/fashion-mnist")) == (
        TEXTBOOK_RESULTS["bn-lenet"].test_acc)
    assert run_display.book_test_acc(run(data_source="sample")) is None
    assert run_display.book_test_acc(run(model="bn-lenet-custom")) is None


def test_every_choice_the_config_accepts_has_a_name_on_the_form():
    assert set(train_form.OPTIMIZER_NAMES) == set(OPTIMIZERS)
    assert set(train_form.SCHEDULE_NAMES) == set(SCHEDULES)
    assert set(train_form.DATA_NAMES) <= set(DATA_CHOICES)


def test_a_resized_preset_keeps_its_recipe_note_but_not_the_books_result():
    resized = PRESETS["bn-lenet"].replace(input_size=32)
    assert train_form.recipe_values(resized)["lr"] == 1.0  # bn-lenet's recipe
    note = train_form.recipe_note(resized)
    assert "textbook's for bn-lenet" in note and "d2l 7.5.5" in note
    assert "0.814" not in note  # the book trained it at 28 px


def test_the_precise_bn_switch_sets_the_batches_of_recalibration():
    assert form()["bn_recalibration"] is True
    on, _ = train_form.config_from_form(form())
    off, _ = train_form.config_from_form(form(bn_recalibration=False))
    assert (on.bn_recalibration, off.bn_recalibration) == (train_form.PRECISE_BN_BATCHES, 0)


def test_a_run_name_is_trimmed_capped_and_empty_means_none():
    assert train_form.run_name("  my pair  ") == "my pair"
    assert train_form.run_name("   ") is None
    assert len(train_form.run_name("x" * 500)) == train_form.MAX_NAME


def test_a_bad_sweep_or_duplicate_comes_back_as_field_named_problems(tmp_path):
    from cnnlab.runs.jobs import JobManager
    from cnnlab.runs.store import RunStore

    manager = JobManager(RunStore(tmp_path / "runs"), cpu_slots=0)
    try:
        spec, config = PRESETS["bn-lenet"], TrainConfig(data="sample", device="cpu")
        bad = train_form.sweep(manager, spec, config, "lr", "0.1, -1")
        assert [p.field for p in bad.problems] == ["lr"] and bad.ids == ()
        assert manager.store.list() == []  # nothing queued
        good = train_form.sweep(manager, spec, config, "pool", "avg, max", name="pools")
        assert len(good.ids) == 2 and good.problems == ()
        assert [r.name for r in manager.store.list(group=good.group)] == [
            "pools · pool=max", "pools · pool=avg"]
        pair = train_form.duplicate(manager, good.ids[0], "colour", "red")
        assert [p.field for p in pair.problems] == ["colour"]
        assert "batch_norm" in train_form.experiment_fields(spec)
    finally:
        manager.shutdown()


def test_a_link_opens_its_model_and_settings_and_names_what_it_cannot_read():
    assert train_form.from_link({"run": "abc", "train.x": "1"}, None, False, []) is None
    spec, config, problems = train_form.from_link({"model": "vgg11", "lr": "0.5"}, None, False, [])
    assert spec == PRESETS["vgg11"] and problems == []
    assert config == train_form.first_config(spec, False, []).replace(lr=0.5)
    # No model in the link: the Architecture page's spec, else the default preset.
    edited = PRESETS["alexnet"].replace(width=0.5)
    assert train_form.from_link({"epochs": "2"}, edited, False, [])[0] == edited
    spec, config, problems = train_form.from_link({"model": "nope", "lr": "-1"}, None, False, [])
    assert spec == PRESETS[train_form.DEFAULT_PRESET]
    assert config == train_form.first_config(spec, False, [])  # its first values, unread
    assert {p.field for p in problems} == {"model", "lr"}


def test_the_url_names_only_what_differs_from_the_forms_first_values():
    spec = PRESETS[train_form.DEFAULT_PRESET]
    first = train_form.first_config(spec, False, [])
    assert train_form.link_query(spec, first, False, []) == {}
    assert train_form.link_query(spec, first.replace(lr=0.5), False, []) == {"lr": "0.5"}
    vgg = PRESETS["vgg11"]
    query = train_form.link_query(vgg, train_form.first_config(vgg, False, []), False, [])
    assert query == {"model": "vgg11"}
    assert train_form.from_link(query, None, False, [])[:2] == (
        vgg, train_form.first_config(vgg, False, []))


def test_a_configs_values_fill_the_form_with_what_this_server_offers():
    config = TrainConfig(data="full", device="cuda", subset=1000, lr=0.3)
    here = train_form.config_values(config, full_found=False, gpus=[])
    assert set(here) == set(train_form.FIELDS) and here["lr"] == 0.3
    assert (here["data"], here["device"], here["subset"]) == ("sample", "cpu", 1000)
    gpu = train_form.config_values(config.replace(subset=None), full_found=True, gpus=["H200"])
    assert (gpu["data"], gpu["device"]) == ("full", "cuda")
    assert gpu["subset"] == resources.train_size("full")  # no subset: the whole set


def test_the_model_picker_offers_the_architecture_pages_spec_first_then_every_preset():
    edited = PRESETS["resnet18"].replace(width=0.5)
    assert train_form.model_choices(None) == list(PRESETS)
    assert train_form.model_choices(edited) == [train_form.FROM_ARCHITECTURE, *PRESETS]
    assert train_form.model_option(train_form.FROM_ARCHITECTURE, edited) == (
        "resnet-custom (from the Architecture page)")
    assert train_form.model_option("vgg11", edited) == "vgg11"
    assert train_form.chosen_spec(train_form.FROM_ARCHITECTURE, edited) == edited
    assert train_form.chosen_spec("vgg11", edited) == PRESETS["vgg11"]


def test_the_picker_shows_the_teachers_model_else_the_choice_while_offered_else_a_default():
    edited = PRESETS["resnet18"]
    assert train_form.model_choice("vgg11", edited, locked="lenet") == "lenet"
    assert train_form.model_choice("vgg11", edited, locked=None) == "vgg11"
    assert train_form.model_choice(None, edited, None) == train_form.FROM_ARCHITECTURE
    # The Architecture page's spec is gone (a new session): back to the default preset.
    assert train_form.model_choice(train_form.FROM_ARCHITECTURE, None, None) == (
        train_form.DEFAULT_PRESET)


def test_the_model_caption_names_its_input_parameters_and_flops():
    spec = PRESETS["bn-lenet"]
    table = inspect_spec(spec)
    assert train_form.model_caption(spec, table) == (
        f"28x28 input · {table.total_params:,} parameters · "
        f"{short(table.total_flops)}FLOPs per image")


def test_the_form_gets_every_field_once_then_the_recipe_for_each_new_model():
    alexnet, lenet = PRESETS["alexnet"], PRESETS["bn-lenet"]
    first = train_form.values_to_show(alexnet, True, first_visit=True, recipe_for=None,
                                      full_found=False, gpus=[])
    assert first == train_form.first_values(train_form.default_config(alexnet), False, [])
    again = dict(first_visit=False, full_found=False, gpus=[])
    assert train_form.values_to_show(alexnet, True, recipe_for=alexnet, **again) == {}
    assert train_form.values_to_show(lenet, True, recipe_for=alexnet, **again) == (
        train_form.recipe_values(lenet))
    broken = alexnet.replace(input_size=16)  # cannot be built: TrainConfig's defaults
    assert train_form.values_to_show(broken, False, recipe_for=alexnet, **again) == {
        field: getattr(TrainConfig(), field) for field in train_form.RECIPE}


def test_a_device_reads_as_the_gpus_name_or_cpu():
    assert train_form.device_name("cuda", ["NVIDIA H200"]) == "GPU (NVIDIA H200)"
    assert train_form.device_name("cpu", []) == "CPU"
