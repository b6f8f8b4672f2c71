"""The Train page's form as data: the fields it shows, their first values, the config its values
make, the textbook note above it and the memory check before a launch. No Streamlit in here.

Config values are checked in one place, `TrainConfig`: the form turns what the widgets hold into
a config, and a config that cannot be built comes back as ConfigError's problems, field by field.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cnnlab.analysis.layers import InspectionError, LayerTable
from cnnlab.analysis.table_text import human_bytes
from cnnlab.arch.checks import SpecError
from cnnlab.arch.parse import spec_from_data
from cnnlab.arch.presets import PRESETS, preset_name
from cnnlab.arch.specs import Spec
from cnnlab.errors import CnnlabError, Problem
from cnnlab.runs import experiments
from cnnlab.runs.jobs import JobManager
from cnnlab.training import resources
from cnnlab.training.config import ConfigError, TrainConfig
from cnnlab.training.recipes import TEXTBOOK_RECIPES, TEXTBOOK_RESULTS, default_config
from cnnlab.views import links
from cnnlab.views.text import short

DEFAULT_PRESET = "bn-lenet"  # trains in a minute on a CPU: a good first run
FROM_ARCHITECTURE = "architecture"  # the model choice that means the Architecture page's spec
RECIPE = ("epochs", "batch_size", "lr")  # what the textbook sets per model
HYPERPARAMETERS = (*RECIPE, "optimizer", "momentum", "weight_decay", "label_smoothing",
                   "schedule", "seed")
# "bn_recalibration" is a switch on the form: precise BN over PRECISE_BN_BATCHES, or off (0).
MORE_OPTIONS = ("max_steps", "log_every", "flip", "bn_recalibration")
PRECISE_BN_BATCHES = TrainConfig().bn_recalibration
DATA_AND_DEVICE = ("data", "subset", "device")
FIELDS = HYPERPARAMETERS + DATA_AND_DEVICE + MORE_OPTIONS  # every value the form holds
DATA_NAMES = {"full": "full (60,000 / 10,000)", "sample": "sample (3,000 / 1,000)"}
OPTIMIZER_NAMES = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}
MAX_NAME = 120  # characters of a run's name
SCHEDULE_NAMES = {"constant": "constant", "cosine": "cosine decay",
                  "step": "steps (x0.1 at 1/2, 3/4)",
                  "anneal": "constant, then to 0 over the last 1/5"}


def model_name(spec: Spec) -> str:
    """A preset's name, or the family's with '-custom' for an edited spec."""
    return preset_name(spec) or f"{spec.family}-custom"


def device_name(device: str, gpus: list[str]) -> str:
    """A device choice as the form words it: 'GPU (NVIDIA H200)' or 'CPU'."""
    return f"GPU ({gpus[0]})" if device == "cuda" else "CPU"


def uses_momentum(optimizer: str) -> bool:
    """Momentum is an SGD setting; Adam and AdamW keep their own moving averages."""
    return optimizer == "sgd"


# --- the model ---------------------------------------------------------------------------------


def model_choices(edited: Spec | None) -> list[str]:
    """The model picker's options: the Architecture page's `edited` spec first, when there is
    one, then every preset."""
    return ([FROM_ARCHITECTURE] if edited is not None else []) + list(PRESETS)


def model_choice(current: str | None, edited: Spec | None, locked: str | None) -> str:
    """What the model picker shows: the teacher's `locked` model; else the `current` choice
    while it is offered; else the Architecture page's spec, or DEFAULT_PRESET without one."""
    if locked is not None:
        return locked
    if current in model_choices(edited):
        return current
    return FROM_ARCHITECTURE if edited is not None else DEFAULT_PRESET


def model_option(choice: str, edited: Spec | None) -> str:
    """A model choice as the picker words it: the preset's name, or 'resnet-custom (from the
    Architecture page)'."""
    if choice == FROM_ARCHITECTURE and edited is not None:
        return f"{model_name(edited)} (from the Architecture page)"
    return choice


def chosen_spec(choice: str, edited: Spec | None) -> Spec:
    """The spec a model choice stands for."""
    return edited if choice == FROM_ARCHITECTURE and edited is not None else PRESETS[choice]


def model_caption(spec: Spec, table: LayerTable) -> str:
    """'28x28 input · 44,878 parameters · 4.6 MFLOPs per image', under the model picker."""
    return (f"{spec.input_size}x{spec.input_size} input · {table.total_params:,} parameters · "
            f"{short(table.total_flops)}FLOPs per image")


# --- the values the widgets start from ---------------------------------------------------------


def data_options(full_found: bool) -> list[str]:
    return ["full", "sample"] if full_found else ["sample"]


