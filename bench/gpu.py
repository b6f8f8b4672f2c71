"""The GPU path, measured: the chapter's table on one GPU, in one command.

What it does, in order, writing everything to OUT/gpu-MODE.json as it goes:
  1. environment: GPU name and memory, torch, CUDA and cuDNN versions, and two measured ceilings
     (a large bf16 matrix product; a bf16 channels-last 3x3 convolution, forward and backward);
  2. the app's device code: device detection (the sidebar's summary, "auto" -> cuda) and the
     memory check (`fits_device`: the textbook runs fit, an absurd batch is refused with a fix);
  3. solo throughput (quick and smoke modes): each model alone for a few steps after warm-up,
     with its measured peak memory beside the estimate the Train page makes before a launch;
     a model named by --cuda-graphs is timed eagerly and then as CUDA graphs (`over_eager`),
     and with --solo-batch-scale K each BatchNorm network also at K times the book's batch and
     lr (`over_table_batch`);
     with --streams-probe, then all of them at once in this one process, one CUDA stream each,
     for a few seconds of solo work each: how well kernels from one process share the GPU,
     against the table's processes, which take turns (`streams_probe.packed`);
  4. the table: every model of the chapter queued at once through the app's own JobManager with
     several GPU slots, so the runs are routed to GPU slots and share the one GPU as a class's
     runs would; then one table of examples/s, wall time, final test accuracy and the book's,
     where each run's time went (its first step event, each epoch's end, each evaluation), and
     the classes each run's final weights never predict on the test set, and the GPU work:
     the runs' solo times added up, against the table's wall time (`solo_s`).

Modes:
  smoke  1/8-width networks on the bundled sample, a few steps each: the test suite runs this
         on a CPU so the script cannot rot (about a minute on 2 cores for two models)
  quick  2 epochs of each model (117 s in all on an H200, 2026-11-29)
  full   the textbook's 10 epochs (235 s in all on that H200; README "Measurements")

The textbook recipes are used unchanged (SGD, the book's lr, batch size and epochs, and its
init: Xavier weights with zero biases, as the MXNet edition's Gluon layers start; the 2026-11-29
run still had torch's default biases); what differs is how they run: bf16 autocast,
channels-last, data held on the GPU, one batch shape per run (the 96 examples of an epoch's
short last batch sit out, different ones each epoch, and evaluation pads its last batch:
cnnlab.training.setup.fixed_shapes), and the runs side by side on one GPU. `--compile [PRESET
...]` adds torch.compile to the named runs (all when none is named) and `--schedule cosine`
decays the book's lr to zero: both measured, neither the default (README, "The chapter's table
on one GPU"). `--schedule anneal` holds the book's lr for four fifths of the steps, then decays
it to zero (not yet measured on a GPU). `--cuda-graphs [PRESET ...]` runs the named runs' steps
as CUDA graphs (TrainConfig.cuda_graphs; not yet measured). `--batch-scale alexnet=2` trains a
run at twice the book's batch size and lr (the linear scaling rule; a change to the book's
recipe, not yet measured on a GPU). `--levers-from gpu-quick.json` takes compile, CUDA graphs and
(for BatchNorm networks) a larger batch where that report's solo timing gained at least 1.1x.
`--lr nin=0.05` replaces a run's learning rate (0.05 is NiN's in the book's later editions; the
MXNet edition's table used 0.1), and `--extra nin=0.05` adds a run at that rate beside the
book's, in the same table (one extra run per preset).

Run from the repository root:  python bench/gpu.py --mode quick --out results/
"""

from __future__ import annotations

import os
import sys

# The checkout's root first on sys.path: cnnlab imports without being installed (the GPU
# machine runs these scripts from a bare copy of the tree).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402

from cnnlab.arch.models import batch_norm_modules, build  # noqa: E402
from cnnlab.arch.presets import PRESETS  # noqa: E402
from cnnlab.arch.specs import Spec  # noqa: E402
from cnnlab.runs.jobs import JobManager  # noqa: E402
from cnnlab.runs.store import RunStore, Status  # noqa: E402
from cnnlab.training import data as cnndata  # noqa: E402
from cnnlab.training import resources  # noqa: E402
from cnnlab.training.config import SCHEDULES, ConfigError, TrainConfig  # noqa: E402
from cnnlab.training.loop import train  # noqa: E402
from cnnlab.training.recipes import TEXTBOOK_RESULTS, textbook_config  # noqa: E402
from cnnlab.training.setup import resolve_device  # noqa: E402
from cnnlab.views.inside import evaluate_images, load_run_model, run_spec  # noqa: E402

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
    the book's lr alike (the linear scaling rule: Goyal et al. 2017, "Accurate, Large Minibatch
    SGD"); `lr` replaces the lr, scaled or not."""
    config = textbook_config(name).replace(data=mode.data, device=device, compile=compile,
                                           max_steps=mode.max_steps, schedule=schedule,
                                           cuda_graphs=graphs and device != "cpu")
    if mode.epochs is not None:
        config = config.replace(epochs=mode.epochs)
    if mode.data == "sample":  # small batches, so even a few steps see several of them
        config = config.replace(batch_size=min(config.batch_size, 32), bn_recalibration=2)
    config = config.replace(batch_size=config.batch_size * batch_scale,
                            lr=config.lr * batch_scale)
    if lr is not None:
        config = config.replace(lr=lr)
    return config


