"""bench/gpu.py in its smallest mode, on this machine's CPU: the script the GPU session runs
must not rot between sessions that are lent a GPU."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from cnnlab.arch.presets import PRESETS
from cnnlab.runs.jobs import JobManager
from cnnlab.runs.store import RunStore, Status
from cnnlab.training.config import TrainConfig

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_smoke_mode_runs_every_phase_and_writes_its_report(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu.py"), "--mode", "smoke", "--slots", "2",
         "--models", "bn-lenet", "resnet18", "--lr", "resnet18=0.02", "--extra", "bn-lenet=0.5",
         "--cuda-graphs", "resnet18", "--batch-scale", "bn-lenet=2", "--solo-batch-scale", "2",
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

    solo = [(row["model"], row["graphs_asked"], row["batch_size"]) for row in report["solo"]]
    # resnet18 is named by --cuda-graphs: timed eagerly, then as graphs (eager on this CPU),
    # then as graphs at twice its batch (--solo-batch-scale 2); bn-lenet's table already
    # trains at twice its (smoke) batch of 32, so it is timed once
    assert solo == [("bn-lenet", False, 64), ("resnet18", False, 32), ("resnet18", True, 32),
                    ("resnet18", True, 64)]
    assert all(row["examples_per_s"] > 0 and row["estimate_mib"] > 0 for row in report["solo"])
    assert [row["cuda_graphs"] for row in report["solo"]] == [False] * 4
    assert [row["batch_scale"] for row in report["solo"]] == [2, 1, 1, 2]
    assert report["solo"][2]["over_eager"] > 0 and "over_eager" not in report["solo"][1]
    assert report["solo"][3]["over_table_batch"] > 0
    assert not any("over_table_batch" in row for row in report["solo"][:3])
    # from those rates, a guess at the full table's time; one process's needs --streams-probe
    assert report["forecast"]["processes_s"] > 0 and report["forecast"]["threads_s"] is None
    assert "forecast for the full table" in done.stdout

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
    # --batch-scale doubled bn-lenet's lr with its batch; --lr replaced one run's lr; --extra
    # added a run of a preset at another lr (as given: an explicit lr is not scaled)
    assert lrs == {"bn-lenet": (2.0, 1.0), "resnet18": (0.02, 0.05), "bn-lenet lr 0.5": (0.5, 1.0)}
    assert [row["batch_size"] for row in table["rows"]] == [64, 32, 64]
    assert [row["book_batch_size"] for row in table["rows"]] == [256, 256, 256]
    assert report["batch_scales"] == {"bn-lenet": 2}
    # the GPU work: every run has a solo rate for its batch, so the sum is there
    assert table["solo_s"] > 0 and "the runs alone, one after another" in done.stdout
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


@pytest.fixture
def bench(monkeypatch):
    """bench/gpu.py and its modules (bench/ is scripts, not a package), imported from bench/."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    return SimpleNamespace(gpu=importlib.import_module("gpu"),
                           **{name: importlib.import_module(f"gpu_{name}")
                              for name in ("runs", "solo", "table", "threads")})


def solo_row(model: str, *, compiled: bool = False, graphs: bool = False, scale: int = 1,
             **more) -> dict:
    """A solo row of a report as `gpu_solo.solo_rate` writes it, with the fields tests read."""
    return {"model": model, "compiled": compiled, "graphs_asked": graphs, "cuda_graphs": graphs,
            "batch_scale": scale, **more}