def device_options(gpus: list[str]) -> list[str]:
    return ["cuda", "cpu"] if gpus else ["cpu"]


def first_values(config: TrainConfig, full_found: bool, gpus: list[str]) -> dict[str, Any]:
    """Every field on a first visit: the textbook's hyperparameters (`config`), the full data
    when it is installed (all of it), and the GPU when there is one."""
    values = {field: getattr(config, field) for field in HYPERPARAMETERS + MORE_OPTIONS}
    values["bn_recalibration"] = config.bn_recalibration > 0
    data = data_options(full_found)[0]
    return {**values, "data": data, "subset": resources.train_size(data),
            "device": device_options(gpus)[0]}


def config_values(config: TrainConfig, full_found: bool, gpus: list[str]) -> dict[str, Any]:
    """Every field of the form (FIELDS) holding `config`: what a lesson's or a link's run
    shows. The form offers only the data sets this server has: "auto" (or "full" where it is
    missing) becomes the first it offers, as "auto" becomes the first device it offers. No
    subset is the whole set, as the form writes it."""
    values = first_values(config, full_found, gpus)
    offered = data_options(full_found)
    data = config.data if config.data in offered else offered[0]
    values.update(data=data, subset=config.subset or resources.train_size(data))
    if config.device in device_options(gpus):
        values["device"] = config.device
    return values


def values_to_show(spec: Spec, buildable: bool, *, first_visit: bool, recipe_for: Spec | None,
                   full_found: bool, gpus: list[str]) -> dict[str, Any]:
    """What the form's widgets are set to before they are drawn: every field on a session's
    first visit (the textbook's for `spec`; TrainConfig's defaults when it cannot be built),
    the recipe's fields (RECIPE) once the model is another than the one they came from
    (`recipe_for`), else nothing: the user's values stay."""
    config = default_config(spec) if buildable else TrainConfig()
    if first_visit:
        return first_values(config, full_found, gpus)
    if recipe_for != spec:
        return {field: getattr(config, field) for field in RECIPE}
    return {}


def first_config(spec: Spec, full_found: bool, gpus: list[str]) -> TrainConfig:
    """The config the form shows for `spec` on a first visit: what a link to the Train page
    leaves out (`cnnlab.views.links.config_query` writes what differs from it)."""
    recipe = default_config(spec)
    config, _ = config_from_form(first_values(recipe, full_found, gpus))
    return config or recipe


# --- the form in the URL ---------------------------------------------------------------------


def link_query(spec: Spec, config: TrainConfig, full_found: bool, gpus: list[str]
               ) -> dict[str, str]:
    """The Train page's URL parameters: the model (none for DEFAULT_PRESET) and the settings
    that differ from the ones the form first shows for it (`first_config`)."""
    return (links.page_spec_query(spec, DEFAULT_PRESET)
            | links.config_query(config, first_config(spec, full_found, gpus)))


def from_link(query: Mapping[str, str], edited: Spec | None, full_found: bool,
              gpus: list[str]) -> tuple[Spec, TrainConfig, list[Problem]] | None:
    """What a pasted link (`?model=vgg11&lr=0.05`) opens the form on: its model, else the
    Architecture page's `edited` spec, else DEFAULT_PRESET; and its settings over the ones the
    form first shows for that model. A parameter that cannot be read is a problem, and the
    form keeps its first value for it (for every setting, when one is wrong). None when the
    link names nothing the Train page shows."""
    if not links.TRAIN_KEYS.intersection(query):
        return None
    spec, problems = links.spec_from_query(query)
    spec = spec or edited or PRESETS[DEFAULT_PRESET]
    base = first_config(spec, full_found, gpus)
    config, config_problems = links.config_from_query(query, base)
    return spec, config or base, problems + config_problems


def recipe_values(spec: Spec, fields: tuple[str, ...] = RECIPE) -> dict[str, Any]:
    """The textbook's values of `fields` for `spec` (its preset's recipe, else its family's)."""
    config = default_config(spec)
    return {field: getattr(config, field) for field in fields}


def recipe_note(spec: Spec) -> str:
    """Markdown: where the form's recipe comes from, and what the book reached with it."""
    # The recipe is a preset's at any input size (as default_config picks it); the book's
    # result only compares at the preset's own size.
    name = preset_name(spec, any_input_size=True) or model_name(spec)
    recipe = TEXTBOOK_RECIPES.get(name)
    if recipe is None:
        return (f"The book does not train {name}: epochs, batch size and learning rate are its "
                f"{spec.family} recipe, with plain SGD as in `train_ch6`.")
    note = (f"Epochs, batch size and learning rate are the textbook's for {name} "
            f"(d2l {recipe.source.removeprefix('d2l ')}), with plain SGD as in `train_ch6`.")
    book = TEXTBOOK_RESULTS.get(model_name(spec))
    if book is not None:
        note += (f" The book reached **{book.test_acc:.3f}** test accuracy after 10 epochs, at "
                 f"{book.examples_per_s:,.0f} examples/s on its GPU.")
    return note


