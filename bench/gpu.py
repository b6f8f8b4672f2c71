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

`--in-process` trains the table's runs in threads of this process, one CUDA stream each
(gpu_threads.py, an executor for the same JobManager), where kernels of different runs can
share the GPU at once; eagerly, so it drops compile and CUDA graphs.

`--adopt-levers` does in one call what --levers-from does across two: it times each model alone
first, in any mode, then trains the table with the levers that timing found paid, and in
threads of this process when the forecast has one process ahead (with --streams-probe), so no
decision waits between two device calls. `--call-limit-s S` cancels the table in time for a call
of S seconds to write its report.

This script checks the environment, parses the options and runs the phases; the rest is in
four modules beside it: gpu_runs.py (what each run trains: modes, recipes, levers),
gpu_solo.py (each model alone, which levers paid, the streams probe), gpu_table.py (the
table through the JobManager, its rows and the work it packed) and gpu_threads.py.

Run from the repository root:  python bench/gpu.py --mode quick --out results/
On a device machine, through the device tool:  bash bench/gpu_call.sh quick [options]
(the data carried, the run store kept out of $OUT, the log teed into it: README).
"""

from __future__ import annotations

import os
import sys

# The checkout's root first on sys.path, so cnnlab imports without being installed (the GPU
# machine runs these scripts from a bare copy of the tree), and this folder, for the gpu_*
# modules this script is made of.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402

from cnnlab.arch.presets import PRESETS  # noqa: E402
from cnnlab.training import data as cnndata  # noqa: E402
from cnnlab.training import resources  # noqa: E402
from cnnlab.training.config import SCHEDULES, ConfigError, TrainConfig  # noqa: E402
from cnnlab.training.recipes import textbook_config  # noqa: E402
from cnnlab.training.setup import resolve_device  # noqa: E402
from gpu_runs import MODES, TABLE, Entry, Levers, Mode, entries_for, table_levers  # noqa: E402
from gpu_solo import (LEVER_PAYS, forecast, has_batch_norm, levers_that_paid,  # noqa: E402
                      print_forecast, solo_rows, streams_probe)
from gpu_table import print_table, print_work, run_table, solo_seconds  # noqa: E402


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


# ---------------------------------------------------------------- options


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


# ---------------------------------------------------------------- main


@dataclasses.dataclass
class Plan:
    """What one invocation does, from its options: the mode, the table's runs, their levers."""

    args: argparse.Namespace
    mode: Mode
    entries: list[Entry]
    lrs: dict[str, float]  # --lr
    levers: Levers
    earlier_solo: list[dict[str, Any]]  # --levers-from's solo rows, for the table's work sum
    asked: Levers  # --compile, --cuda-graphs and --batch-scale as named
    in_process: bool  # the table's runs in threads of this process, not worker processes


