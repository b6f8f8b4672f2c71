"""What each run of `bench/gpu.py` trains: its modes, the book's recipe with the bench's levers
(compile, CUDA graphs, a larger batch), and the table's entries."""

from __future__ import annotations

import dataclasses

from cnnlab.arch.presets import PRESETS
from cnnlab.arch.specs import Spec
from cnnlab.training.config import TrainConfig
from cnnlab.training.recipes import TEXTBOOK_RESULTS, scaled_batch, textbook_config

TABLE = list(TEXTBOOK_RESULTS)  # the chapter's eight runs, in the book's order


@dataclasses.dataclass(frozen=True)
class Mode:
    """How much of each run a mode trains."""

    name: str
    epochs: int | None  # None: the textbook's
    width: float  # 1.0: the textbook's networks
    data: str  # "full" or "sample"
    max_steps: int | None  # per table run
    solo: bool  # measure each model alone first
    budget_s: float  # the table is cancelled after this long
    probe_s: float = 2.0  # --streams-probe: each model's share, in seconds at its solo rate


MODES = {
    "smoke": Mode("smoke", epochs=1, width=0.125, data="sample", max_steps=4, solo=True,
                  budget_s=600, probe_s=0.2),
    "quick": Mode("quick", epochs=2, width=1.0, data="full", max_steps=None, solo=True,
                  budget_s=300),
    "full": Mode("full", epochs=None, width=1.0, data="full", max_steps=None, solo=False,
                 budget_s=480),
}


def spec_for(name: str, mode: Mode) -> Spec:
    spec = PRESETS[name]
    return spec if mode.width == 1.0 else spec.replace(width=mode.width)


def config_for(name: str, mode: Mode, device: str, compile: bool,
               schedule: str = "constant", lr: float | None = None,
               graphs: bool = False, batch_scale: int = 1) -> TrainConfig:
    """The textbook's recipe for `name`, shortened as the mode says; `schedule` "cosine" decays
    the book's learning rate to zero over the run instead of holding it, "anneal" holds it for
    four fifths of the steps and then decays it; `batch_scale` multiplies the batch size and
    the book's lr alike (recipes.scaled_batch); `lr` replaces the lr, scaled or not."""
    config = textbook_config(name).replace(data=mode.data, device=device, compile=compile,
                                           max_steps=mode.max_steps, schedule=schedule,
                                           cuda_graphs=graphs and device != "cpu")
    if mode.epochs is not None:
        config = config.replace(epochs=mode.epochs)
    if mode.data == "sample":  # small batches, so even a few steps see several of them
        config = config.replace(batch_size=min(config.batch_size, 32), bn_recalibration=2)
    config = scaled_batch(config, batch_scale)
    if lr is not None:
        config = config.replace(lr=lr)
    return config


@dataclasses.dataclass(frozen=True)
class Entry:
    """One run of the table: its label in the report, the preset it trains (whose book row it
    is compared with), and a learning rate replacing the book's (None: the book's)."""

    label: str
    preset: str
    lr: float | None = None


def entries_for(models: list[str], lrs: dict[str, float],
                extras: dict[str, float]) -> list[Entry]:
    """The table's runs: each model (at its `--lr` when given), then each `--extra` run."""
    return ([Entry(name, name, lrs.get(name)) for name in models]
            + [Entry(f"{name} lr {lr:g}", name, lr) for name, lr in extras.items()])


@dataclasses.dataclass(frozen=True)
class Levers:
    """How the table's runs are sped up, by preset: compiled, captured as CUDA graphs, and
    their batch size and lr multiplied (the book's recipe otherwise)."""

    compiled: frozenset[str] = frozenset()
    graphed: frozenset[str] = frozenset()
    batch_scales: dict[str, int] = dataclasses.field(default_factory=dict)

    def config(self, entry: Entry, mode: Mode, device: str, schedule: str) -> TrainConfig:
        return config_for(entry.preset, mode, device, entry.preset in self.compiled, schedule,
                          entry.lr, entry.preset in self.graphed, self.scale(entry.preset))

    def scale(self, preset: str) -> int:
        return self.batch_scales.get(preset, 1)


def table_levers(paid: Levers, asked: Levers, models: list[str], eager: bool) -> Levers:
    """The levers a table trains with: those a solo timing found paid (`levers_that_paid`, of
    an earlier report or this call's own), with those named on the command line added (a named
    batch scale wins, and K=1 takes one back), for the table's models only; `eager` (its runs
    in threads of one process) drops compile and CUDA graphs."""
    keep = set(models)
    return Levers(
        frozenset() if eager else frozenset((paid.compiled | asked.compiled) & keep),
        frozenset() if eager else frozenset((paid.graphed | asked.graphed) & keep),
        {name: k for name, k in (paid.batch_scales | asked.batch_scales).items()
         if name in keep and k != 1})