# ---------------------------------------------------------------- 1. environment


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_seconds(fn, device: torch.device, repeats: int) -> float:
    """The fastest of `repeats` timed calls of fn(), after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def matmul_tflops(device: torch.device) -> float:
    """bf16 FLOP/s of a large square matrix product (random data, never zeros)."""
    n = 8192 if device.type == "cuda" else 512
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    seconds = best_seconds(lambda: a @ b, device, repeats=10)
    return 2 * n**3 / seconds / 1e12


def conv_tflops(device: torch.device) -> float:
    """FLOP/s of a 3x3 convolution (forward and both backward products), bf16 channels-last on
    a GPU: a ceiling that is fairer to these networks than a matrix product."""
    cuda = device.type == "cuda"
    b, c, s = (256, 128, 56) if cuda else (8, 64, 28)
    dtype = torch.bfloat16 if cuda else torch.float32
    conv = torch.nn.Conv2d(c, c, 3, padding=1, bias=False).to(device, dtype,
                                                               memory_format=torch.channels_last)
    x = torch.randn(b, c, s, s, device=device, dtype=dtype).contiguous(
        memory_format=torch.channels_last).requires_grad_()
    grad = torch.randn_like(x)

    def step() -> None:
        x.grad = conv.weight.grad = None
        conv(x).backward(grad)

    seconds = best_seconds(step, device, repeats=5)
    return 3 * 2 * b * c * c * 9 * s * s / seconds / 1e12


def environment(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"), "python": platform.python_version(),
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cpus": os.cpu_count(), "device": str(device),
        # Processes sharing a GPU take turns unless NVIDIA's MPS daemon runs (it is not started
        # here: the device's settings are left alone); gVisor reports kernel 4.4.0.
        "kernel": platform.release(), "mps_control": shutil.which("nvidia-cuda-mps-control"),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    multiprocessors=props.multi_processor_count,
                    capability=f"{props.major}.{props.minor}")
    torch.backends.cudnn.benchmark = True
    info["matmul_tflops"] = float(f"{matmul_tflops(device):.4g}")  # a loaded CPU: ~0.01
    info["conv_tflops"] = float(f"{conv_tflops(device):.4g}")
    return info


# ---------------------------------------------------------------- 2. the app's device code


def check(name: str, ok: bool, detail: str) -> dict[str, Any]:
    print(f"  [{'ok' if ok else 'FAIL'}] {name}: {detail}", flush=True)
    return {"check": name, "ok": bool(ok), "detail": detail}


def device_checks(device: torch.device) -> list[dict[str, Any]]:
    """The code the sidebar and the Train page run about the device, on this machine."""
    cuda = device.type == "cuda"
    summary = resources.device_summary()
    checks = [
        check("sidebar device summary", ("CPU" not in summary) == cuda, summary),
        check('device "auto"', resolve_device("auto").type == device.type,
              f"trains on {resolve_device('auto')}"),
    ]
    kind = resources.training_device(TrainConfig())
    memory = resources.device_memory(kind)
    checks.append(check("device memory", memory.total > 0 and memory.is_gpu == cuda,
                        f"{memory.name}: {memory.total / 2**30:.1f} GiB total, "
                        f"{memory.free / 2**30:.1f} GiB free"))
    fits = [resources.fits_device(PRESETS[name], textbook_config(name)) for name in TABLE]
    checks.append(check("memory check admits the textbook runs", all(ok for ok, _ in fits),
                        fits[0][1]))
    huge = textbook_config("vgg16").replace(batch_size=65_536)
    ok, message = resources.fits_device(PRESETS["vgg16"], huge)
    checks.append(check("memory check refuses VGG-16 at batch 65,536",
                        not ok and "batch size of" in message, message))
    return checks


# ---------------------------------------------------------------- 3. each model alone


def solo_rate(name: str, mode: Mode, device: torch.device, dataset: cnndata.FashionMNIST,
              compile: bool, graphs: bool = False, batch_scale: int = 1) -> dict[str, Any]:
    """Training examples/s of one model alone after warm-up, and its peak memory on a GPU."""
    spec = spec_for(name, mode)
    big = spec.input_size > 100
    interval = 2 if mode.name == "smoke" else 5 if big else 20  # steps per timed interval
    intervals = 2 if mode.name == "smoke" else 4
    # The first interval warms up (cuDNN picks its kernels; compile compiles): not timed.
    config = config_for(name, mode, device.type, compile, graphs=graphs,
                        batch_scale=batch_scale).replace(
        max_steps=interval * (1 + intervals), log_every=interval, bn_recalibration=0)
    tiny = dataclasses.replace(dataset, test_images=dataset.test_images[:10],
                               test_labels=dataset.test_labels[:10])  # evaluation is not timed
    events: list[dict[str, Any]] = []
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    result = train(spec, config, on_event=events.append, data=tiny)
    timed = [e for e in events if e["kind"] == "step" and e["step"] > interval]
    seconds = sum(interval * config.batch_size / e["examples_per_s"] for e in timed)
    row: dict[str, Any] = {
        "model": name, "status": result.status.value, "batch_size": config.batch_size,
        "batch_scale": batch_scale, "compiled": compile,
        "examples_per_s": round(len(timed) * interval * config.batch_size / seconds, 1)
        if seconds else None,
        "layout": "NHWC" if result.channels_last else "NCHW", "amp": result.amp,
        "graphs_asked": graphs,
        "cuda_graphs": next((e.get("cuda_graphs") for e in events if e["kind"] == "step"), None),
    }
    estimate = resources.estimate(spec, config, device.type)
    # The estimate's fixed part includes the runtime (CUDA context, workspaces), which the
    # allocator does not count; compare like with like.
    row["estimate_mib"] = round(
        (estimate.total - resources.RUNTIME_OVERHEAD[device.type]) / 2**20)
    if device.type == "cuda":
        row["measured_peak_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20)
        row["estimate_over_measured"] = round(row["estimate_mib"] / row["measured_peak_mib"], 2)
    del result
    print(f"  {name}: {row['examples_per_s']:,.0f} examples/s alone (batch "
          f"{config.batch_size}, {row['layout']}, bf16 {row['amp']}, compiled {compile}, "
          f"CUDA graphs {row['cuda_graphs']}), "
          f"memory estimate {row['estimate_mib']:,} MiB"
          + (f", measured peak {row['measured_peak_mib']:,} MiB" if "measured_peak_mib" in row
             else ""), flush=True)
    return row


def solo_rows(name: str, mode: Mode, device: torch.device, dataset: cnndata.FashionMNIST,
              compile: bool, graphs: bool, batch_scale: int = 1,
              try_scale: int | None = None) -> list[dict[str, Any]]:
    """The model alone as the table will run it. When that is compiled or as CUDA graphs,
    eagerly first too (`over_eager`), and with `try_scale`, also at that multiple of the
    book's batch and lr (`over_table_batch`): each speed-up a ratio measured in this run, on
    this GPU. A compiled rate is timed after the compile, which the table's run pays too."""
    def timed(compiled: bool, graphed: bool, scale: int) -> dict[str, Any]:
        return solo_rate(name, mode, device, dataset, compiled, graphed, scale)

    table = timed(compile, graphs, batch_scale)
    rows = [table]
    if compile or graphs:
        rows.insert(0, timed(False, False, batch_scale))
        gain(table, rows[0], "over_eager", f"{name}: {'compiled' if compile else 'CUDA graphs'}",
             "eager")
    if try_scale is not None and try_scale != batch_scale:
        rows.append(timed(compile, graphs, try_scale))
        gain(rows[-1], table, "over_table_batch", f"{name}: batch {rows[-1]['batch_size']}",
             f"batch {table['batch_size']}")
    return rows