def parse_plan(argv: list[str] | None) -> Plan:
    """The options, understood and checked; a bad one stops with a usage error naming it."""
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
    parser.add_argument("--adopt-levers", action="store_true",
                        help="time each model alone first (in any mode), then train this call's "
                             "table with the levers that timing found paid, as --levers-from "
                             "takes them from an earlier report, and in threads of this process "
                             "when the forecast favours one process (needs --streams-probe)")
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
    parser.add_argument("--in-process", action="store_true",
                        help="train the table's runs in threads of this process, one CUDA stream "
                             "each, instead of worker processes (eagerly: compile and CUDA "
                             "graphs are dropped)")
    parser.add_argument("--budget-s", type=float, help="cancel the table after this long")
    parser.add_argument("--call-limit-s", type=float, metavar="S",
                        help="this whole call must end within S seconds (a device call's "
                             f"timeout): the table is cancelled {WRAP_UP_S:.0f} s before, so "
                             "its report is still written")
    parser.add_argument("--runs-dir", type=Path,
                        help="run store for the table (default OUT/runs-MODE; it holds checkpoints)")
    args = parser.parse_args(argv)
    if args.adopt_levers and (args.levers_from or args.no_solo):
        parser.error("--adopt-levers takes the levers this call's own solo phase finds: drop "
                     + ("--levers-from" if args.levers_from else "--no-solo"))
    lrs = learning_rates(parser, "--lr", args.lr)
    entries = entries_for(args.models, lrs, learning_rates(parser, "--extra", args.extra))
    paid, earlier_solo = Levers(), []
    if args.levers_from:
        try:
            earlier = json.loads(args.levers_from.read_text())
        except (OSError, ValueError) as exc:
            parser.error(f"--levers-from {args.levers_from}: {exc}")
        paid, earlier_solo = levers_that_paid(earlier), earlier.get("solo", [])
    asked = Levers(frozenset(named(args.models, args.compile)),
                   frozenset(named(args.models, args.cuda_graphs)),
                   batch_scales(parser, "--batch-scale", args.batch_scale))
    if args.solo_batch_scale is not None and not 1 <= args.solo_batch_scale <= 8:
        parser.error(f"--solo-batch-scale {args.solo_batch_scale}: expected a whole number "
                     "from 1 to 8, e.g. 2")
    if args.in_process and (args.compile is not None or args.cuda_graphs is not None):
        parser.error("--in-process trains eagerly: drop --compile and --cuda-graphs (levers "
                     "from --levers-from are dropped for it)")
    levers = table_levers(paid, asked, args.models, eager=args.in_process)
    if both := levers.compiled & levers.graphed:
        parser.error(f"--compile and --cuda-graphs both name {', '.join(sorted(both))}"
                     ": a run can use one of them")
    return Plan(args, MODES[args.mode], entries, lrs, levers, earlier_solo, asked,
                args.in_process)


def adopt_levers(plan: Plan, report: dict[str, Any]) -> Plan:
    """The plan for this call's table from its own solo phase (--adopt-levers): the levers
    that paid, as --levers-from takes them from an earlier report (--batch-scale still wins),
    and the runs in threads of this process when the forecast has one process, one stream
    each, ahead of worker processes (threads run eagerly, so compile and graphs then go).
    Said in the report as `adopted`."""
    guess = report["forecast"]
    threads = plan.in_process or (guess["threads_s"] is not None
                                  and guess["processes_s"] is not None
                                  and guess["threads_s"] < guess["processes_s"])
    # --compile and --cuda-graphs named what to time; only what paid is kept
    levers = table_levers(levers_that_paid(report), Levers(batch_scales=plan.asked.batch_scales),
                          plan.args.models, eager=threads)
    report["adopted"] = {"compile": sorted(levers.compiled), "cuda_graphs": sorted(levers.graphed),
                         "batch_scales": levers.batch_scales,
                         "executor": "threads" if threads else "processes"}
    print(f"adopted for the table: compile {report['adopted']['compile']}, CUDA graphs "
          f"{report['adopted']['cuda_graphs']}, batch scales {levers.batch_scales}, "
          f"{'threads of this process' if threads else 'worker processes'}", flush=True)
    return dataclasses.replace(plan, levers=levers, in_process=threads)


# A table cancelled at its budget still waits for its runs to stop, finds each run's predicted
# classes on the test set and writes the report: time kept for that under --call-limit-s.
WRAP_UP_S = 30.0


def table_budget(plan: Plan, elapsed_s: float) -> float:
    """Seconds the table may train: --budget-s or the mode's, and under --call-limit-s what
    is left of the call less the wrap-up."""
    budget = plan.args.budget_s or plan.mode.budget_s
    if plan.args.call_limit_s is not None:
        budget = min(budget, plan.args.call_limit_s - elapsed_s - WRAP_UP_S)
    return max(budget, 0.0)


