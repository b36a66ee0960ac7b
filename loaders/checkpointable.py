"""Loader state that is cheap to pass between processes and safe to load from a checkpoint.

Reader state travels from every DataLoader worker with every batch, so it keeps numpy arrays
(they pickle fast; every tensor a worker sends costs a shared-memory file). Checkpoints are
loaded with ``torch.load(weights_only=True)``, which refuses numpy arrays (unpickling one can run
arbitrary code), so when a checkpoint is written the arrays become tensors
(:func:`arrays_to_tensors`, called by :class:`train.loader_state.ExactLoaderStateCallback`), and
a reader turns tensors back into arrays when it loads state (:func:`from_checkpointable`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def to_checkpointable(value: Any) -> Any:
    """Numpy scalars to Python numbers, recursively; arrays stay arrays."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: to_checkpointable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_checkpointable(v) for v in value)
    return value


def arrays_to_tensors(value: Any) -> Any:
    """Numpy arrays (and scalars) to tensors (and numbers), recursively, for ``torch.save``."""
    if isinstance(value, np.ndarray):
        if value.dtype.names is not None or value.dtype == object:
            raise TypeError("only plain numeric arrays can be checkpointed")
        return torch.from_numpy(np.ascontiguousarray(value).copy())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: arrays_to_tensors(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(arrays_to_tensors(v) for v in value)
    return value


def from_checkpointable(value: Any) -> Any:
    """Tensors back to numpy arrays, recursively."""
    if isinstance(value, torch.Tensor):
        return value.numpy()
    if isinstance(value, dict):
        return {k: from_checkpointable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(from_checkpointable(v) for v in value)
    return value
