"""JSON text for what the run store keeps: specs, configs, results, metric values, checkpoint meta."""

from __future__ import annotations

import json
import os
from typing import Any


def dumps(value: Any) -> str:
    return json.dumps(value, default=_json_default)


def _json_default(value: Any) -> Any:
    # Metrics often arrive as numpy / torch scalars; configs may hold paths.
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