# --- from the widgets' values to a config ------------------------------------------------------


def config_from_form(values: dict[str, Any]) -> tuple[TrainConfig | None, list[Problem]]:
    """The config the form's `values` (one per FIELDS) describe, and every problem with it:
    TrainConfig's checks, then whether this server has that data. None when there are any.

    Three form rules: a subset as large as the whole training set means no subset, momentum
    counts only for SGD (its widget is greyed out otherwise), and the precise-BN switch on
    means PRECISE_BN_BATCHES batches."""
    chosen = {field: values[field] for field in FIELDS}
    if type(chosen["bn_recalibration"]) is bool:
        chosen["bn_recalibration"] = PRECISE_BN_BATCHES if chosen["bn_recalibration"] else 0
    if chosen["subset"] == resources.train_size(chosen["data"]):
        chosen["subset"] = None
    if not uses_momentum(chosen["optimizer"]):
        chosen["momentum"] = 0.0
    try:
        config = TrainConfig(**chosen)
    except ConfigError as exc:
        return None, exc.problems
    problems = resources.data_problems(config)
    return (None if problems else config), problems


# --- will it fit? ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Launch:
    """Whether a run may start, why (or why not), and where its memory goes."""

    fits: bool
    message: str
    breakdown: str = ""


def memory_breakdown(need: resources.Estimate) -> str:
    """'Estimate: weights 1.2 MB · gradients ... · data and PyTorch 410 MB'."""
    memory = need.memory
    runtime = need.fixed - memory.weights - memory.gradients - memory.optimizer_state
    return (f"Estimate: weights {human_bytes(memory.weights)} · gradients "
            f"{human_bytes(memory.gradients)} · optimizer state "
            f"{human_bytes(memory.optimizer_state)} · batches "
            f"{human_bytes(need.batch_part)} · data and PyTorch {human_bytes(runtime)}")


def run_name(text: str) -> str | None:
    """A run's name from the form: trimmed, at most MAX_NAME characters; None when empty."""
    return text.strip()[:MAX_NAME] or None


def launch_check(spec: Spec, config: TrainConfig) -> Launch:
    """Whether training `spec` with `config` fits the device it would run on. Never raises: a
    failed estimate is a refusal that says why."""
    try:
        need = resources.estimate(spec, config)
        fits, message = resources.fits_device(spec, config)
    except (InspectionError, ValueError, OSError) as exc:
        return Launch(False, f"Could not estimate the memory this run needs: {exc}")
    return Launch(fits, message, memory_breakdown(need))


# --- pairs and sweeps --------------------------------------------------------------------------


def experiment_fields(spec: Spec | dict[str, Any]) -> list[str]:
    """The fields a pair or sweep of `spec` (or a run's stored spec) may change, for the field
    picker; the config's alone for a stored spec that no longer reads."""
    if isinstance(spec, dict):
        try:
            spec = spec_from_data(spec)
        except SpecError:
            return list(experiments.VARIABLE_FIELDS)
    return list(experiments.variable_fields(spec))


@dataclass(frozen=True)
class Queued:
    """What a pair or sweep button did: the group and its run ids, or the problems."""

    group: str | None = None
    ids: tuple[str, ...] = ()
    problems: tuple[Problem, ...] = ()


def _queued(action: Callable[[], tuple[str, list[str]]]) -> Queued:
    try:
        group, ids = action()
    except CnnlabError as exc:  # ExperimentError, SpecError, ConfigError: field-named
        problems = exc.problems or [Problem("value", str(exc), "check the value")]
        return Queued(problems=tuple(problems))
    return Queued(group, tuple(ids))


def duplicate(manager: JobManager, run_id: str, field: str, text: str,
              name: str = "") -> Queued:
    """The "Duplicate with one change" button: the run paired with a copy whose `field` is
    `text`; never raises for bad input (problems name the field)."""
    return _queued(lambda: experiments.duplicate_with_change(manager, run_id, field, text,
                                                             name=run_name(name)))


def sweep(manager: JobManager, spec: Spec, config: TrainConfig, field: str, text: str,
          name: str = "") -> Queued:
    """The "Sweep" button: one run of the form's model and config per value in `text`."""
    return _queued(lambda: experiments.sweep(manager, model_name(spec), spec, config, field,
                                             text, name=run_name(name)))