def solo_phase(plan: Plan, device: torch.device, report: dict[str, Any], save) -> None:
    """Each model alone (and, asked, the streams probe), then the forecast of the full table;
    the report is saved after each model."""
    args, mode, levers = plan.args, plan.mode, plan.levers
    print("each model alone", flush=True)
    dataset = cnndata.load_fashion_mnist(source=mode.data)
    report["solo"] = []
    for name in args.models:  # saved after each model: a call that runs out keeps them
        report["solo"] += solo_rows(name, mode, device, dataset, name in levers.compiled,
                                    name in levers.graphed, levers.scale(name),
                                    args.solo_batch_scale if has_batch_norm(name) else None)
        save()
    if args.streams_probe:
        print("one process, one CUDA stream per model", flush=True)
        report["streams_probe"] = streams_probe(args.models, mode, device, dataset,
                                                report["solo"])
        save()
    report["forecast"] = forecast(args.models, report["solo"], report.get("streams_probe"),
                                  levers_that_paid(report))
    print_forecast(report["forecast"], report.get("streams_probe", {}).get("packed"), mode)
    save()
    del dataset
    if device.type == "cuda":
        torch.cuda.empty_cache()  # leave the GPU to the table's workers


def data_missing(mode: Mode) -> str | None:
    """Why the mode's data cannot be read, with the fix; None when it can. Checked before any
    GPU time is spent: a device machine has no Fashion-MNIST of its own (README, the plan)."""
    try:
        cnndata.load_fashion_mnist(source=mode.data)  # decoded once: later loads hit its cache
    except (cnndata.DataNotFound, cnndata.DataCorrupt) as e:
        return (f"bench/gpu.py: {e}\nOn a device machine: copy the four .gz files into ./data here "
                "and name it in the call's carry (README, \"The next GPU session\").")
    return None


def main(argv: list[str] | None = None) -> int:
    began = time.perf_counter()  # --call-limit-s counts from here
    plan = parse_plan(argv)
    args, mode, entries, levers = plan.args, plan.mode, plan.entries, plan.levers
    if missing := data_missing(mode):
        print(missing, file=sys.stderr)
        return 2
    device = resolve_device("auto")
    args.out.mkdir(parents=True, exist_ok=True)  # only once every option is understood
    report: dict[str, Any] = {"mode": mode.name, "compile": sorted(levers.compiled),
                              "cuda_graphs": sorted(levers.graphed),
                              "batch_scales": levers.batch_scales,
                              "schedule": args.schedule, "lr": plan.lrs,
                              "extra": [e.label for e in entries[len(args.models):]],
                              "models": args.models}
    path = args.out / f"gpu-{mode.name}.json"

    def save() -> None:
        path.write_text(json.dumps(report, indent=1, default=str))

    print("environment", flush=True)
    report["environment"] = environment(device)
    print("  " + json.dumps(report["environment"]), flush=True)
    save()
    print("app device code", flush=True)
    report["checks"] = device_checks(device)
    save()
    if (mode.solo or args.adopt_levers) and not args.no_solo:
        solo_phase(plan, device, report, save)
    if args.adopt_levers:
        plan = adopt_levers(plan, report)
        levers = plan.levers
        save()
    slots = args.slots or (len(entries) if device.type == "cuda" else 1)
    print(f"the table: {len(entries)} runs queued at once, {slots} slots, "
          + ("in threads of this process, one CUDA stream each" if plan.in_process
             else "a worker process each")
          + "".join(f"; {e.label} at lr {e.lr:g} (the book's {textbook_config(e.preset).lr:g})"
                    for e in entries if e.lr is not None)
          + "".join(f"; {name} at {k}x the book's batch and lr"
                    for name, k in levers.batch_scales.items()), flush=True)
    runs_dir = args.runs_dir or args.out / f"runs-{mode.name}"
    table = run_table(entries, mode, device, runs_dir, slots, levers, args.schedule,
                      table_budget(plan, time.perf_counter() - began), plan.in_process)
    table["solo_s"] = solo_seconds(table["rows"], report.get("solo") or plan.earlier_solo)
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
    untimed = sorted({r["model"] for r in report.get("solo", []) if not r["examples_per_s"]})
    print(f"{report['seconds']:.0f} s in all; results in {path}")
    if failed or not_done or untimed:
        print(f"PROBLEMS: failed checks {failed}, runs not done {not_done}, "
              f"solo timings without a rate {untimed}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
