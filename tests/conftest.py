"""Shared fixtures: specs built on the meta device, small real models."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from cnnlab.arch.models import build
from cnnlab.arch.presets import PRESETS
from cnnlab.arch.specs import Spec
from cnnlab.runs.jobs import JobManager
from cnnlab.runs.processes import pid_alive
from cnnlab.runs.recorded import run_recorded
from cnnlab.runs.store import RunStore, Status
from cnnlab.training.config import TrainConfig
from cnnlab.training.data import FashionMNIST, load_fashion_mnist

# One epoch (12 steps) of the 3,000-image sample at the textbook's BN-LeNet settings.
ONE_EPOCH = TrainConfig(epochs=1, batch_size=256, lr=1.0, data="sample", device="cpu",
                        log_every=4)
SPEC = PRESETS["bn-lenet"]  # 28 px, 45k parameters: a step takes milliseconds on a CPU
# Two epochs of the sample, a step event every 5 steps: the loop's and recorded runs' tests.
FAST = TrainConfig(epochs=2, batch_size=256, lr=1.0, data="sample", device="cpu", log_every=5)


@pytest.fixture(scope="module")
def sample() -> FashionMNIST:
    """The bundled 3,000 / 1,000 sample, loaded once per test module."""
    return load_fashion_mnist(source="sample")


def meta_model(spec: Spec) -> torch.nn.Module:
    """`spec`'s network on the meta device, in eval mode: shapes without memory."""
    with torch.device("meta"):
        return build(spec).eval()


def block_shapes(spec: Spec) -> dict[str, tuple[int, ...]]:
    """Output shape (without batch) of each top-level block, from a meta forward."""
    model = meta_model(spec)
    x = torch.empty(1, spec.in_channels, spec.input_size, spec.input_size, device="meta")
    shapes = {}
    for name, block in model.named_children():
        x = block(x)
        shapes[name] = tuple(x.shape[1:])
    return shapes


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    """A fresh run store directory for the test, also exported as CNNLAB_RUNS."""
    path = tmp_path / "runs"
    monkeypatch.setenv("CNNLAB_RUNS", str(path))
    return path


def record_tiny_run(store: RunStore, preset: str, name: str | None = None,
                    config: TrainConfig = ONE_EPOCH) -> str:
    """A real recorded run of `preset` in `store` (about a second for BN-LeNet); its id."""
    run = store.create(preset, PRESETS[preset].to_dict(), config.to_dict(), name=name,
                       data_source="sample")
    store.mark_running(run.id, pid=1, device="cpu", data_source="sample")
    assert run_recorded(store, run.id) is Status.DONE
    return run.id


@pytest.fixture
def app_store(tmp_path, monkeypatch):
    """A fresh run store; the app's cached store and job manager are created on it (AppTest
    sessions of the test share them), and the job manager is shut down after."""
    import streamlit as st

    runs = tmp_path / "runs"
    monkeypatch.setenv("CNNLAB_RUNS", str(runs))
    st.cache_resource.clear()  # shared between AppTest instances (streamlit issue #9139)
    st.cache_data.clear()
    yield RunStore(runs)
    from pages._shared import job_manager

    job_manager().shutdown(wait=True, cancel=True)
    st.cache_resource.clear()


def is_worker(pid: int | None) -> bool:
    try:
        return b"cnnlab.runs.worker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


@pytest.fixture
def managers(store: RunStore) -> Iterator[Callable[..., JobManager]]:
    """Make JobManagers on the test module's `store`; all are shut down and their workers
    killed after (test_jobs, test_ray_executor)."""
    made: list[JobManager] = []

    def make(**kwargs) -> JobManager:
        kwargs.setdefault("poll_interval", 0.1)
        manager = JobManager(kwargs.pop("store", store), **kwargs)
        made.append(manager)
        return manager

    yield make
    for manager in made:
        manager.cancel_grace = 1.0
        manager.shutdown(wait=True, cancel=True)
    for run in store.list():  # a failed test must not leave a worker training (or SIGSTOPped)
        if run.worker_pid and pid_alive(run.worker_pid) and is_worker(run.worker_pid):
            os.killpg(run.worker_pid, signal.SIGKILL)