def test_the_full_table_takes_the_levers_whose_solo_timing_gained(bench):
    report = {"solo": [
        solo_row("googlenet"),
        solo_row("googlenet", graphs=True, over_eager=3.2),
        solo_row("googlenet", graphs=True, scale=2, over_table_batch=1.04),
        solo_row("alexnet", graphs=True, over_eager=1.02),
        solo_row("alexnet", graphs=True, scale=2, over_table_batch=1.3),
        solo_row("densenet", graphs=True, over_eager=1.5) | {"cuda_graphs": False},  # failed
        solo_row("densenet", scale=2, over_table_batch=1.2),
        solo_row("vgg11-small", compiled=True, over_eager=1.4),
        solo_row("nin", compiled=True, over_eager=1.05),
        solo_row("bn-lenet")]}
    # googlenet's graphs gained, its doubled batch not; densenet's capture failed, so its
    # rate was eager anyway, but its doubled batch gained; alexnet's graphs barely gained,
    # and its doubled batch, though faster, is not taken: AlexNet has no BatchNorm; compiling
    # paid for vgg, not for nin
    assert bench.solo.levers_that_paid(report) == bench.runs.Levers(
        compiled=frozenset({"vgg11-small"}), graphed=frozenset({"googlenet"}),
        batch_scales={"densenet": 2})
    assert bench.solo.levers_that_paid({}) == bench.runs.Levers()


def test_the_solo_phase_times_a_lever_against_eager_and_a_larger_batch_against_the_tables(
        bench, monkeypatch):
    rates = {(False, False, 1): 100.0, (True, False, 1): 150.0, (True, False, 2): 180.0}
    timed = []

    def fake_solo_rate(name, mode, device, dataset, compile, graphs=False, batch_scale=1):
        timed.append((compile, graphs, batch_scale))
        return {"model": name, "examples_per_s": rates[compile, graphs, batch_scale],
                "batch_size": 128 * batch_scale}

    monkeypatch.setattr(bench.solo, "solo_rate", fake_solo_rate)
    rows = bench.solo.solo_rows("alexnet", bench.runs.MODES["quick"], None, None, compile=True,
                                graphs=False, try_scale=2)
    assert timed == [(True, False, 1), (False, False, 1), (True, False, 2)]  # table's first
    assert [row["examples_per_s"] for row in rows] == [100.0, 150.0, 180.0]  # eager first
    assert rows[1]["over_eager"] == 1.5 and rows[2]["over_table_batch"] == 1.2
    # as the book runs it, nothing to compare: one row
    timed.clear()
    quick = bench.runs.MODES["quick"]
    assert len(bench.solo.solo_rows("alexnet", quick, None, None, False, False)) == 1
    assert timed == [(False, False, 1)]


def test_only_the_batch_norm_networks_of_the_table_count_as_such(bench):
    assert {name for name in bench.runs.TABLE if bench.solo.has_batch_norm(name)} == {
        "bn-lenet-scratch", "bn-lenet", "resnet18", "densenet"}


def test_a_batch_scale_multiplies_the_books_batch_and_lr_and_an_explicit_lr_wins(bench):
    full = bench.runs.MODES["full"]
    book = bench.runs.config_for("alexnet", full, "cuda", False)
    assert (book.batch_size, book.lr, book.epochs) == (128, 0.01, 10)
    doubled = bench.runs.config_for("alexnet", full, "cuda", False, batch_scale=2)
    assert (doubled.batch_size, doubled.lr, doubled.epochs) == (256, 0.02, 10)
    given = bench.runs.config_for("alexnet", full, "cuda", False, lr=0.015, batch_scale=2)
    assert (given.batch_size, given.lr) == (256, 0.015)


def test_the_solo_seconds_add_each_runs_steps_at_its_own_solo_rate(bench):
    solo = [{"model": "nin", "cuda_graphs": False, "batch_size": 128, "examples_per_s": 1280.0},
            {"model": "nin", "cuda_graphs": False, "batch_size": 256, "examples_per_s": 1600.0},
            {"model": "googlenet", "cuda_graphs": True, "batch_size": 128,
             "examples_per_s": 640.0}]
    rows = [{"preset": "nin", "cuda_graphs": False, "batch_size": 256, "steps": 25},
            {"preset": "nin", "cuda_graphs": False, "batch_size": 128, "steps": 10},  # --extra
            {"preset": "googlenet", "cuda_graphs": True, "batch_size": 128, "steps": 5}]
    assert bench.table.solo_seconds(rows, solo) == 4.0 + 1.0 + 1.0
    # a run trained without the graphs its solo rate had: counted at that rate all the same
    rows[2]["cuda_graphs"] = False
    assert bench.table.solo_seconds(rows, solo) == 6.0
    # with both timed, the matching one counts
    solo.append({"model": "googlenet", "cuda_graphs": False, "batch_size": 128,
                 "examples_per_s": 320.0})
    assert bench.table.solo_seconds(rows, solo) == 4.0 + 1.0 + 2.0
    # no solo rate at a run's batch size: no sum
    rows[2]["batch_size"] = 256
    assert bench.table.solo_seconds(rows, solo) is None
    assert bench.table.solo_seconds(rows[:2], []) is None


