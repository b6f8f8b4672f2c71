"""One training run in a process of its own: `python -m cnnlab.runs.worker --runs-dir DIR RUN_ID`.

Started by `cnnlab.runs.jobs.JobManager`. The worker claims its run itself (queued -> running with
its own pid, one atomic store transition), so the pid in the store is always the process that
trains, and a run that was cancelled, or claimed by another server's worker, in the moment
before this one started is left alone (exit 0). It reports only through the run store.

Exit status: 0 when the run reached a final status or was not ours to run; 1 when something
outside the training loop failed (the run is marked failed, the traceback is in worker.log).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import NoReturn

from cnnlab.runs.store import RunStore, Status
from cnnlab.training.config import TrainConfig
from cnnlab.training.files import prefetch


class Terminated(BaseException):
    """SIGTERM arrived (a system shutdown, a plain `kill`): stop and mark the run interrupted.

    A BaseException, like KeyboardInterrupt, so the training loop's `except Exception` does
    not report it as a failure of the run.
    """


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cnnlab.runs.worker",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("run_id", help="the queued run to execute")
    parser.add_argument("--runs-dir", type=Path, required=True, help="the run store's directory")
    parser.add_argument("--device", default="cpu",
                        help='recorded in the store: "cpu" or "cuda:N"')
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--nice", type=int, default=0, help="added to this process's niceness")
    return parser.parse_args(argv)


def claim(store: RunStore, run_id: str, device: str) -> bool:
    """Mark the run running with this process's pid; False if it is not queued any more."""
    try:
        store.mark_running(run_id, os.getpid(), device=device)
    except (KeyError, ValueError):  # deleted, cancelled, or another worker was first
        return False
    return True


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(signal.Signals(signum).name)


def _mark_unfinished(store: RunStore, run_id: str, status: Status, message: str) -> None:
    """Give the run a final status unless training already did (or it is not ours)."""
    try:
        store.finish_unless_final(run_id, status, message, pid=os.getpid())
    except Exception:  # the store itself may be the problem; the log keeps the original error
        traceback.print_exc()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.nice:
        os.nice(args.nice)
    store = RunStore(args.runs_dir)
    # Claim before importing torch, which takes seconds: the page shows "running" at once,
    # and a worker that lost the run to another server's exits without paying for the import.
    if not claim(store, args.run_id, args.device):
        print(f"run {args.run_id} is not queued any more; nothing to do", flush=True)
        return 0
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        # The data's files are read in a thread while torch imports (see cnnlab.training.files).
        prefetch(store.get(args.run_id).config.get("data", TrainConfig().data))
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        from cnnlab.runs.recorded import run_recorded

        status = run_recorded(store, args.run_id)
    except (Terminated, KeyboardInterrupt) as exc:
        _mark_unfinished(store, args.run_id, Status.INTERRUPTED, f"worker stopped by"
                         f" {str(exc) or 'SIGINT'}; metrics up to that point are kept")
        return 1
    except BaseException as exc:
        traceback.print_exc()
        _mark_unfinished(store, args.run_id, Status.FAILED,
                         f"worker error: {type(exc).__name__}: {exc}")
        return 1
    print(f"run {args.run_id} finished: {status}", flush=True)
    return 0


def exit_now(code: int) -> NoReturn:
    """End the process with `code`, skipping the interpreter's teardown: with torch loaded its
    last garbage collections take 0.5-2 s here (`python -c "import torch"` exits 0.5 s later
    than `import torch, os; os._exit(0)`), and a worker's slot stays taken, or the CLI's user
    waits, until the process is gone. Every store write is already committed and checkpoints
    are fsynced, so nothing is lost; only the output streams need flushing."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
