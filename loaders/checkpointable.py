"""Loader state in a form ``torch.load(weights_only=True)`` accepts.

Lightning loads checkpoints with ``weights_only=True``, which refuses numpy arrays (a pickled
numpy array can run arbitrary code on load). Reader state is therefore stored with tensors in
place of arrays, and turned back into arrays on load.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def to_checkpointable(value: Any) -> Any:
    """Arrays to tensors and numpy scalars to Python numbers, recursively."""
    if isinstance(value, np.ndarray):
        if value.dtype.names is not None:
            raise TypeError("structured arrays must be split into fields before checkpointing")
        return torch.from_numpy(np.ascontiguousarray(value).copy())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: to_checkpointable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_checkpointable(v) for v in value)
    return value


def from_checkpointable(value: Any) -> Any:
    """Tensors back to numpy arrays, recursively (the inverse of :func:`to_checkpointable`)."""
    if isinstance(value, torch.Tensor):
        return value.numpy()
    if isinstance(value, dict):
        return {k: from_checkpointable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(from_checkpointable(v) for v in value)
    return value
