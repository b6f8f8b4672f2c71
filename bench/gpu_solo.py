"""Each model alone on the device, for `bench/gpu.py`: its examples/s eagerly and with each
lever, which levers paid, the streams probe (all the models at once in this one process), and
from those rates a forecast of the full table each way of sharing the GPU."""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

import torch

from cnnlab.arch.models import batch_norm_modules, build
from cnnlab.arch.presets import PRESETS
from cnnlab.arch.specs import Spec
from cnnlab.training import data as cnndata
from cnnlab.training import resources
from cnnlab.training.files import FULL_SIZES
from cnnlab.training.loop import train
from cnnlab.training.recipes import textbook_config
from gpu_runs import Levers, Mode, config_for, spec_for
from gpu_threads import own_stream


def warmup_steps(spec: Spec, mode: Mode) -> int:
    """Steps before timing starts (cuDNN picks its kernels; compile compiles), which are also
    the steps between two timed step events."""
    return 2 if mode.name == "smoke" else 5 if spec.input_size > 100 else 20


def timing_data(dataset: cnndata.FashionMNIST) -> cnndata.FashionMNIST:
    """The training split with 10 test images: what is timed is training, not evaluation."""
    return dataclasses.replace(dataset, test_images=dataset.test_images[:10],
                               test_labels=dataset.test_labels[:10])


def timed_rate(solo: list[dict[str, Any]], model: str, compiled: bool, graphed: bool,
               **batch: int) -> float | None:
    """The examples/s `solo` (rows of `solo_rate`) timed for `model` at `batch` (batch_size=N
    or batch_scale=K; none given: any), compiled and as CUDA graphs as asked, or else timed
    another way at that batch; None when nothing was timed at that batch."""
    rows = [r for r in solo if r["model"] == model and r.get("examples_per_s")
            and all(r[key] == value for key, value in batch.items())]
    exact = [r for r in rows if (bool(r.get("compiled")), bool(r["cuda_graphs"]))
             == (compiled, graphed)]
    return (exact or rows or [{}])[-1].get("examples_per_s")