def gain(row: dict[str, Any], base: dict[str, Any], field: str, what: str, than: str) -> None:
    """Record in `row` how many times `base`'s examples/s it ran at, and say so."""
    if row["examples_per_s"] and base["examples_per_s"]:
        row[field] = round(row["examples_per_s"] / base["examples_per_s"], 2)
        print(f"  {what} {row[field]:.2f}x {than}", flush=True)


# ------------------------------------------------ 3b. one process, one CUDA stream per model

def streams_probe(models: list[str], mode: Mode, device: torch.device,
                  dataset: cnndata.FashionMNIST, solo: list[dict[str, Any]]) -> dict[str, Any]:
    """The models trained at once in one process, each in its own thread and CUDA stream, each
    for a few seconds' worth of steps at its eager solo rate, all starting together
    after a warm-up (`Mode.probe_s` seconds: 2 on a GPU). The table's runs are processes, which take turns on the GPU (its packing,
    `solo_s` over the wall time, was 1.18x on 2026-11-29); kernels from one process's streams
    can run side by side. This measures how much more of the GPU that sharing would use before
    anyone builds a worker that trains several runs. Eager only: a CUDA-graph capture or a
    compile in one thread would stall or break the others."""
    rates = {r["model"]: r["examples_per_s"] for r in solo if r.get("examples_per_s")
             and not r.get("compiled") and not r["cuda_graphs"] and r["batch_scale"] == 1}
    names = [name for name in models if name in rates]
    barrier = threading.Barrier(len(names), timeout=120)
    tiny = dataclasses.replace(dataset, test_images=dataset.test_images[:10],
                               test_labels=dataset.test_labels[:10])
    rows: dict[str, dict[str, Any]] = {}

    def one(name: str) -> None:
        spec = spec_for(name, mode)
        book = config_for(name, mode, device.type, False)
        warm = 2 if mode.name == "smoke" else 5 if spec.input_size > 100 else 20
        steps = warm * max(1, round(rates[name] * mode.probe_s / book.batch_size / warm))
        row = rows[name] = {"model": name, "steps": steps, "batch_size": book.batch_size}
        per_epoch = max(1, len(tiny.train_labels) // book.batch_size)
        epochs = -(-(warm + steps) // per_epoch)  # enough epochs to reach the last step

        def on_event(event: dict[str, Any]) -> None:
            if event["kind"] == "step" and event["step"] == warm:
                barrier.wait()  # the timed steps start together
                row["start"] = time.perf_counter()
            elif event["kind"] == "step" and event["step"] == warm + steps:
                row["end"] = time.perf_counter()  # a step event has read the losses: synced

        config = book.replace(max_steps=warm + steps, epochs=max(book.epochs, epochs),
                              log_every=warm, bn_recalibration=0)
        stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        try:
            with torch.cuda.stream(stream):  # None: the current stream, as on a CPU
                train(spec, config, on_event=on_event, data=tiny)
        except Exception as exc:  # noqa: BLE001 - reported in the row
            row["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            if "start" not in row:  # it never reached the barrier: the others must not wait
                barrier.abort()

    threads = [threading.Thread(target=one, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done = [r for r in rows.values() if "start" in r and "end" in r]
    probe: dict[str, Any] = {"rows": list(rows.values()), "models": len(names)}
    if len(done) == len(names):
        wall = max(r["end"] for r in done) - min(r["start"] for r in done)
        work = sum(r["steps"] * r["batch_size"] / rates[r["model"]] for r in done)
        began = min(r["start"] for r in done)
        for r in done:
            r["examples_per_s"] = round(r["steps"] * r["batch_size"] / (r["end"] - r["start"]), 1)
            # seconds from the common start, for the report
            r["start"], r["end"] = round(r["start"] - began, 3), round(r["end"] - began, 3)
        probe |= {"wall_s": round(wall, 2), "solo_s": round(work, 2),
                  "packed": round(work / wall, 2)}
        print(f"  {len(names)} models in one process, one stream each: {work:.1f} s of solo "
              f"work in {wall:.1f} s, {work / wall:.2f}x packed", flush=True)
    else:
        print("  the probe did not finish: " + "; ".join(
            f"{r['model']} {r.get('error', 'no end')}" for r in rows.values()
            if r not in done), flush=True)
    return probe


# ---------------------------------------------------------------- 4. the table


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


def run_table(entries: list[Entry], mode: Mode, device: torch.device, runs_dir: Path,
              slots: int, levers: Levers, schedule: str, budget_s: float) -> dict[str, Any]:
    """Queue every run at once through the JobManager; wait (cancelling at the budget)."""
    store = RunStore(runs_dir)
    cuda = device.type == "cuda"
    # All `slots` runs may share the GPU (the memory budget still applies), as a class's would.
    manager = JobManager(store, cpu_slots=0 if cuda else slots, gpu_slots=slots if cuda else 0,
                         runs_per_gpu=max(1, slots), poll_interval=0.2)
    start = time.time()
    ids = {e.label: manager.submit(e.preset, spec_for(e.preset, mode),
                                   levers.config(e, mode, "auto", schedule),
                                   name=f"gpu-bench {e.label}")
           for e in entries}
    deadline, last_print, cancelled = start + budget_s, 0.0, False
    try:
        while not all(store.get(i).status.terminal for i in ids.values()):
            now = time.time()
            if now > deadline and not cancelled:
                print(f"  budget of {budget_s:.0f} s reached: cancelling what is left", flush=True)
                for run_id in ids.values():
                    manager.cancel(run_id)
                cancelled = True
            if now - last_print >= 15:
                last_print = now
                states = ", ".join(f"{n} {_progress(store, i)}" for n, i in ids.items())
                print(f"  {now - start:5.0f} s: {states}", flush=True)
            time.sleep(0.5)
    finally:
        manager.shutdown(wait=True, cancel=True)
    runs = {name: store.get(run_id) for name, run_id in ids.items()}
    test = cnndata.load_fashion_mnist(source=mode.data)  # for the classes each run predicts
    return {"wall_s": round(max(r.finished_at or start for r in runs.values()) - start, 1),
            "slots": slots, "overlap": max_overlap(list(runs.values())),
            "rows": [table_row(e, runs[e.label], store.metrics(runs[e.label].id, kind="epoch"),
                               store.metrics(runs[e.label].id, kind="step")[:1])
                     | predicted_classes(store, runs[e.label], test, device)
                     for e in entries]}


def predicted_classes(store: RunStore, run, data: cnndata.FashionMNIST,
                      device: torch.device) -> dict[str, Any]:
    """How often the run's final weights predict each class on the test set, and which classes
    they never predict: NiN's last block ends in a ReLU, so a class whose score is 0 for every
    image gets no gradient (at the book's init 0 to 3 of NiN's 10 scores are, across 8 seeds
    at 224 px, and 3 to 6 with torch's default biases: `bench/dead_scores.py`)."""
    if run.status is not Status.DONE:
        return {}
    model = load_run_model(store, run.id).to(device)  # the Inside page's code, on the GPU
    result = evaluate_images(model, data.test_images, data.test_labels, run_spec(run).input_size)
    return {"predicted_per_class": result.matrix.sum(dim=0).tolist(),
            "never_predicted": result.never_predicted()}


def _progress(store: RunStore, run_id: str) -> str:
    run = store.get(run_id)
    if run.status is not Status.RUNNING:
        return str(run.status)
    last = store.metrics(run_id, kind="step")
    return f"{last[-1]['epoch']:.1f} ep" if last else "starting"


def max_overlap(runs: list) -> int:
    """The most runs that were training at the same moment (from their start and end times)."""
    edges = sorted([(r.started_at, 1) for r in runs if r.started_at]
                   + [(r.finished_at, -1) for r in runs if r.started_at and r.finished_at])
    busy = most = 0
    for _, change in edges:
        busy += change
        most = max(most, busy)
    return most


def table_row(entry: Entry, run, epochs: list[dict[str, Any]],
              first_steps: list[dict[str, Any]]) -> dict[str, Any]:
    """One run's line of the table, with its test accuracy after every epoch and where its
    time went: seconds from its start to its first step event and to each epoch's end, and
    each evaluation's seconds (the store lives on the GPU machine, which keeps nothing: the
    curves must travel in the report)."""
    def since_start(event: dict[str, Any]) -> float | None:
        return round(event["time"] - run.started_at, 1) if run.started_at else None

    book = TEXTBOOK_RESULTS[entry.preset]
    result = run.result
    test_acc = (result.get("metrics") or {}).get("test_acc")
    rate = result.get("examples_per_s")
    return {
        "model": entry.label, "preset": entry.preset, "status": str(run.status),
        "message": run.message, "device": run.device,
        "lr": run.config.get("lr"), "book_lr": textbook_config(entry.preset).lr,
        "batch_size": run.config.get("batch_size"), "compiled": run.config.get("compile"),
        "book_batch_size": textbook_config(entry.preset).batch_size,
        "steps": result.get("steps"),
        "examples_per_s": round(rate, 1) if rate else None,
        "wall_s": round(run.finished_at - run.started_at, 1)
        if run.started_at and run.finished_at else None,
        "train_s": round(result["seconds"], 1) if result.get("seconds") else None,
        "epochs": result.get("epochs_done"), "test_acc": test_acc,
        "book_test_acc": book.test_acc, "book_examples_per_s": book.examples_per_s,
        "speed_ratio": round(rate / book.examples_per_s, 2) if rate else None,
        "acc_at_least_book": test_acc is not None and test_acc >= book.test_acc,
        "test_acc_by_epoch": [round(e["test_acc"], 4) for e in epochs if "test_acc" in e],
        "first_step_event_s": since_start(first_steps[0]) if first_steps else None,
        # whether the step ran as CUDA graphs, and why not when they were asked for
        "cuda_graphs": first_steps[0].get("cuda_graphs") if first_steps else None,
        "cuda_graphs_note": first_steps[0].get("cuda_graphs_note") if first_steps else None,
        "epoch_end_s": [since_start(e) for e in epochs],
        "eval_s_by_epoch": [round(e["eval_s"], 2) for e in epochs if "eval_s" in e],
    }


def print_table(table: dict[str, Any], mode: Mode) -> None:
    print(f"\n{'model':17s} {'status':9s} {'batch':>5s} {'ex/s':>8s} {'book ex/s':>9s} "
          f"{'ratio':>6s} {'wall s':>7s} {'epochs':>6s} {'test acc':>8s} {'book':>6s}")
    for r in table["rows"]:
        acc = f"{r['test_acc']:.3f}" if r["test_acc"] is not None else "-"
        mark = "" if mode.width != 1.0 or r["test_acc"] is None else (
            " ok" if r["acc_at_least_book"] else " BELOW")
        print(f"{r['model']:17s} {r['status']:9s} {r['batch_size'] or 0:5d} "
              f"{r['examples_per_s'] or 0:8,.0f} "
              f"{r['book_examples_per_s']:9,.0f} {r['speed_ratio'] or 0:5.1f}x "
              f"{r['wall_s'] or 0:7.1f} {r['epochs'] or 0:6d} {acc:>8s} "
              f"{r['book_test_acc']:6.3f}{mark}")
    print(f"whole table: {table['wall_s']:.1f} s wall, {table['slots']} slots, at most "
          f"{table['overlap']} runs training at once")
    if mode.width != 1.0:
        print("(smoke mode: 1/8-width networks on the sample; accuracies are not comparable)")
    print("\nwhere the time went, s from each run's start: first step event | each epoch's end "
          "| evaluations (slowest, median)")
    for r in table["rows"]:
        ends = " ".join(f"{t:.1f}" for t in r["epoch_end_s"] if t is not None) or "-"
        evals = r["eval_s_by_epoch"]
        slowest = (f"{max(evals):.1f} (epoch {evals.index(max(evals)) + 1}), "
                   f"{statistics.median(evals):.1f}") if evals else "-"
        print(f"  {r['model']:17s} {r['first_step_event_s'] or 0:5.1f} | {ends} | {slowest}")
    never = {r["model"]: r["never_predicted"] for r in table["rows"] if r.get("never_predicted")}
    print("classes never predicted on the test set: "
          + (", ".join(f"{m} {c}" for m, c in never.items()) if never else "none"))


def solo_seconds(rows: list[dict[str, Any]], solo: list[dict[str, Any]]) -> float | None:
    """The table's runs one after another, each at its solo rate for the steps it trained: the
    GPU work the table packed into its wall time (much more than the wall time: the runs
    overlapped on idle GPU time; about the same: each run's own rate sets the table's pace).
    A run's solo rate is the one timed at its batch size, compiled or not and as CUDA graphs
    or not as the run was, or without that match another one at its batch size (from
    --levers-from, a larger batch is timed only as the quick table ran it). None when a run has
    no solo rate at its batch size."""
    def how(row: dict[str, Any]) -> tuple[bool, bool]:
        return bool(row.get("compiled")), bool(row["cuda_graphs"])

    total = 0.0
    for row in rows:
        same_batch = [r for r in solo if r["model"] == row["preset"]
                      and r["batch_size"] == row["batch_size"] and r.get("examples_per_s")]
        exact = [r for r in same_batch if how(r) == how(row)]
        timed = exact or same_batch
        if not timed or not row.get("steps"):
            return None
        total += row["steps"] * row["batch_size"] / timed[-1]["examples_per_s"]
    return round(total, 1)


def print_work(table: dict[str, Any]) -> None:
    if table.get("solo_s") is None:
        print("the runs alone, one after another: no solo rate for every run")
        return
    print(f"the runs alone, one after another: {table['solo_s']:.1f} s (the steps each "
          f"trained at its solo rate); the table took {table['wall_s']:.1f} s, "
          f"{table['solo_s'] / table['wall_s']:.2f}x packed")


# ---------------------------------------------------------------- main


def learning_rates(parser: argparse.ArgumentParser, option: str,
                   pairs: list[str]) -> dict[str, float]:
    """`--lr nin=0.05 ...` as {preset: lr}; a bad pair stops with a usage error naming it."""
    return preset_values(parser, option, pairs, lambda v: TrainConfig(lr=float(v)).lr,
                         "LR a positive number, e.g. nin=0.05")


def batch_scales(parser: argparse.ArgumentParser, option: str,
                 pairs: list[str]) -> dict[str, int]:
    """`--batch-scale alexnet=2 ...` as {preset: 2}; a bad pair is a usage error naming it."""
    return preset_values(parser, option, pairs, scale_value,
                         "K a whole number from 1 to 8, e.g. alexnet=2")


def scale_value(text: str) -> int:
    scale = int(text)
    if not 1 <= scale <= 8:
        raise ValueError(f"{scale} is not from 1 to 8")
    return scale


def preset_values(parser: argparse.ArgumentParser, option: str, pairs: list[str],
                  parse, expected: str) -> dict[str, Any]:
    """PRESET=VALUE pairs as {preset: parse(VALUE)}; a bad pair stops with a usage error."""
    values: dict[str, Any] = {}
    for pair in pairs:
        name, _, text = pair.partition("=")
        try:
            value = parse(text)
        except (ValueError, ConfigError):
            value = None
        if name not in TABLE or value is None:
            parser.error(f"{option} {pair}: expected PRESET=VALUE with PRESET one of "
                         f"{', '.join(TABLE)} and {expected}")
        values[name] = value
    return values


def named(models: list[str], option: list[str] | None) -> set[str]:
    """The runs an `nargs="*"` option names: none when it is absent, all when it names none."""
    return set(models if option == [] else option or [])


LEVER_PAYS = 1.1  # a solo speed-up this large (a ratio measured in one run) keeps its lever


def levers_that_paid(report: dict[str, Any]) -> Levers:
    """From an earlier report's solo timing (`solo_rows`): the presets that ran compiled or as
    CUDA graphs at least LEVER_PAYS times as fast as eagerly, and the BatchNorm networks whose
    larger batch did as well against the batch their table used, with that batch's scale.
    What the full table takes.

    Only BatchNorm networks, because of what a larger batch at a scaled lr cost on this
    machine's CPU (`bench/schedules.py --batch-scales 1 2 --schedules anneal`, 10 epochs, test
    accuracy for seeds 0 and 1): BN-LeNet kept its accuracy (batch 512 at lr 2: 0.897, 0.898;
    the book's 256 at lr 1: 0.899, 0.894), while the two without it lost on every seed: LeNet
    with sigmoids, still learning at its last epoch as AlexNet, VGG and NiN are in the book's
    10 (0.792, 0.782 against 0.824, 0.826), and NiN-small (batch 512 at lr 0.1: 0.733, 0.555;
    its recipe's 256 at 0.05: 0.748, 0.693). `--batch-scale` still names any run."""
    solo = report.get("solo", [])
    paid = [row for row in solo if row.get("over_eager", 0) >= LEVER_PAYS]
    scales = {row["model"]: row["batch_scale"] for row in solo
              if row.get("over_table_batch", 0) >= LEVER_PAYS and has_batch_norm(row["model"])}
    return Levers(compiled=frozenset(row["model"] for row in paid if row.get("compiled")),
                  graphed=frozenset(row["model"] for row in paid if row.get("cuda_graphs")),
                  batch_scales=scales)


def has_batch_norm(preset: str) -> bool:
    with torch.device("meta"):  # the layers only: no memory, no weights drawn
        return bool(batch_norm_modules(build(PRESETS[preset])))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=list(MODES), default="quick")
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu-MODE.json")
    parser.add_argument("--models", nargs="+", default=TABLE, choices=TABLE, metavar="PRESET")
    parser.add_argument("--slots", type=int, default=None,
                        help="runs training at once (default: all on a GPU, 1 on a CPU)")
    parser.add_argument("--compile", nargs="*", choices=TABLE, metavar="PRESET",
                        help="torch.compile these runs (all of them when none is named)")
    parser.add_argument("--cuda-graphs", nargs="*", choices=TABLE, metavar="PRESET",
                        help="run these runs' steps as CUDA graphs (all when none is named)")
    parser.add_argument("--batch-scale", nargs="+", default=[], metavar="PRESET=K",
                        help="train these runs at K times the book's batch size and lr (the "
                             "linear scaling rule), e.g. alexnet=2; K=1 keeps the book's")
    parser.add_argument("--solo-batch-scale", type=int, metavar="K",
                        help="in the solo phase, also time each BatchNorm network at K times "
                             "the book's batch size and lr (the others lose accuracy at a larger "
                             "batch: README)")
    parser.add_argument("--levers-from", type=Path, metavar="GPU-QUICK.JSON",
                        help="take the levers that report's solo timing found at least "
                             f"{LEVER_PAYS}x faster: compile, CUDA graphs, and a larger batch for "
                             "BatchNorm networks (--compile, --cuda-graphs and --batch-scale "
                             "still add; --batch-scale PRESET=1 takes one back)")
    parser.add_argument("--schedule", choices=SCHEDULES, default="constant",
                        help="constant: the book's; cosine: the book's lr decayed to 0; anneal: "
                             "the book's lr, then to 0 over the last fifth")
    parser.add_argument("--lr", nargs="+", default=[], metavar="PRESET=LR",
                        help="replace the book's learning rate for these runs, e.g. nin=0.05 "
                             "(the later editions' NiN recipe)")
    parser.add_argument("--extra", nargs="+", default=[], metavar="PRESET=LR",
                        help="also train these presets at this lr beside the book's runs, in "
                             "the same table, e.g. nin=0.05")
    parser.add_argument("--no-solo", action="store_true", help="skip the solo throughput phase")
    parser.add_argument("--streams-probe", action="store_true",
                        help="after the solo phase, train the models at once in one process, "
                             "one CUDA stream each, for about 2 s of their solo work each")
    parser.add_argument("--budget-s", type=float, help="cancel the table after this long")
    parser.add_argument("--runs-dir", type=Path,
                        help="run store for the table (default OUT/runs-MODE; it holds checkpoints)")
    args = parser.parse_args(argv)
    mode = MODES[args.mode]
    lrs = learning_rates(parser, "--lr", args.lr)
    entries = entries_for(args.models, lrs, learning_rates(parser, "--extra", args.extra))
    device = resolve_device("auto")
    compiled, graphed = named(args.models, args.compile), named(args.models, args.cuda_graphs)
    scales, earlier_solo = {}, []
    if args.levers_from:
        try:
            earlier = json.loads(args.levers_from.read_text())
        except (OSError, ValueError) as exc:
            parser.error(f"--levers-from {args.levers_from}: {exc}")
        paid = levers_that_paid(earlier)
        compiled |= paid.compiled & set(args.models)
        graphed |= paid.graphed & set(args.models)
        scales = dict(paid.batch_scales)
        earlier_solo = earlier.get("solo", [])
    scales |= batch_scales(parser, "--batch-scale", args.batch_scale)
    if args.solo_batch_scale is not None and not 1 <= args.solo_batch_scale <= 8:
        parser.error(f"--solo-batch-scale {args.solo_batch_scale}: expected a whole number "
                     "from 1 to 8, e.g. 2")
    if compiled & graphed:
        parser.error(f"--compile and --cuda-graphs both name {', '.join(sorted(compiled & graphed))}"
                     ": a run can use one of them")
    levers = Levers(frozenset(compiled), frozenset(graphed),
                    {name: k for name, k in scales.items() if name in args.models and k != 1})
    args.out.mkdir(parents=True, exist_ok=True)  # only once every option is understood
    report: dict[str, Any] = {"mode": mode.name, "compile": sorted(compiled),
                              "cuda_graphs": sorted(graphed), "batch_scales": levers.batch_scales,
                              "schedule": args.schedule, "lr": lrs,
                              "extra": [e.label for e in entries[len(args.models):]],
                              "models": args.models}
    path = args.out / f"gpu-{mode.name}.json"

    def save() -> None:
        path.write_text(json.dumps(report, indent=1, default=str))

    began = time.perf_counter()
    print("environment", flush=True)
    report["environment"] = environment(device)
    print("  " + json.dumps(report["environment"]), flush=True)
    save()
    print("app device code", flush=True)
    report["checks"] = device_checks(device)
    save()
    if mode.solo and not args.no_solo:
        print("each model alone", flush=True)
        dataset = cnndata.load_fashion_mnist(source=mode.data)
        report["solo"] = []
        for name in args.models:  # saved after each model: a call that runs out keeps them
            report["solo"] += solo_rows(name, mode, device, dataset, name in compiled,
                                        name in graphed, levers.scale(name),
                                        args.solo_batch_scale if has_batch_norm(name) else None)
            save()
        if args.streams_probe:
            print("one process, one CUDA stream per model", flush=True)
            report["streams_probe"] = streams_probe(args.models, mode, device, dataset,
                                                    report["solo"])
            save()
        del dataset
        if device.type == "cuda":
            torch.cuda.empty_cache()  # leave the GPU to the table's workers
    slots = args.slots or (len(entries) if device.type == "cuda" else 1)
    print(f"the table: {len(entries)} runs queued at once, {slots} slots"
          + "".join(f"; {e.label} at lr {e.lr:g} (the book's {textbook_config(e.preset).lr:g})"
                    for e in entries if e.lr is not None)
          + "".join(f"; {name} at {k}x the book's batch and lr"
                    for name, k in levers.batch_scales.items()), flush=True)
    runs_dir = args.runs_dir or args.out / f"runs-{mode.name}"
    table = run_table(entries, mode, device, runs_dir, slots, levers, args.schedule,
                      args.budget_s or mode.budget_s)
    table["solo_s"] = solo_seconds(table["rows"], report.get("solo") or earlier_solo)
    report["table"] = table
    routed = all(r["device"] == ("cuda:0" if device.type == "cuda" else "cpu")
                 for r in table["rows"])
    report["checks"].append(check("queued runs routed to the device's slots", routed,
                                  ", ".join(sorted({str(r['device']) for r in table['rows']}))))
    report["checks"].append(check("runs shared the device", table["overlap"] >= min(2, slots),
                                  f"at most {table['overlap']} at once with {slots} slots"))
    report["seconds"] = round(time.perf_counter() - began, 1)
    save()
    print_table(table, mode)
    print_work(table)
    failed = [c["check"] for c in report["checks"] if not c["ok"]]
    not_done = [r["model"] for r in table["rows"] if r["status"] != "done"]
    print(f"{report['seconds']:.0f} s in all; results in {path}")
    if failed or not_done:
        print(f"PROBLEMS: failed checks {failed}, runs not done {not_done}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
