"""The command line: presets, summary, diagram; bad input exits 2 with messages."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cnnlab.arch.presets import PRESETS
from cnnlab.cli import main
from cnnlab.runs.store import DB_NAME


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_presets_lists_every_preset(capsys):
    code, out, _ = run_cli(capsys, "presets")
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()] == list(PRESETS)


def test_summary_json_reports_the_textbook_vgg11():
    # A real subprocess: `python -m cnnlab` as a user types it.
    done = subprocess.run([sys.executable, "-m", "cnnlab", "summary", "vgg11", "--json"],
                          capture_output=True, text=True, timeout=120, check=True)
    report = json.loads(done.stdout)
    assert report["total_params"] == 128_806_154
    assert report["output_shape"] == [10]
    assert report["total_flops"] > 0
    first = report["layers"][0]
    assert {"name", "type", "output_shape", "params", "flops"} <= set(first)


def test_summary_text_is_a_readable_table(capsys):
    code, out, _ = run_cli(capsys, "summary", "bn-lenet")
    assert code == 0
    assert "44,878" in out and "conv1" in out


def test_summary_overrides_change_the_model(capsys):
    code, out, _ = run_cli(capsys, "summary", "vgg11", "--input", "96", "--json")
    assert code == 0 and json.loads(out)["total_params"] == 44_920_074


def test_summary_of_a_spec_file(capsys, tmp_path):
    path = tmp_path / "resnet.json"
    path.write_text(PRESETS["resnet18"].to_json())
    code, out, _ = run_cli(capsys, "summary", "--spec", str(path), "--json")
    assert code == 0 and json.loads(out)["total_params"] == 11_178_378


@pytest.mark.parametrize(("args", "expected"), [
    (["summary", "vgg11", "--input", "16"], "input_size"),
    (["summary", "vgg12"], "unknown preset"),
    (["summary", "vgg11", "--width", "-1"], "width"),
    (["summary"], "give a preset name or --spec FILE"),
])
def test_bad_input_exits_2_with_the_validation_message(capsys, args, expected):
    code, out, err = run_cli(capsys, *args)
    assert code == 2 and out == ""
    assert expected in err and "Traceback" not in err


def test_a_broken_spec_file_exits_2_naming_the_field(capsys, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({**PRESETS["vgg11"].to_dict(), "conv_arch": [[1, 64], [2]]}))
    code, _, err = run_cli(capsys, "summary", "--spec", str(path))
    assert code == 2 and "conv_arch[1]" in err


def test_a_spec_file_that_is_not_json_exits_2(capsys, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("((1, 64),)")
    code, _, err = run_cli(capsys, "summary", "--spec", str(path))
    assert code == 2 and "cannot read" in err


def test_diagram_writes_an_svg(capsys, tmp_path):
    pytest.importorskip("graphviz")
    import shutil

    if shutil.which("dot") is None:
        pytest.skip("Debian's graphviz package (the dot binary) is not installed")
    out = tmp_path / "resnet18.svg"
    code, _, _ = run_cli(capsys, "diagram", "resnet18", "-o", str(out))
    assert code == 0 and "<svg" in out.read_text()


def test_diagram_prints_dot_without_an_output_file(capsys):
    code, out, _ = run_cli(capsys, "diagram", "googlenet")
    assert code == 0 and out.startswith("digraph") and "concat" in out


def test_a_corrupt_run_store_is_a_message_not_a_traceback(capsys, runs_dir):
    runs_dir.mkdir(parents=True)
    (runs_dir / DB_NAME).write_bytes(b"this is not an SQLite database" * 100)
    code, _, err = run_cli(capsys, "runs")
    assert code == 2
    assert "run store" in err and "Traceback" not in err


def test_diagram_into_a_missing_folder_says_so(capsys, tmp_path):
    target = tmp_path / "no" / "such" / "folder" / "net.dot"
    code, _, err = run_cli(capsys, "diagram", "bn-lenet", "-o", str(target))
    assert code == 2
    assert "No such file or directory" in err and str(target) in err
    assert not target.exists()


@pytest.mark.parametrize("value", ["-5", "0", "lots"])
def test_summary_refuses_a_batch_size_below_one(capsys, value):
    with pytest.raises(SystemExit) as stop:
        main(["summary", "bn-lenet", "--batch-size", value])
    assert stop.value.code == 2
    assert "--batch-size" in capsys.readouterr().err


def test_summary_shows_macs_beside_flops(capsys):
    code, out, _ = run_cli(capsys, "summary", "lenet")
    header = out.splitlines()[0].split()
    assert header.index("MACs") == header.index("FLOPs") + 1
    conv1 = next(line for line in out.splitlines() if line.split()[0] == "conv1.0")
    assert f"{6 * 25 * 28 * 28:,}" in conv1.split()  # 6 x 1 x 5 x 5 x 28 x 28 multiply-adds
    assert "MACs per image" in out
    code, out, _ = run_cli(capsys, "summary", "lenet", "--json")
    report = json.loads(out)
    assert report["total_macs"] * 2 == report["total_flops"]
    assert report["layers"][0]["macs"] == 6 * 25 * 28 * 28
