"""bench/gpu.py in its smallest mode, on this machine's CPU: the script the GPU session runs
must not rot between sessions that are lent a GPU."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from cnnlab.runs.store import RunStore

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_smoke_mode_runs_every_phase_and_writes_its_report(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu.py"), "--mode", "smoke", "--slots", "2",
         "--models", "bn-lenet", "resnet18", "--lr", "resnet18=0.02", "--extra", "bn-lenet=0.5", "--cuda-graphs", "resnet18",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads((tmp_path / "gpu-smoke.json").read_text())

    env = report["environment"]
    assert env["device"] == "cpu" and env["torch"] and env["matmul_tflops"] > 0
    assert all(c["ok"] for c in report["checks"]), report["checks"]
    assert {c["check"] for c in report["checks"]} >= {
        "memory check refuses VGG-16 at batch 65,536", "queued runs routed to the device's slots",
        "runs shared the device"}

    solo = [(row["model"], row["graphs_asked"]) for row in report["solo"]]
    # resnet18 is named by --cuda-graphs: timed eagerly, then as graphs (eager on this CPU)
    assert solo == [("bn-lenet", False), ("resnet18", False), ("resnet18", True)]
    assert all(row["examples_per_s"] > 0 and row["estimate_mib"] > 0 for row in report["solo"])
    assert [row["cuda_graphs"] for row in report["solo"]] == [False, False, False]
    assert report["solo"][2]["over_eager"] > 0 and "over_eager" not in report["solo"][1]

    table = report["table"]
    assert [row["model"] for row in table["rows"]] == ["bn-lenet", "resnet18", "bn-lenet lr 0.5"]
    for row in table["rows"]:
        assert row["status"] == "done" and row["device"] == "cpu"
        assert 0.0 <= row["test_acc"] <= 1.0 and row["examples_per_s"] > 0
        assert row["book_test_acc"] > 0.8  # the book's row sits beside ours
        assert row["test_acc_by_epoch"] == [row["test_acc"]]  # one (partial) epoch
        # where the time went: first step, then the epoch's end, within the run's wall time
        assert 0 <= row["first_step_event_s"] <= row["epoch_end_s"][0] <= row["wall_s"]
        assert len(row["eval_s_by_epoch"]) == 1 and row["eval_s_by_epoch"][0] >= 0
        # which classes the final weights predict, over the whole (sample) test set
        assert sum(row["predicted_per_class"]) == 1000 and len(row["predicted_per_class"]) == 10
        assert row["never_predicted"] == [c for c, n in enumerate(row["predicted_per_class"])
                                          if n == 0]
    lrs = {row["model"]: (row["lr"], row["book_lr"]) for row in table["rows"]}
    # --lr replaced one run's lr; --extra added a run of a preset at another lr
    assert lrs == {"bn-lenet": (1.0, 1.0), "resnet18": (0.02, 0.05), "bn-lenet lr 0.5": (0.5, 1.0)}
    assert table["rows"][2]["preset"] == "bn-lenet" and report["extra"] == ["bn-lenet lr 0.5"]
    assert report["lr"] == {"resnet18": 0.02}
    # asked for on resnet18: on this CPU its step runs eagerly, and the row says so
    assert report["cuda_graphs"] == ["resnet18"]
    assert [row["cuda_graphs"] for row in table["rows"]] == [False, False, False]
    assert all(row["cuda_graphs_note"] is None for row in table["rows"])
    asked = {run.name: run.config["cuda_graphs"] for run in RunStore(tmp_path / "runs-smoke").list()}
    assert asked == {"gpu-bench bn-lenet": False, "gpu-bench resnet18": True,
                     "gpu-bench bn-lenet lr 0.5": False}
    assert table["overlap"] == 2  # two slots: both runs trained at once
    assert "whole table" in done.stdout


def load_bench(monkeypatch):
    """bench/gpu.py as a module (bench/ is scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("gpu_bench", ROOT / "bench" / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_bench", module)  # its dataclasses look it up there
    spec.loader.exec_module(module)
    return module


def test_the_full_table_graphs_the_models_whose_solo_timing_gained_from_graphs(monkeypatch):
    bench = load_bench(monkeypatch)
    report = {"solo": [
        {"model": "googlenet", "graphs_asked": False, "cuda_graphs": False},
        {"model": "googlenet", "graphs_asked": True, "cuda_graphs": True, "over_eager": 3.2},
        {"model": "alexnet", "graphs_asked": True, "cuda_graphs": True, "over_eager": 1.02},
        {"model": "densenet", "graphs_asked": True, "cuda_graphs": False, "over_eager": 1.5},
        {"model": "bn-lenet", "graphs_asked": False, "cuda_graphs": False}]}
    # alexnet barely gained; densenet's capture failed, so its rate was eager anyway
    assert bench.graphs_that_paid(report) == ["googlenet"]
    assert bench.graphs_that_paid({}) == []


def test_a_missing_graphs_report_is_a_usage_error_naming_the_option(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu.py"), "--mode", "smoke",
         "--cuda-graphs-from", str(tmp_path / "nowhere.json"), "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 2 and "--cuda-graphs-from" in done.stderr
    assert not list(tmp_path.iterdir())  # stopped before writing anything