def solo_rate(name: str, mode: Mode, device: torch.device, dataset: cnndata.FashionMNIST,
              compile: bool, graphs: bool = False, batch_scale: int = 1) -> dict[str, Any]:
    """Training examples/s of one model alone after warm-up, and its peak memory on a GPU."""
    spec = spec_for(name, mode)
    interval = warmup_steps(spec, mode)  # steps per timed interval
    intervals = 2 if mode.name == "smoke" else 4
    # The first interval warms up (cuDNN picks its kernels; compile compiles): not timed.
    config = config_for(name, mode, device.type, compile, graphs=graphs,
                        batch_scale=batch_scale).replace(
        max_steps=interval * (1 + intervals), log_every=interval, bn_recalibration=0)
    events: list[dict[str, Any]] = []
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    row: dict[str, Any] = {"model": name, "batch_size": config.batch_size,
                           "batch_scale": batch_scale, "compiled": compile, "graphs_asked": graphs}
    try:
        result = train(spec, config, on_event=events.append, data=timing_data(dataset))
    except Exception as exc:  # noqa: BLE001 - one model's failure must not end a device call
        row |= {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:500],
                "examples_per_s": None, "cuda_graphs": None}
        print(f"  {name}: FAILED alone (batch {config.batch_size}, compiled {compile}, CUDA "
              f"graphs asked {graphs}): {row['error']}", flush=True)
        return row
    timed = [e for e in events if e["kind"] == "step" and e["step"] > interval]
    seconds = sum(interval * config.batch_size / e["examples_per_s"] for e in timed)
    row |= {
        "status": result.status.value,
        "examples_per_s": round(len(timed) * interval * config.batch_size / seconds, 1)
        if seconds else None,
        "layout": "NHWC" if result.channels_last else "NCHW", "amp": result.amp,
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
    rate = (f"{row['examples_per_s']:,.0f} examples/s" if row["examples_per_s"]
            else f"no timed steps, {row['status']}")
    print(f"  {name}: {rate} alone (batch "
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


def streams_probe(models: list[str], mode: Mode, device: torch.device,
                  dataset: cnndata.FashionMNIST, solo: list[dict[str, Any]]) -> dict[str, Any]:
    """The models trained at once in one process, each in its own thread and CUDA stream, each
    for `mode.probe_s` seconds' worth of steps at its eager solo rate (2 on a GPU), all
    starting together after a warm-up. The table's runs are processes, which take turns on the
    GPU (its packing, `solo_s` over the wall time, was 1.18x on 2026-11-29); kernels from one
    process's streams can run side by side. This measures how much more of the GPU that
    sharing uses, which `--in-process` trains the table with. Eager only: a CUDA-graph capture
    or a compile in one thread would stall or break the others."""
    rates = {name: rate for name in models
             if (rate := timed_rate(solo, name, False, False, batch_scale=1))}
    names = list(rates)
    barrier = threading.Barrier(len(names), timeout=120)
    tiny = timing_data(dataset)
    rows: dict[str, dict[str, Any]] = {}

    def one(name: str) -> None:
        spec = spec_for(name, mode)
        book = config_for(name, mode, device.type, False)
        warm = warmup_steps(spec, mode)
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
        try:
            with own_stream(str(device)):
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


LEVER_PAYS = 1.1  # a solo speed-up this large (a ratio measured in one run) keeps its lever


def levers_that_paid(report: dict[str, Any]) -> Levers:
    """From an earlier report's solo timing (`solo_rows`): the presets that ran compiled or as
    CUDA graphs at least LEVER_PAYS times as fast as eagerly, and the BatchNorm networks whose
    larger batch did as well against the batch their table used, with that batch's scale.
    What the full table takes.

    Only BatchNorm networks: on this machine's CPU twice the batch and lr kept BN-LeNet's
    accuracy and cost LeNet and NiN-small theirs on every seed (README, "Where the 228 s
    went"; `bench/schedules.py --batch-scales 1 2`); AlexNet, VGG and NiN, like those two, are
    still learning at their last epoch. `--batch-scale` still names any run."""
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


# The worker processes' table of 2026-11-29 packed 270.4 s of solo work into 228.4 s of wall
# time (README, "Where the 228 s went").
PROCESS_PACKING = 1.18


def forecast(models: list[str], solo: list[dict[str, Any]], probe: dict[str, Any] | None,
             levers: Levers) -> dict[str, Any]:
    """What the full table would take, from a quick report's solo rates: each model's 10
    epochs at its rate, added up and divided by how well each way of sharing the GPU packed
    (worker processes with `levers`: PROCESS_PACKING; one process, eagerly: the probe's).
    A guide for choosing the second call's options in the seconds between two device calls,
    not a measurement; None for a way a rate is missing for."""
    def rate(name: str, compiled: bool, graphed: bool, scale: int) -> float | None:
        # at another batch when that one was not timed (a quick run given --batch-scale)
        return (timed_rate(solo, name, compiled, graphed, batch_scale=scale)
                or timed_rate(solo, name, compiled, graphed))

    leveled_s, eager_s = [], []
    for name in models:
        book = textbook_config(name)
        batch = book.batch_size * levers.scale(name)
        examples = book.epochs * (FULL_SIZES[0] // batch) * batch  # short batches sit out
        leveled = rate(name, name in levers.compiled, name in levers.graphed, levers.scale(name))
        eager = rate(name, False, False, 1)
        leveled_s.append(examples / leveled if leveled else None)
        eager_s.append(examples / eager if eager else None)
    processes, threads = total(leveled_s), total(eager_s)
    packed = (probe or {}).get("packed")
    return {"processes_solo_s": processes,
            "processes_s": round(processes / PROCESS_PACKING, 1) if processes else None,
            "threads_solo_s": threads,
            "threads_s": round(threads / packed, 1) if threads and packed else None}


def total(seconds: list[float | None]) -> float | None:
    return None if not seconds or None in seconds else round(sum(seconds), 1)


def print_forecast(guess: dict[str, Any], packed: float | None, mode: Mode) -> None:
    def say(seconds: float | None, solo_s: float | None, over: str) -> str:
        return f"{seconds:.0f} s ({solo_s:.0f} s of solo work over {over})" if seconds else "-"

    smoke = "; smoke mode: the rates of small networks" if mode.width != 1.0 else ""
    print(f"forecast for the full table, from these solo rates (a guide, not a measurement"
          f"{smoke}):\n"
          "  worker processes with the levers that paid: "
          + say(guess["processes_s"], guess["processes_solo_s"],
                f"{PROCESS_PACKING}x, the 2026-11-29 packing")
          + "\n  one process, one CUDA stream each (--in-process, eager): "
          + say(guess["threads_s"], guess["threads_solo_s"], f"the probe's {packed}x"),
          flush=True)
