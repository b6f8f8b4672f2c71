"""The command line: `python -m cnnlab presets | summary | diagram | train | runs | metrics |
report | reproduce`.

Every command works on a spec: a preset name or a JSON file, with optional overrides.
Bad input prints the validation messages and exits with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, NoReturn, Sequence

from cnnlab.arch import presets
from cnnlab.arch.checks import SpecError, check
from cnnlab.arch.specs import Spec
from cnnlab.errors import CnnlabError, Problem
from cnnlab.training.config import (
    DATA_CHOICES,
    DEVICES,
    OPTIMIZERS,
    SCHEDULES,
    TrainConfig,
)

EXIT_BAD_INPUT = 2


def _spec_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("preset", nargs="?", help="a preset name (see `cnnlab presets`)")
    parser.add_argument("--spec", type=Path, help="a spec JSON file instead of a preset")
    parser.add_argument("--input", type=int, dest="input_size", help="input height and width")
    parser.add_argument("--in-channels", type=int, help="input channels (1 for Fashion-MNIST)")
    parser.add_argument("--classes", type=int, dest="num_classes", help="number of classes")
    parser.add_argument("--width", type=float, help="width multiplier for every channel count")


def load_spec(args: argparse.Namespace) -> Spec:
    """The spec the arguments name, overrides applied and validated. Raises SpecError."""
    # Imported here, not at the top: parsing builds the family registry, which imports torch,
    # and `train` starts reading the data before that (see _prefetch).
    from cnnlab.arch.parse import spec_from_data, spec_from_json

    if (args.preset is None) == (args.spec is None):
        raise SpecError([Problem("preset", "give a preset name or --spec FILE, not both",
                                  "run `python -m cnnlab presets` for the names")])
    overrides = {k: getattr(args, k) for k in ("input_size", "in_channels", "num_classes", "width")}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if args.spec is not None:
        try:
            text = args.spec.read_bytes()
        except OSError as exc:
            raise SpecError([Problem("--spec", f"cannot read {args.spec}: {exc}",
                                      "pass a JSON file written by `cnnlab summary --spec`"
                                      " or the app's export")]) from None
        return spec_from_json(text, source="--spec", overrides=overrides)
    if args.preset not in presets.PRESETS:
        raise SpecError([Problem("preset", f"unknown preset {args.preset!r}",
                                  f"choose one of: {', '.join(presets.PRESETS)}")])
    return spec_from_data(presets.PRESETS[args.preset].to_dict(), overrides=overrides)


def _positive_int(text: str) -> int:
    """argparse type for counts: a whole number >= 1, else argparse's usage error (exit 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def cmd_presets(args: argparse.Namespace) -> int:
    for name, spec in presets.PRESETS.items():
        print(f"{name:18s} {spec.family:10s} input {spec.input_size}")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from cnnlab.analysis.layers import inspect_spec

    spec = load_spec(args)
    for warning in check(spec):
        print(warning, file=sys.stderr)
    table = inspect_spec(spec)
    if args.json:
        print(json.dumps({"spec": spec.to_dict(), **table.to_dict()}))
    else:
        print(table.format_table(batch_size=args.batch_size))
    return 0


def cmd_diagram(args: argparse.Namespace) -> int:
    from cnnlab.analysis.diagram import to_dot, write_svg

    spec = load_spec(args)
    dot = to_dot(spec, collapse=not args.expand)
    if args.output is None or args.output.suffix == ".dot":
        if args.output is None:
            print(dot)
        else:
            args.output.write_text(dot)
    else:
        write_svg(dot, args.output)
    if args.output is not None:
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------- training commands