@pytest.mark.parametrize("args, option", [
    (["--levers-from", "nowhere.json"], "--levers-from"),
    (["--batch-scale", "alexnet=0"], "--batch-scale alexnet=0"),
    (["--batch-scale", "alexnet=two"], "--batch-scale alexnet=two"),
    (["--batch-scale", "lenet5=2"], "--batch-scale lenet5=2"),
    (["--solo-batch-scale", "9"], "--solo-batch-scale 9"),
    (["--in-process", "--cuda-graphs", "resnet18"], "--in-process trains eagerly"),
    (["--adopt-levers", "--levers-from", "q.json"], "drop --levers-from"),
    (["--adopt-levers", "--no-solo"], "drop --no-solo"),
])
def test_a_bad_option_is_a_usage_error_naming_it(tmp_path, args, option):
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu.py"), "--mode", "smoke", *args,
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2 and option in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()  # stopped before writing anything


def test_a_mode_on_the_full_data_stops_before_any_gpu_time_when_the_data_is_not_there(
        bench, tmp_path, monkeypatch, capsys):
    # a device machine has no Fashion-MNIST of its own: the data dir and Debian's both empty
    import cnnlab.training.files as files
    monkeypatch.setattr(files, "DEBIAN_DIR", tmp_path / "no-debian")
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path / "no-data"))
    gpu = bench.gpu
    monkeypatch.setattr(gpu, "environment", lambda device: pytest.fail("measured the device"))
    assert gpu.main(["--mode", "quick", "--out", str(tmp_path / "out")]) == 2
    stderr = capsys.readouterr().err
    assert "Fashion-MNIST not found" in stderr and "carry" in stderr, stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_model_that_fails_alone_is_reported_and_the_call_goes_on(bench, tmp_path, monkeypatch):
    real_train, calls = bench.solo.train, []

    def train(spec, config, **kwargs):  # the first solo timing (resnet18's) breaks
        calls.append(config.batch_size)
        if len(calls) == 1:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real_train(spec, config, **kwargs)

    monkeypatch.setattr(bench.solo, "train", train)
    gpu = bench.gpu
    code = gpu.main(["--mode", "smoke", "--models", "resnet18", "bn-lenet", "--out",
                     str(tmp_path)])
    report = json.loads((tmp_path / "gpu-smoke.json").read_text())
    broken, fine = report["solo"]
    assert (broken["model"], broken["status"], broken["examples_per_s"]) == (
        "resnet18", "failed", None)
    assert broken["error"] == "RuntimeError: CUDA error: an illegal memory access was encountered"
    assert fine["model"] == "bn-lenet" and fine["examples_per_s"] > 0
    assert report["forecast"]["processes_s"] is None  # no rate for resnet18: no guess
    # the table still trained both (in worker processes, which the patch does not reach)
    assert [row["status"] for row in report["table"]["rows"]] == ["done", "done"]
    assert code == 1  # and the call says what went wrong


