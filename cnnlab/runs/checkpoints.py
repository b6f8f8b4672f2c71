"""Checkpoint files: <runs_dir>/<run_id>/<name>.pt, written atomically, loaded weights-only.

A checkpoint is {"state_dict": ..., "meta": ...}, with meta holding only plain (JSON) types so
that loading never needs to unpickle arbitrary objects.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import zipfile
import tempfile
from pathlib import Path
from typing import Any

from cnnlab.errors import CnnlabError
from cnnlab.runs.encoding import dumps

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

# What torch.load(weights_only=True) raises for a file that is not a checkpoint: a 0-byte file
# (EOFError), random bytes (RuntimeError from the zip reader, or IndexError / UnpicklingError
# from the legacy format), a pickle of other objects (UnpicklingError).
DAMAGED = (EOFError, IndexError, pickle.UnpicklingError, RuntimeError, ValueError,
           zipfile.BadZipFile, UnicodeDecodeError)


class CheckpointError(CnnlabError):
    """A checkpoint file exists but cannot be read as one (truncated, overwritten, foreign)."""


def check_name(kind: str, value: str) -> str:
    # Run ids and checkpoint names become path parts; refuse anything that could escape runs_dir.
    if not SAFE_NAME.match(value):
        raise ValueError(f"invalid {kind}: {value!r}")
    return value



def checkpoint_name(epoch: int) -> str:
    """The file name of the checkpoint saved after `epoch` complete epochs: "epoch-003"."""
    return f"epoch-{epoch:03d}"

class Checkpoints:
    """The checkpoint files of every run under one runs directory."""

    def __init__(self, runs_dir: Path) -> None:
        self.runs_dir = runs_dir

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / check_name("run id", run_id)

    def path(self, run_id: str, name: str) -> Path:
        """<runs_dir>/<run_id>/<name>.pt, e.g. name 'epoch-003' or 'final'."""
        name = name.removesuffix(".pt")
        return self.run_dir(run_id) / f"{check_name('checkpoint name', name)}.pt"

    def save(self, run_id: str, name: str, state_dict: dict[str, Any], meta: dict[str, Any]) -> Path:
        path = self.path(run_id, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        # JSON round trip: meta must hold only plain types, or weights_only loading would refuse it.
        payload = {"state_dict": state_dict, "meta": json.loads(dumps(meta))}
        _write_atomically(path, payload)
        return path

    def load(self, run_id: str, name: str) -> dict[str, Any]:
        """Returns {"state_dict": ..., "meta": ...}; weights_only refuses arbitrary pickled objects."""
        import torch  # lazy: the UI can list runs without paying for a torch import

        path = self.path(run_id, name)
        try:
            payload = torch.load(path, weights_only=True, map_location="cpu")
        except DAMAGED as exc:
            raise self._damaged(run_id, name, f"{type(exc).__name__}: {exc}") from None
        if not (isinstance(payload, dict) and isinstance(payload.get("state_dict"), dict)):
            raise self._damaged(run_id, name, "it holds no state_dict")
        return payload

    def _damaged(self, run_id: str, name: str, why: str) -> CheckpointError:
        others = [n for n in self.names(run_id) if n != name]
        offer = (f"choose another: {', '.join(others)}" if others
                 else "the run has no other checkpoint")
        first_line = why.splitlines()[0][:200] if why else "unreadable"
        return CheckpointError(f"run {run_id}: checkpoint {name!r} is damaged and cannot be "
                               f"loaded ({first_line}); {offer}")

    def names(self, run_id: str) -> list[str]:
        """Checkpoint names of a run, sorted (epoch-001, epoch-002, ..., final)."""
        folder = self.run_dir(run_id)
        if not folder.is_dir():
            return []
        return sorted(p.stem for p in folder.glob("*.pt") if not p.name.startswith("."))


def _write_atomically(path: Path, payload: dict[str, Any]) -> None:
    import torch

    # Write beside the target then rename: a reader never sees a half-written checkpoint.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
