"""The batch every stream yields and the trainer consumes: one typed contract, one IGNORE_INDEX.

A batch leaves a DataLoader worker as numpy arrays and becomes tensors in the training process
(:func:`loaders.packing.batch_to_tensors`); the keys and shapes stay the same:

- ``input_ids`` (B, T) int64;
- ``labels`` (B, T) int64, :data:`IGNORE_INDEX` where no token is predicted;
- ``loss_weight`` (B, T) float32, the weight of each label token's document;
- ``token_rows`` (B, T) int64, the row of each label token, -1 on padding;
- ``rows`` (B, R) int64, the distinct rows of each sequence, -1 padded;
- ``skipped_rows`` (plain and mixed streams): rows skipped as bad input since the last batch;
- ``fates`` (curriculum stream): the :class:`~curriculum.ledger.FateBatch` of the documents
  decided since the last batch, written to the ledger when the batch is consumed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypedDict, Union

import numpy as np

if TYPE_CHECKING:
    import torch

    from curriculum.ledger import FateBatch

#: Label of positions that predict nothing (padding): skipped by the loss, as in PyTorch.
IGNORE_INDEX = -100

#: An array of a batch: numpy in DataLoader workers, a tensor in the training process.
BatchArray = Union[np.ndarray, "torch.Tensor"]


class Batch(TypedDict):
    """The keys every batch has (see the module docstring)."""

    input_ids: BatchArray
    labels: BatchArray
    loss_weight: BatchArray
    token_rows: BatchArray
    rows: BatchArray


class StreamBatch(Batch, total=False):
    """A batch as a stream yields it: the keys of :class:`Batch`, plus what its stream adds."""

    skipped_rows: int
    fates: FateBatch


#: The keys of :class:`Batch`, in order.
BATCH_KEYS: tuple[str, ...] = tuple(Batch.__annotations__)
