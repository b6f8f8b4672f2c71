"""Tests for the CLI's training commands: `train`, `runs` and `reproduce`, on the bundled
sample, a few steps each."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cnnlab import cli
from cnnlab.runs.store import RunStore, Status

ROOT = Path(__file__).resolve().parents[1]


def test_cli_train_on_the_sample_records_a_run(runs_dir: Path, capsys) -> None:
    assert cli.main(["train", "bn-lenet", "--data", "sample", "--max-steps", "5"]) == 0
    (run,) = RunStore(runs_dir).list()
    assert run.status is Status.DONE and run.result["steps"] == 5
    assert run.config["lr"] == 1.0 and run.config["max_steps"] == 5  # the book's lr, our cap
    out, err = capsys.readouterr()
    assert f"run id: {run.id}" in out and "SAMPLE" in err


def test_cli_runs_lists_recorded_runs(runs_dir: Path, capsys) -> None:
    cli.main(["train", "bn-lenet", "--data", "sample", "--epochs", "1"])
    capsys.readouterr()
    assert cli.main(["runs"]) == 0
    header, row = capsys.readouterr().out.strip().splitlines()
    assert "best test acc" in header
    assert row.split()[1:4] == ["bn-lenet", "done", "1"]


def test_cli_train_with_a_bad_option_exits_2_without_a_traceback(runs_dir: Path, capsys) -> None:
    assert cli.main(["train", "bn-lenet", "--lr", "-3", "--data", "sample"]) == 2
    err = capsys.readouterr().err
    assert "lr: must be a positive number" in err and "Traceback" not in err
    assert RunStore(runs_dir).list() == []  # nothing recorded for a typo


def test_cli_cuda_graphs_reach_the_config_and_a_cpu_only_run_is_refused(runs_dir: Path,
                                                                        capsys) -> None:
    assert cli.main(["train", "bn-lenet", "--cuda-graphs", "--device", "cpu",
                     "--data", "sample"]) == 2
    assert "cuda_graphs: needs a GPU (device is cpu)" in capsys.readouterr().err
    # device auto on this CPU: accepted, trained eagerly
    assert cli.main(["train", "bn-lenet", "--cuda-graphs", "--data", "sample",
                     "--max-steps", "2"]) == 0
    (run,) = RunStore(runs_dir).list()
    assert run.config["cuda_graphs"] is True and run.status is Status.DONE


def test_cli_reproduce_prints_ours_next_to_the_book(runs_dir: Path, capsys) -> None:
    argv = ["reproduce", "--models", "bn-lenet", "--data", "sample", "--max-steps", "3"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    (row,) = [line for line in out.splitlines() if line.startswith("bn-lenet ")]
    assert "0.814" in row and "27,746" in row  # the book's test acc and examples/s
    assert "SAMPLE" in out and len(RunStore(runs_dir).list()) == 1


def test_cli_reproduce_refuses_models_the_chapter_does_not_train(runs_dir: Path, capsys) -> None:
    assert cli.main(["reproduce", "--models", "vgg19"]) == 2
    assert "not a model the chapter trains: vgg19" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cli_train_on_cuda_without_a_gpu_exits_2(runs_dir: Path, capsys) -> None:
    assert cli.main(["train", "bn-lenet", "--device", "cuda", "--data", "sample"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_cli_runs_json_and_csv_show_estimated_and_measured_memory(runs_dir: Path, capsys) -> None:
    cli.main(["train", "bn-lenet", "--data", "sample", "--max-steps", "3", "--name", "a, b"])
    capsys.readouterr()
    assert cli.main(["runs", "--json"]) == 0
    (record,) = json.loads(capsys.readouterr().out)
    assert record["name"] == "a, b" and record["data"] == "sample"
    # The CLI trains in its own process: the measured peak is that process's resident set.
    assert record["memory_estimated"] > 0 and record["memory_measured"] > 0
    assert record["spec"]["family"] == "lenet"
    assert cli.main(["runs", "--csv"]) == 0
    (row,) = csv.DictReader(io.StringIO(capsys.readouterr().out))
    assert row["name"] == "a, b" and int(row["memory_measured"]) == record["memory_measured"]


def test_cli_metrics_and_report_write_a_runs_epochs_and_page(runs_dir: Path, capsys,
                                                            tmp_path: Path) -> None:
    cli.main(["train", "bn-lenet", "--data", "sample", "--epochs", "2", "--name", "<b>me</b>"])
    capsys.readouterr()
    (run,) = RunStore(runs_dir).list()
    assert cli.main(["metrics", run.id, "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [float(r["epoch"]) for r in rows] == [1.0, 2.0] and 0 < float(rows[1]["test_acc"]) <= 1
    assert all(float(r["eval_s"]) > 0 for r in rows)  # each evaluation's own seconds
    page = tmp_path / "report.html"
    assert cli.main(["report", run.id, "-o", str(page)]) == 0
    text = page.read_text()
    assert "<svg" in text and "&lt;b&gt;me&lt;/b&gt;" in text and "<b>me</b>" not in text
    assert "<th>eval_s</th>" in text
    assert "http" not in text.replace("http://www.w3.org/2000/svg", "")  # nothing to fetch


def test_cli_metrics_of_an_unknown_run_exits_2_naming_it(runs_dir: Path, capsys) -> None:
    assert cli.main(["metrics", "nope"]) == 2
    assert "run_id: no run 'nope'" in capsys.readouterr().err


def test_cli_train_stopped_with_sigterm_records_the_run_as_interrupted_at_once(
        runs_dir: Path) -> None:
    # A real process, as a job scheduler or `kill` would stop it.
    train = subprocess.Popen(
        [sys.executable, "-m", "cnnlab", "train", "bn-lenet", "--data", "sample",
         "--epochs", "1000"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not _has_steps(runs_dir):
            assert train.poll() is None, train.communicate()
            time.sleep(0.1)
        train.send_signal(signal.SIGTERM)
        _, err = train.communicate(timeout=30)
    finally:
        train.kill()
    assert train.returncode == cli.EXIT_TERMINATED, err
    (run,) = RunStore(runs_dir).list()
    assert run.status is Status.INTERRUPTED and "SIGTERM" in run.message
    assert "interrupted" in err and "Traceback" not in err


def _has_steps(runs_dir: Path) -> bool:
    if not (runs_dir / "runs.sqlite").exists():
        return False
    runs = RunStore(runs_dir).list()
    return bool(runs) and bool(RunStore(runs_dir).metrics(runs[0].id, "step"))


def test_cli_runs_on_a_store_whose_records_were_lost_exits_2_saying_how_to_recover(
        runs_dir: Path, capsys) -> None:
    store = RunStore(runs_dir)
    store.run_dir(store.create("bn-lenet", {}, {}).id).mkdir(parents=True)
    (runs_dir / "runs.sqlite").write_bytes(b"")
    for wal in runs_dir.glob("runs.sqlite-*"):
        wal.unlink()
    assert cli.main(["runs"]) == 2
    err = capsys.readouterr().err
    assert "empty (0 bytes)" in err and "restore runs.sqlite" in err and "Traceback" not in err
