"""Worker processes on this host: start one for a run, tell whether a pid lives, kill one.

The job manager decides which run starts where (`cnnlab.runs.slots`); this module does the
operating-system part: the command line and environment of `python -m cnnlab.runs.worker`,
process groups and signals, and /proc checks that a pid is still the worker it was.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

KILL_WAIT_S = 5.0  # how long to wait for a SIGKILLed process to disappear
# CPU workers run at lower priority, so the scheduler serves the server's short bursts (a page
# rerun, a health check) first and training gets every cycle the server does not want.
CPU_WORKER_NICE = 5
GPU_WORKER_THREADS = 2  # data lives on the GPU; the worker's CPU only launches kernels
LOG_TAIL_CHARS = 600  # how much of a crashed worker's output goes into the run's message
PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def pid_alive(pid: int | None) -> bool:
    # pid 0 / negative would signal a whole process group, never a single worker.
    if pid is None or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return not _is_zombie(pid)


def process_start(pid: int | None) -> int | None:
    """When the process started, in clock ticks since boot (/proc/<pid>/stat field 22); None
    when it is gone or there is no procfs. A pid with its start time names one process for good:
    a later process given the same pid starts later."""
    if pid is None or pid <= 0:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the command name, which sits in parentheses and may hold spaces; the state is
    # field 3, so the start time (field 22) is the 20th after the ")".
    fields = stat.rpartition(")")[2].split()
    return int(fields[19]) if len(fields) > 19 else None


def same_process(pid: int | None, start: int | None) -> bool:
    """pid_alive, and (when `start` was recorded) still the process that had that start time,
    not an unrelated one that was given the pid after it died."""
    if not pid_alive(pid):
        return False
    if start is None:
        return True  # recorded by an older cnnlab, or without procfs: the pid is all we have
    now = process_start(pid)
    return now is None or now == start


def _is_zombie(pid: int) -> bool:
    # A killed child that its parent has not reaped yet still answers os.kill(pid, 0).
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False  # no procfs (macOS) or it vanished: trust os.kill
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def launch_worker(
    runs_dir: Path, run_id: str, device: str, cpu_threads: int, log_path: Path
) -> subprocess.Popen[bytes]:
    """Start `python -m cnnlab.runs.worker` for the run, its output appended to `log_path`.

    Raises OSError when no process can be started (too many processes, a full disk)."""
    on_cpu = device == "cpu"
    threads = cpu_threads if on_cpu else GPU_WORKER_THREADS
    command = [
        sys.executable, "-m", "cnnlab.runs.worker",
        "--runs-dir", str(runs_dir.resolve()),
        "--device", device,
        "--threads", str(threads),
        "--nice", str(CPU_WORKER_NICE if on_cpu else 0),
        run_id,
    ]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        # A session of its own: Ctrl-C in the server's terminal does not reach the worker, and
        # killpg takes the worker and anything it started. (No preexec_fn: it is not safe in a
        # threaded server; the worker lowers its own priority.)
        return subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env=worker_env(device, threads), start_new_session=True, close_fds=True,
        )


def worker_env(device: str, threads: int) -> dict[str, str]:
    """The server's environment, adjusted for a worker on `device` with `threads` CPU threads."""
    env = dict(os.environ)
    # The worker runs `-m cnnlab.runs.worker` from wherever the server was started.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), env.get("PYTHONPATH")]))
    # OpenMP reads these at start-up; torch.set_num_threads in the worker covers the rest.
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    env["PYTHONUNBUFFERED"] = "1"  # a crash's last words reach worker.log
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # "auto" must mean the CPU in a CPU slot
    else:
        index = int(device.split(":")[1])
        # Index into the server's own visible set, so CUDA_VISIBLE_DEVICES=2,3 is honoured.
        visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
        env["CUDA_VISIBLE_DEVICES"] = visible[index] if index < len(visible) else str(index)
    return env


def kill_child(proc: subprocess.Popen[bytes]) -> bool:
    """SIGKILL a worker this process started, and its process group; True once it is gone."""
    _killpg(proc.pid)
    try:
        proc.wait(KILL_WAIT_S)
    except subprocess.TimeoutExpired:
        return False
    return True


def kill_worker(pid: int | None, run_id: str) -> bool:
    """SIGKILL another process's worker (or one that outlived a previous server) by pid; True
    once it is gone. Kills only when /proc confirms the pid is still that run's worker, not a
    reused pid."""
    if pid is not None and _is_worker_of(pid, run_id):
        _killpg(pid)
        deadline = time.monotonic() + KILL_WAIT_S
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    return not pid_alive(pid)


def _killpg(pid: int) -> None:
    # The worker leads its own session, so its pid is also its process group id.
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _is_worker_of(pid: int, run_id: str) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"cnnlab.runs.worker" in argv and run_id.encode() in argv


def exit_reason(returncode: int) -> str:
    """How a process ended, for a run's message: "exited with code 1", "was killed by SIGKILL"."""
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


def log_tail(path: Path) -> str:
    """The last LOG_TAIL_CHARS of a worker's log, or "" when it cannot be read."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - LOG_TAIL_CHARS))
            return f.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""