EXIT_NOT_DONE = 1  # the run finished as cancelled, diverged or failed
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report it
EXIT_TERMINATED = 143  # SIGTERM, as shells report it


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """While training, SIGTERM (a plain `kill`, a system shutdown, a job scheduler) raises
    cnnlab.runs.worker.Terminated, so the run is marked interrupted at once instead of staying
    "running" until some job manager notices its dead pid."""
    from cnnlab.runs.worker import Terminated

    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set in the main thread
        return

    def terminated(signum: int, frame: Any) -> None:
        raise Terminated(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _train_arguments(parser: argparse.ArgumentParser, textbook_only: bool = False) -> None:
    """Overrides of the textbook config; anything not given keeps the book's value."""
    add = parser.add_argument
    add("--epochs", type=int, help="epochs (the book: 10)")
    if not textbook_only:
        add("--batch-size", type=int, help="batch size (default: the book's for this model)")
        add("--lr", type=float, help="learning rate (default: the book's for this model)")
        add("--optimizer", choices=OPTIMIZERS, help="default sgd, as the book")
        add("--momentum", type=float, help="SGD momentum (default 0, as the book)")
        add("--weight-decay", type=float, help="L2 weight decay (default 0)")
        add("--label-smoothing", type=float, help="label smoothing (default 0)")
        add("--schedule", choices=SCHEDULES, help="lr schedule (default constant)")
        add("--flip", action="store_true", default=None, help="random left-right flips")
        add("--no-amp", dest="amp", action="store_false", default=None,
            help="float32 on CUDA instead of bf16 autocast")
        add("--no-channels-last", dest="channels_last", action="store_false", default=None,
            help="NCHW on CUDA instead of channels-last")
        add("--compile", action="store_true", default=None,
            help="torch.compile the training step (faster after ~30 s of compiling)")
        add("--cuda-graphs", action="store_true", default=None,
            help="on a GPU, run each step's forward and backward as CUDA graphs")
        add("--bn-recalibration", type=int, metavar="BATCHES",
            help="recompute BatchNorm statistics over this many training batches before each "
                 "evaluation (default 20; 0 keeps the moving averages, as the book does)")
    add("--subset", type=int, help="train on a class-balanced subset of this many images")
    add("--device", choices=DEVICES, help="default auto: CUDA if there is a GPU")
    add("--data", choices=DATA_CHOICES,
        help="auto (default): the full set if found, else the bundled sample")
    add("--seed", type=int, help="random seed (default 0)")
    add("--max-steps", type=int, help="stop after this many steps in total")


def _train_config(args: argparse.Namespace, base: TrainConfig) -> TrainConfig:
    """`base` with the options given on the command line (each option's dest is its
    TrainConfig field; an option not given is None). Raises ConfigError."""
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    changes = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    return base.replace(**changes)


def _prefetch(args: argparse.Namespace) -> None:
    """Start reading the data's files in a thread, before torch is imported: the two overlap
    (see cnnlab.training.files). Call it before anything that imports torch."""
    from cnnlab.training.files import prefetch

    prefetch(args.data or TrainConfig().data)


def _load_data(config: TrainConfig) -> Any:
    """The data a run will use, or None after printing where the loader looked."""
    from cnnlab.training.files import DataError
    from cnnlab.training.setup import load_data

    try:
        data = load_data(config)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    if data.is_sample:
        why = ("as asked" if config.data == "sample" else "because Fashion-MNIST was not found "
               "(install the Debian package dataset-fashion-mnist or set $CNNLAB_DATA)")
        print(f"note: training on the bundled SAMPLE (3,000 / 1,000 images) {why}; accuracies "
              "are not comparable to the textbook's", file=sys.stderr)
    return data


def _record_and_train(store: Any, model: str, spec: Spec, config: TrainConfig, data: Any,
                      name: str | None = None) -> Any:
    """Create a run, mark it running here and train it with a progress bar; the finished Run."""
    from cnnlab.runs.recorded import run_recorded
    from cnnlab.training.resources import estimate_record
    from cnnlab.training.setup import resolve_device

    device = str(resolve_device(config.device))
    run = store.create(model, spec.to_dict(), config.to_dict(), name=name,
                       data_source=str(data.source), result=estimate_record(spec, config))
    store.mark_running(run.id, os.getpid(), device=device, data_source=str(data.source))
    print(f"run {run.id}: {model} on {device}, {config.epochs} epochs, lr {config.lr:g}, "
          f"batch {config.batch_size}", file=sys.stderr)
    from cnnlab.runs.store import Status
    from cnnlab.runs.worker import Terminated

    try:
        run_recorded(store, run.id, progress=True)
    except Terminated as exc:
        store.finish_unless_final(run.id, Status.INTERRUPTED, f"cnnlab train stopped by {exc};"
                                  " metrics up to that point are kept")
        raise
    return store.get(run.id)


def _print_run(store: Any, run: Any) -> None:
    from cnnlab.training.recipes import TEXTBOOK_RESULTS

    result = run.result
    metrics = result.get("metrics", {})
    print(f"run {run.id}: {run.status} - {run.message}")
    epochs = store.metrics(run.id, kind="epoch")
    if epochs:
        print("test acc by epoch: " + " ".join(f"{e['test_acc']:.3f}" for e in epochs))
    if "test_acc" in metrics:
        print(f"test acc {metrics['test_acc']:.3f} (best {result['best_test_acc']:.3f}), "
              f"train acc {metrics['train_acc']:.3f}, train loss {metrics['train_loss']:.3f}")
    if "examples_per_s" in result:
        print(f"{result['examples_per_s']:,.0f} examples/s (training only), "
              f"{result['seconds']:.0f} s in all, on {result['device']}")
        print(f"data: {result['data']}")
    book = TEXTBOOK_RESULTS.get(run.model)
    if book is not None:
        print(f"textbook (d2l {book.section}): test acc {book.test_acc:.3f}, "
              f"{book.examples_per_s:,.0f} examples/s on its GPU")
    print(f"run id: {run.id}")


def cmd_train(args: argparse.Namespace) -> int:
    _prefetch(args)
    from cnnlab.runs.store import RunStore, Status
    from cnnlab.training.recipes import default_config, textbook_config
    from cnnlab.training.setup import resolve_device

    spec = load_spec(args)
    for warning in check(spec):
        print(warning, file=sys.stderr)
    base = textbook_config(args.preset) if args.spec is None else default_config(spec)
    config = _train_config(args, base)
    resolve_device(config.device)  # say "no CUDA here" before recording anything
    data = _load_data(config)
    if data is None:
        return EXIT_BAD_INPUT
    store = RunStore()
    model = args.preset if args.spec is None else args.spec.stem
    from cnnlab.runs.worker import Terminated

    try:
        with _sigterm_raises():
            run = _record_and_train(store, model, spec, config, data, name=args.name)
    except KeyboardInterrupt:
        print("interrupted: the run is recorded as cancelled", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated as exc:
        print(f"stopped by {exc}: the run is recorded as interrupted", file=sys.stderr)
        return EXIT_TERMINATED
    _print_run(store, run)
    return 0 if run.status is Status.DONE else EXIT_NOT_DONE


def cmd_runs(args: argparse.Namespace) -> int:
    import time

    from cnnlab.runs.store import RunStore
    from cnnlab.views import report

    store = RunStore()
    runs = store.list(limit=args.limit, group=args.group)
    if args.json or args.csv:
        print(report.runs_json(runs) if args.json else report.runs_csv(runs), end="\n"
              if args.json else "")
        return 0
    if not runs:
        print(f"no runs in {store.runs_dir}")
        return 0
    print(f"{'id':22s} {'model':18s} {'status':10s} {'epochs':>6s} {'best test acc':>13s}  created"
          "  name")
    for run in runs:
        epochs = [e for e in store.metrics(run.id, kind="epoch") if e["epoch"] == int(e["epoch"])]
        best = max((e["test_acc"] for e in epochs), default=None)
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(run.created_at))
        best_text = f"{best:.3f}" if best is not None else "-"
        print(f"{run.id:22s} {run.model[:18]:18s} {run.status:10s} {len(epochs):6d} "
              f"{best_text:>13s}  {created}  {run.name or ''}".rstrip())
    return 0


def _stored_run(store: Any, run_id: str) -> Any:
    """The run, or CnnlabError naming the id (exit 2 with a message, not a KeyError)."""
    try:
        return store.get(run_id)
    except KeyError:
        raise CnnlabError(problems=[Problem("run_id", f"no run {run_id!r} in {store.runs_dir}",
                                            "see `python -m cnnlab runs` for the ids")]) from None


def _write_or_print(text: str, output: Path | None) -> None:
    if output is None:
        print(text, end="")
    else:
        output.write_text(text, encoding="utf-8")
        print(f"wrote {output}", file=sys.stderr)


def cmd_metrics(args: argparse.Namespace) -> int:
    from cnnlab.runs.store import RunStore
    from cnnlab.views import report

    store = RunStore()
    run = _stored_run(store, args.run_id)
    _write_or_print(report.metrics_csv(store.metrics(run.id)), args.output)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from cnnlab.runs.store import RunStore
    from cnnlab.views import report

    store = RunStore()
    run = _stored_run(store, args.run_id)
    _write_or_print(report.report_html(run, store.metrics(run.id)), args.output)
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    _prefetch(args)
    from cnnlab.runs.store import RunStore
    from cnnlab.training.recipes import TEXTBOOK_RESULTS, textbook_config
    from cnnlab.training.setup import resolve_device

    models = args.models or list(TEXTBOOK_RESULTS)
    unknown = [m for m in models if m not in TEXTBOOK_RESULTS]
    if unknown:
        print(f"error: not a model the chapter trains: {', '.join(unknown)}; "
              f"choose from {', '.join(TEXTBOOK_RESULTS)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    configs = {m: _train_config(args, textbook_config(m)) for m in models}
    resolve_device(configs[models[0]].device)
    data = _load_data(configs[models[0]])
    if data is None:
        return EXIT_BAD_INPUT
    store, finished = RunStore(), []
    try:
        for model in models:
            finished.append(_record_and_train(store, model, presets.PRESETS[model], configs[model],
                                              data, name=f"reproduce {model}"))
    except KeyboardInterrupt:
        print("interrupted: the current run is recorded as cancelled", file=sys.stderr)
    _print_reproduction(finished, data.describe())
    return 0 if len(finished) == len(models) else EXIT_INTERRUPTED


def _print_reproduction(runs: list[Any], data: str) -> None:
    from cnnlab.training.recipes import TEXTBOOK_RESULTS

    print(f"data: {data}")
    print(f"{'model':18s} {'input':>5s} {'epochs':>6s} {'test acc':>8s} {'book':>6s} "
          f"{'examples/s':>10s} {'book (GPU)':>10s}  status")
    for run in runs:
        book, result = TEXTBOOK_RESULTS[run.model], run.result
        acc = run.test_acc
        speed = result.get("examples_per_s")
        print(f"{run.model:18s} {run.spec['input_size']:5d} {result.get('epochs_done', 0):6d} "
              f"{f'{acc:.3f}' if acc is not None else '-':>8s} {book.test_acc:6.3f} "
              f"{f'{speed:,.0f}' if speed else '-':>10s} {book.examples_per_s:10,.0f}  "
              f"{run.status} on {result.get('device', '?')}")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="cnnlab", description=__doc__.splitlines()[0])
    commands = top.add_subparsers(dest="command", required=True)

    commands.add_parser("presets", help="list the preset architectures").set_defaults(
        run=cmd_presets)

    summary = commands.add_parser("summary", help="layer table: shapes, params, FLOPs, memory")
    _spec_arguments(summary)
    summary.add_argument("--json", action="store_true", help="print one JSON object")
    summary.add_argument("--batch-size", type=_positive_int, default=256,
                         help="batch size for the training-memory estimate (default 256)")
    summary.set_defaults(run=cmd_summary)

    diagram = commands.add_parser("diagram", help="Graphviz diagram (DOT, or SVG with -o x.svg)")
    _spec_arguments(diagram)
    diagram.add_argument("-o", "--output", type=Path, help="write .svg or .dot here")
    diagram.add_argument("--expand", action="store_true", help="draw repeated blocks one by one")
    diagram.set_defaults(run=cmd_diagram)

    train = commands.add_parser("train", help="train in the foreground and record the run")
    _spec_arguments(train)
    _train_arguments(train)
    train.add_argument("--name", help="a label for the run in `cnnlab runs` and the app")
    train.set_defaults(run=cmd_train)

    runs = commands.add_parser("runs", help="list recorded runs, newest first")
    runs.add_argument("--limit", type=int, default=30, help="show at most this many (default 30)")
    runs.add_argument("--group", help="only the runs of this group (a pair or a sweep)")
    formats = runs.add_mutually_exclusive_group()
    formats.add_argument("--json", action="store_true",
                         help="every run as JSON: settings, final numbers, estimated and "
                              "measured memory, spec and config")
    formats.add_argument("--csv", action="store_true", help="the same numbers as CSV")
    runs.set_defaults(run=cmd_runs)

    metrics = commands.add_parser("metrics", help="a run's per-epoch metrics as CSV")
    metrics.add_argument("run_id", help="the run's id (see `cnnlab runs`)")
    metrics.add_argument("--csv", action="store_true", help="CSV (the default and only format)")
    metrics.add_argument("-o", "--output", type=Path, help="write here instead of printing")
    metrics.set_defaults(run=cmd_metrics)

    report = commands.add_parser("report", help="a one-page HTML report of a run to hand in")
    report.add_argument("run_id", help="the run's id (see `cnnlab runs`)")
    report.add_argument("-o", "--output", type=Path, help="write here (e.g. run.html) instead "
                                                          "of printing")
    report.set_defaults(run=cmd_report)

    reproduce = commands.add_parser(
        "reproduce", help="train the chapter's models with the book's settings; compare results")
    reproduce.add_argument("--models", nargs="+", metavar="PRESET",
                           help="which of the chapter's models (default: all eight)")
    _train_arguments(reproduce, textbook_only=True)
    reproduce.set_defaults(run=cmd_reproduce)
    return top


def program() -> NoReturn:
    """The process: `python -m cnnlab` and the `cnnlab` script. main(), then exit without the
    interpreter's half-second teardown (see cnnlab.runs.worker.exit_now)."""
    from cnnlab.runs.worker import exit_now

    exit_now(main())


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except CnnlabError as exc:  # a bad spec or config, missing data, an unreadable run store
        for line in exc.problems or [exc]:
            print(line, file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:  # e.g. `diagram -o` into a folder that does not exist
        print(f"error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return EXIT_BAD_INPUT
