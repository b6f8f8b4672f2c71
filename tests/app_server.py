"""A real `streamlit run app.py` on 127.0.0.1 and a free port, for the browser test and the page
benchmark: started in a process group of its own, healthy before it is used, stopped with it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(runs: Path, log: Path, timeout_s: float = 60,
          root: Path = ROOT) -> tuple[subprocess.Popen, str]:
    """The server of the checkout at `root` and its URL once /_stcore/health answers "ok".
    Raises RuntimeError with the server's log when it exits or is not healthy within
    `timeout_s` (it is stopped then)."""
    port = free_port()
    env = {**os.environ, "CNNLAB_RUNS": str(runs), "PYTHONPATH": str(root)}
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
             "--server.address", "127.0.0.1", "--server.port", str(port),
             "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
            cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"streamlit exited with {server.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as reply:
                if reply.read().decode().strip() == "ok":
                    return server, url
        except (urllib.error.URLError, OSError):
            pass  # 503 or refused until the server is up
        time.sleep(0.1)
    stop(server)
    raise RuntimeError(f"streamlit did not become healthy in {timeout_s:g} s:\n{log.read_text()}")


def stop(server: subprocess.Popen) -> None:
    """SIGTERM the server's process group, then SIGKILL it after 10 s."""
    if server.poll() is not None:
        return
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(10)


@contextmanager
def running(runs: Path, log: Path, timeout_s: float = 60) -> Iterator[str]:
    """start(), yield the URL, stop() whatever happens."""
    server, url = start(runs, log, timeout_s)
    try:
        yield url
    finally:
        stop(server)