@pytest.mark.slow
def test_the_device_call_script_leaves_only_the_report_and_its_log_in_out(tmp_path):
    out, tmp = tmp_path / "out", tmp_path / "tmp"
    out.mkdir(), tmp.mkdir()
    script = ["bash", str(ROOT / "bench" / "gpu_call.sh"), "smoke"]
    env = {**os.environ, "OUT": str(out), "TMPDIR": str(tmp), "PYTHON": sys.executable}
    done = subprocess.run([*script, "--models", "bn-lenet", "--no-solo"], env=env,
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    # only what the device tool brings back (8 files at most): the run store went to TMPDIR
    assert sorted(p.name for p in out.iterdir()) == ["gpu-smoke.json", "smoke.log"]
    assert "whole table" in (out / "smoke.log").read_text()
    [runs] = tmp.iterdir()
    assert [run.name for run in RunStore(runs).list()] == ["gpu-bench bn-lenet"]
    # the script's status is bench/gpu.py's, through the pipe into the log
    bad = subprocess.run([*script, "--models", "lenet5"], env=env, capture_output=True,
                         text=True, timeout=120, cwd=ROOT)
    assert bad.returncode == 2 and "--models" in (out / "smoke.log").read_text()
    without_out = {k: v for k, v in env.items() if k != "OUT"}
    unset = subprocess.run(script, env=without_out, capture_output=True, text=True, timeout=60,
                           cwd=ROOT)
    assert unset.returncode != 0 and "OUT is not set" in unset.stderr


@pytest.mark.slow
def test_levers_from_a_quick_report_reach_the_tables_runs(tmp_path):
    quick = {"solo": [
        solo_row("bn-lenet", batch_size=32, examples_per_s=400.0),
        solo_row("bn-lenet", graphs=True, batch_size=32, examples_per_s=520.0, over_eager=1.3),
        solo_row("bn-lenet", graphs=True, scale=2, batch_size=64, examples_per_s=800.0,
                 over_table_batch=1.54)]}
    (tmp_path / "gpu-quick.json").write_text(json.dumps(quick))
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu.py"), "--mode", "smoke", "--no-solo",
         "--models", "bn-lenet", "--levers-from", str(tmp_path / "gpu-quick.json"),
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads((tmp_path / "out" / "gpu-smoke.json").read_text())
    assert report["cuda_graphs"] == ["bn-lenet"] and report["batch_scales"] == {"bn-lenet": 2}
    assert "solo" not in report
    [row] = report["table"]["rows"]
    assert (row["batch_size"], row["lr"], row["status"]) == (64, 2.0, "done")
    assert row["cuda_graphs"] is False  # asked for, but this is a CPU
    # the work sum uses the quick report's rate at batch 64 (timed as graphs there)
    assert report["table"]["solo_s"] == round(row["steps"] * 64 / 800.0, 1)


@pytest.mark.slow
def test_the_streams_probe_trains_the_models_at_once_in_one_process(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu.py"), "--mode", "smoke", "--slots", "2",
         "--models", "bn-lenet", "resnet18", "--streams-probe", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    probe = json.loads((tmp_path / "gpu-smoke.json").read_text())["streams_probe"]
    assert [row["model"] for row in probe["rows"]] == ["bn-lenet", "resnet18"]
    for row in probe["rows"]:
        assert "error" not in row and row["steps"] % 2 == 0 and row["examples_per_s"] > 0
        assert 0 <= row["start"] < row["end"] <= probe["wall_s"] + 0.01
    # the timed steps began together (a barrier): every model had begun before any had done;
    # the work over the wall time is the packing (both rounded to 0.01 in the report)
    assert max(row["start"] for row in probe["rows"]) < min(row["end"] for row in probe["rows"])
    assert probe["packed"] == pytest.approx(probe["solo_s"] / probe["wall_s"], rel=0.05, abs=0.02)
    assert probe["wall_s"] == pytest.approx(max(row["end"] for row in probe["rows"]), abs=0.01)
    assert "one stream each" in done.stdout


def test_a_probe_model_that_fails_early_does_not_leave_the_others_waiting(bench, monkeypatch):

    def fake_train(spec, config, on_event, data):
        if config.batch_size == 256:  # bn-lenet's: fails before its first step event
            raise RuntimeError("CUDA error: out of memory")
        for step in range(1, config.max_steps + 1):
            on_event({"kind": "step", "step": step})  # waits at the barrier at the warm-up

    monkeypatch.setattr(bench.solo, "train", fake_train)
    solo = [{"model": m, "examples_per_s": 1000.0, "cuda_graphs": False, "batch_scale": 1}
            for m in ("bn-lenet", "alexnet")]
    data = bench.solo.cnndata.load_fashion_mnist(source="sample")
    began = time.perf_counter()
    probe = bench.solo.streams_probe(["bn-lenet", "alexnet"], bench.runs.MODES["quick"],
                                     bench.solo.torch.device("cpu"), data, solo)
    assert time.perf_counter() - began < 10  # not the barrier's 120 s
    errors = {row["model"]: row.get("error", "") for row in probe["rows"]}
    assert errors["bn-lenet"] == "RuntimeError: CUDA error: out of memory"
    assert errors["alexnet"].startswith("BrokenBarrierError")
    assert "packed" not in probe


@pytest.mark.slow
def test_the_in_process_table_trains_its_runs_side_by_side_in_threads(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu.py"), "--mode", "smoke", "--no-solo",
         "--slots", "2", "--models", "bn-lenet", "resnet18", "--in-process",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    table = json.loads((tmp_path / "gpu-smoke.json").read_text())["table"]
    assert table["executor"] == "threads" and table["overlap"] == 2
    assert [row["status"] for row in table["rows"]] == ["done", "done"]
    runs = RunStore(tmp_path / "runs-smoke").list()
    # both recorded by this one process (the bench's), as their worker
    assert len({run.worker_pid for run in runs}) == 1 and runs[0].worker_pid
    assert "in threads of this process" in done.stdout


def test_a_run_in_a_thread_stops_at_its_cancel_flag(bench, tmp_path):
    store = RunStore(tmp_path / "runs")
    manager = JobManager(store, cpu_slots=1, gpu_slots=0, poll_interval=0.05,
                         executor=bench.threads.InProcessThreads())
    endless = TrainConfig(data="sample", batch_size=64, epochs=5000, log_every=5, device="cpu")
    try:
        run_id = manager.submit("bn-lenet", PRESETS["bn-lenet"], endless)
        wait_until(lambda: store.get(run_id).status is Status.RUNNING
                   and store.metrics(run_id, "step"))
        assert store.get(run_id).worker_pid == os.getpid()  # this process trains it
        asked = time.monotonic()
        assert manager.cancel(run_id) is Status.RUNNING
        wait_until(lambda: store.get(run_id).status.terminal)
        run = store.get(run_id)
        assert run.status is Status.CANCELLED and "by force" not in (run.message or "")
        assert time.monotonic() - asked < 5  # record_run reads the flag every half second
    finally:
        manager.shutdown(wait=True, cancel=True)


def test_a_thread_that_cannot_start_training_fails_its_run_with_the_reason(bench, tmp_path):
    store = RunStore(tmp_path / "runs")
    manager = JobManager(store, cpu_slots=0, gpu_slots=0)  # queues, starts nothing
    config = TrainConfig(data="sample", batch_size=64, epochs=1, device="cpu")
    try:
        run_id = manager.submit("bn-lenet", PRESETS["bn-lenet"], config)
    finally:
        manager.shutdown()
    executor = bench.threads.InProcessThreads()
    executor.start(store, run_id, "cuda:99")  # no such GPU, here or on any machine
    wait_until(lambda: store.get(run_id).status.terminal)
    run = store.get(run_id)
    assert run.status is Status.FAILED and run.message.startswith("training thread error: ")
    wait_until(lambda: not executor.running())
    executor.poll(store)
    assert executor.pids() == set() and store.get(run_id).message == run.message


def wait_until(condition, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_the_forecast_adds_each_models_ten_epochs_at_its_rate_over_each_ways_packing(bench):
    solo = [solo_row("alexnet", examples_per_s=20000.0),
            solo_row("alexnet", compiled=True, examples_per_s=30000.0),
            solo_row("resnet18", examples_per_s=10000.0),
            solo_row("resnet18", graphs=True, examples_per_s=12000.0),
            solo_row("resnet18", graphs=True, scale=2, examples_per_s=16000.0)]
    levers = bench.runs.Levers(compiled=frozenset({"alexnet"}), graphed=frozenset({"resnet18"}),
                               batch_scales={"resnet18": 2})
    # 10 epochs of full batches: 468 of 128 and 117 of 512 both make 599,040 examples
    guess = bench.solo.forecast(["alexnet", "resnet18"], solo, {"packed": 2.5}, levers)
    assert guess["processes_solo_s"] == round(599040 / 30000 + 599040 / 16000, 1) == 57.4
    assert guess["processes_s"] == round(57.4 / bench.solo.PROCESS_PACKING, 1)
    assert guess["threads_solo_s"] == round(599040 / 20000 + 599040 / 10000, 1) == 89.9
    assert guess["threads_s"] == round(89.9 / 2.5, 1)
    # no probe: no forecast for one process; a model with no rate: none at all
    assert bench.solo.forecast(["alexnet"], solo, None, levers)["threads_s"] is None
    assert bench.solo.forecast(["nin"], solo, {"packed": 2.0}, levers) == {
        "processes_solo_s": None, "processes_s": None, "threads_solo_s": None, "threads_s": None}


def test_a_call_that_stops_in_the_solo_phase_keeps_the_rates_measured_so_far(
        bench, monkeypatch, tmp_path):
    gpu = bench.gpu
    real, timed = gpu.solo_rows, []

    def out_of_time_at_the_second(name, *args):
        timed.append(name)
        if len(timed) == 2:
            raise TimeoutError("the device call's 600 s are up")
        return real(name, *args)

    monkeypatch.setattr(gpu, "solo_rows", out_of_time_at_the_second)
    with pytest.raises(TimeoutError):
        gpu.main(["--mode", "smoke", "--models", "bn-lenet", "resnet18", "--out", str(tmp_path)])
    report = json.loads((tmp_path / "gpu-smoke.json").read_text())
    assert [row["model"] for row in report["solo"]] == ["bn-lenet"]
    assert report["solo"][0]["examples_per_s"] > 0 and "table" not in report


def test_explicit_options_add_to_or_take_back_what_levers_from_takes(bench, tmp_path):
    gpu = bench.gpu
    quick = tmp_path / "gpu-quick.json"
    quick.write_text(json.dumps({"solo": [
        solo_row("densenet", graphs=True, over_eager=1.3),
        solo_row("densenet", graphs=True, scale=2, over_table_batch=1.4),
        solo_row("resnet18", scale=2, over_table_batch=1.2)]}))
    common = ["--models", "densenet", "resnet18", "alexnet", "--levers-from", str(quick),
              "--out", str(tmp_path / "out")]
    taken = gpu.parse_plan(common).levers
    assert taken == bench.runs.Levers(graphed=frozenset({"densenet"}),
                                      batch_scales={"densenet": 2, "resnet18": 2})
    mended = gpu.parse_plan([*common, "--batch-scale", "resnet18=1", "alexnet=2",
                             "--compile", "alexnet"]).levers
    assert mended == bench.runs.Levers(compiled=frozenset({"alexnet"}),
                                       graphed=frozenset({"densenet"}),
                                       batch_scales={"densenet": 2, "alexnet": 2})
    # in one process the table trains eagerly: the graphs it took are dropped, the batch kept
    eager = gpu.parse_plan([*common, "--in-process"]).levers
    assert eager == bench.runs.Levers(batch_scales={"densenet": 2, "resnet18": 2})


def test_adopted_levers_are_those_this_calls_solo_phase_found_paid(bench, tmp_path):
    gpu = bench.gpu
    plan = gpu.parse_plan(["--mode", "full", "--models", "googlenet", "densenet", "alexnet",
                           "--adopt-levers", "--cuda-graphs", "googlenet", "densenet",
                           "--compile", "alexnet", "--batch-scale", "alexnet=2",
                           "--out", str(tmp_path)])
    solo = [solo_row("googlenet", graphs=True, over_eager=2.5),
            solo_row("densenet", graphs=True, over_eager=1.02),
            solo_row("densenet", graphs=True, scale=2, over_table_batch=1.3),
            solo_row("alexnet", compiled=True, over_eager=1.3)]
    faster_in_processes = {"solo": solo, "forecast": {"processes_s": 150.0, "threads_s": 190.0}}
    report = dict(faster_in_processes)
    adopted = gpu.adopt_levers(plan, report)
    # graphs paid for googlenet, not densenet, whose doubled batch did; compile paid for
    # alexnet, and its --batch-scale stands although AlexNet has no BatchNorm
    assert adopted.levers == bench.runs.Levers(
        compiled=frozenset({"alexnet"}), graphed=frozenset({"googlenet"}),
        batch_scales={"densenet": 2, "alexnet": 2})
    assert not adopted.in_process and report["adopted"]["executor"] == "processes"
    # the forecast has one process ahead: threads, eagerly, so compile and graphs go
    report = {"solo": solo, "forecast": {"processes_s": 150.0, "threads_s": 110.0}}
    threads = gpu.adopt_levers(plan, report)
    assert threads.in_process and threads.levers == bench.runs.Levers(
        batch_scales={"densenet": 2, "alexnet": 2})
    assert report["adopted"] == {"compile": [], "cuda_graphs": [], "executor": "threads",
                                 "batch_scales": {"densenet": 2, "alexnet": 2}}
    # no probe, no forecast for threads: worker processes
    report = {"solo": solo, "forecast": {"processes_s": 150.0, "threads_s": None}}
    assert not gpu.adopt_levers(plan, report).in_process


def test_the_table_is_cancelled_in_time_for_the_call_to_write_its_report(bench, tmp_path):
    gpu = bench.gpu

    def budget(*options, elapsed):
        plan = gpu.parse_plan(["--mode", "full", *options, "--out", str(tmp_path)])
        return gpu.table_budget(plan, elapsed)

    assert budget(elapsed=200) == 480  # the full mode's own budget
    assert budget("--budget-s", "100", elapsed=200) == 100
    # a 540 s call 200 s in: the table stops 30 s before the call's end
    assert budget("--call-limit-s", "540", elapsed=200) == 540 - 200 - gpu.WRAP_UP_S
    assert budget("--call-limit-s", "540", "--budget-s", "60", elapsed=200) == 60
    assert budget("--call-limit-s", "100", elapsed=90) == 0  # no time left: cancelled at once


@pytest.mark.slow
def test_a_call_that_adopts_its_levers_trains_its_table_with_them(bench, tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu.py"), "--mode", "smoke", "--models",
         "bn-lenet", "googlenet", "--adopt-levers", "--solo-batch-scale", "2",
         "--call-limit-s", "250", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads((tmp_path / "gpu-smoke.json").read_text())
    gained = {row["model"]: row["over_table_batch"] for row in report["solo"]
              if "over_table_batch" in row}
    assert set(gained) == {"bn-lenet"}  # the only BatchNorm network of the two
    # whatever this CPU measured, the table trained with what the policy took from it
    scale = 2 if gained["bn-lenet"] >= bench.solo.LEVER_PAYS else 1
    assert report["adopted"]["batch_scales"] == ({"bn-lenet": 2} if scale == 2 else {})
    batches = {row["model"]: row["batch_size"] for row in report["table"]["rows"]}
    assert batches == {"bn-lenet": 32 * scale, "googlenet": 32}
    assert "adopted for the table" in done.stdout



@pytest.mark.slow
def test_a_table_cancelled_at_the_call_limit_still_writes_its_report(tmp_path):
    # a 30 s call leaves the table nothing once the 30 s wrap-up is kept: cancelled at once
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu.py"), "--mode", "smoke", "--models",
         "bn-lenet", "resnet18", "--no-solo", "--call-limit-s", "30", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert "budget of 0 s reached: cancelling what is left" in done.stdout
    report = json.loads((tmp_path / "gpu-smoke.json").read_text())
    rows = report["table"]["rows"]
    assert [(row["model"], row["status"]) for row in rows] == [
        ("bn-lenet", "cancelled"), ("resnet18", "cancelled")]
    assert "PROBLEMS" in done.stdout and "runs not done ['bn-lenet', 'resnet18']" in done.stdout
