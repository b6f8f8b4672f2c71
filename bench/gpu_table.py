"""The table of `bench/gpu.py`: every run queued at once through the app's own JobManager, so
they share the device as a class's runs would; each run's row, where its time went, and the GPU
work the table packed into its wall time."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import torch

from cnnlab.runs.jobs import JobManager
from cnnlab.runs.store import RunStore, Status
from cnnlab.training import data as cnndata
from cnnlab.training.recipes import TEXTBOOK_RESULTS, textbook_config
from cnnlab.views.inside import evaluate_images, load_run_model, run_spec
from gpu_runs import Entry, Levers, Mode, spec_for
from gpu_solo import timed_rate
from gpu_threads import InProcessThreads


def run_table(entries: list[Entry], mode: Mode, device: torch.device, runs_dir: Path,
              slots: int, levers: Levers, schedule: str, budget_s: float,
              in_process: bool = False) -> dict[str, Any]:
    """Queue every run at once through the JobManager; wait (cancelling at the budget). The
    runs train in worker processes, as the app's do, or with `in_process` in threads here."""
    store = RunStore(runs_dir)
    cuda = device.type == "cuda"
    # All `slots` runs may share the GPU (the memory budget still applies), as a class's would.
    manager = JobManager(store, cpu_slots=0 if cuda else slots, gpu_slots=slots if cuda else 0,
                         runs_per_gpu=max(1, slots), poll_interval=0.2,
                         executor=InProcessThreads() if in_process else None)
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
            "slots": slots, "executor": "threads" if in_process else "processes",
            "overlap": max_overlap(list(runs.values())),
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
    total = 0.0
    for row in rows:
        rate = timed_rate(solo, row["preset"], bool(row.get("compiled")),
                          bool(row["cuda_graphs"]), batch_size=row["batch_size"])
        if not rate or not row.get("steps"):
            return None
        total += row["steps"] * row["batch_size"] / rate
    return round(total, 1)


def print_work(table: dict[str, Any]) -> None:
    if table.get("solo_s") is None:
        print("the runs alone, one after another: no solo rate for every run")
        return
    print(f"the runs alone, one after another: {table['solo_s']:.1f} s (the steps each "
          f"trained at its solo rate); the table took {table['wall_s']:.1f} s, "
          f"{table['solo_s'] / table['wall_s']:.2f}x packed")
