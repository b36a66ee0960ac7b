"""Pack tokenized documents into fixed-length training batches.

Two modes:

- ``concat`` (default): documents, each followed by an end-of-text token, form one token stream.
  Sequence ``j`` takes ``input_ids = stream[jT:(j+1)T]`` and ``labels = stream[jT+1:(j+1)T+1]``:
  every token enters the inputs exactly once and the labels exactly once (shifted by one), so no
  token is lost or duplicated across sequence boundaries.
- ``pad``: one document per sequence (split into chunks of T+1 tokens when longer), padded with
  end-of-text and label -100. Every example then belongs to one row, which per-example
  attribution needs.

A batch is a dict of numpy arrays (tensors are made in the training process by
:func:`batch_to_tensors`: passing many small tensors out of DataLoader workers costs a
shared-memory file each, which dominated the loader's time):

- ``input_ids`` (B, T) int64;
- ``labels`` (B, T) int64, -100 where ignored;
- ``loss_weight`` (B, T) float32, the weight of each label token's document;
- ``token_rows`` (B, T) int64, the row of each label token, -1 on padding;
- ``rows`` (B, R) int64, the distinct rows of each sequence, -1 padded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

IGNORE_INDEX = -100


@dataclass
class PackerState:
    """Tokens waiting for the next batch (at most one batch worth): checkpointable."""

    tokens: list[np.ndarray] = field(default_factory=list)
    rows: list[np.ndarray] = field(default_factory=list)
    weights: list[np.ndarray] = field(default_factory=list)
    pending_sequences: list[tuple[np.ndarray, int, float]] = field(default_factory=list)


class Packer:
    """Accumulates documents and cuts batches of ``batch_size`` sequences of ``seq_len`` tokens."""

    def __init__(self, batch_size: int, seq_len: int, eos_id: int, mode: str = "concat") -> None:
        if mode not in ("concat", "pad"):
            raise ValueError(f"packing mode must be 'concat' or 'pad', got {mode!r}")
        if batch_size < 1 or seq_len < 1:
            raise ValueError(f"batch_size and seq_len must be >= 1, got {batch_size}, {seq_len}")
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.eos_id = eos_id
        self.mode = mode
        self.state = PackerState()
        self._buffered_tokens = 0

    # -- adding documents -------------------------------------------------------------------
    def add(self, token_ids: np.ndarray, row: int, weight: float = 1.0) -> None:
        """Buffer one document's tokens (end-of-text is appended here).

        Batches are cut lazily by :meth:`pop`, so a checkpoint taken between two pops holds every
        buffered token and nothing is lost on resume.
        """
        tokens = np.append(np.asarray(token_ids, dtype=np.int64), self.eos_id)
        if self.mode == "pad":
            chunk = self.seq_len + 1
            for start in range(0, len(tokens) - 1, self.seq_len):
                self.state.pending_sequences.append((tokens[start:start + chunk], row, weight))
            return
        self.state.tokens.append(tokens)
        self.state.rows.append(np.full(len(tokens), row, dtype=np.int64))
        self.state.weights.append(np.full(len(tokens), weight, dtype=np.float32))
        self._buffered_tokens += len(tokens)

    def ready(self) -> bool:
        """Whether a whole batch is buffered."""
        if self.mode == "pad":
            return len(self.state.pending_sequences) >= self.batch_size
        # One extra token is needed: the label of the last input position.
        return self._buffered_tokens >= self.batch_size * self.seq_len + 1

    def pop(self) -> dict[str, Any]:
        """Cut the next batch; call only when :meth:`ready`."""
        return self._cut_padded() if self.mode == "pad" else self._cut_concat()

    def has_tokens(self) -> bool:
        """Whether anything is buffered."""
        return bool(self.state.pending_sequences) or self._buffered_tokens > 0

    def pop_partial(self) -> dict[str, Any]:
        """At the end of the data: the buffered remainder as one batch, padded (label -100), so
        no buffered token is lost. An empty buffer gives an all-padding batch."""
        shape = (self.batch_size, self.seq_len)
        if self.mode == "pad":
            sequences = self.state.pending_sequences
            self.state.pending_sequences = []
            while len(sequences) < self.batch_size:
                sequences.append((np.zeros(1, np.int64), -1, 0.0))
            self.state.pending_sequences = sequences
            return self._cut_padded()
        tokens = np.concatenate(self.state.tokens) if self.state.tokens else np.zeros(0, np.int64)
        rows = np.concatenate(self.state.rows) if self.state.rows else np.zeros(0, np.int64)
        weights = (np.concatenate(self.state.weights) if self.state.weights
                   else np.zeros(0, np.float32))
        self.reset()
        n = self.batch_size * self.seq_len
        inputs = np.full(n, self.eos_id, np.int64)
        labels = np.full(n, IGNORE_INDEX, np.int64)
        label_weights = np.zeros(n, np.float32)
        label_rows = np.full(n, -1, np.int64)
        used = min(len(tokens), n)
        inputs[:used] = tokens[:used]
        if used > 1:
            labels[: used - 1] = tokens[1:used]
            label_weights[: used - 1] = weights[1:used]
            label_rows[: used - 1] = rows[1:used]
        return make_batch(inputs.reshape(shape), labels.reshape(shape),
                          label_weights.reshape(shape), label_rows.reshape(shape))

    def _cut_concat(self) -> dict[str, Any]:
        n = self.batch_size * self.seq_len
        tokens = np.concatenate(self.state.tokens)
        rows = np.concatenate(self.state.rows)
        weights = np.concatenate(self.state.weights)
        # Keep token n (the next batch's first input) so it is neither lost nor repeated.
        self.state.tokens, self.state.rows, self.state.weights = [tokens[n:]], [rows[n:]], [weights[n:]]
        self._buffered_tokens = len(tokens) - n
        shape = (self.batch_size, self.seq_len)
        return make_batch(
            tokens[:n].reshape(shape), tokens[1:n + 1].reshape(shape),
            weights[1:n + 1].reshape(shape), rows[1:n + 1].reshape(shape),
        )

    def _cut_padded(self) -> dict[str, Any]:
        sequences = self.state.pending_sequences[: self.batch_size]
        del self.state.pending_sequences[: self.batch_size]
        shape = (self.batch_size, self.seq_len)
        inputs = np.full(shape, self.eos_id, dtype=np.int64)
        labels = np.full(shape, IGNORE_INDEX, dtype=np.int64)
        weights = np.zeros(shape, dtype=np.float32)
        token_rows = np.full(shape, -1, dtype=np.int64)
        for i, (tokens, row, weight) in enumerate(sequences):
            length = len(tokens) - 1
            inputs[i, :length] = tokens[:-1]
            labels[i, :length] = tokens[1:]
            weights[i, :length] = weight
            token_rows[i, :length] = row
        return make_batch(inputs, labels, weights, token_rows)

    # -- checkpointing ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Buffered tokens as plain arrays (small: under one batch)."""
        tokens = np.concatenate(self.state.tokens) if self.state.tokens else np.zeros(0, np.int64)
        rows = np.concatenate(self.state.rows) if self.state.rows else np.zeros(0, np.int64)
        weights = (np.concatenate(self.state.weights) if self.state.weights
                   else np.zeros(0, np.float32))
        # int32 halves what travels with every batch (token ids and rows fit comfortably).
        return {
            "tokens": tokens.astype(np.int32), "rows": rows.astype(np.int32), "weights": weights,
            "pending": [(t.astype(np.int32), r, w) for t, r, w in self.state.pending_sequences],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.state = PackerState(
            [np.asarray(state["tokens"], np.int64)], [np.asarray(state["rows"], np.int64)],
            [np.asarray(state["weights"], np.float32)],
            [(np.asarray(t, np.int64), int(r), float(w)) for t, r, w in state["pending"]],
        )
        self._buffered_tokens = len(self.state.tokens[0])

    def reset(self) -> None:
        """Drop buffered tokens (at an epoch boundary)."""
        self.state = PackerState()
        self._buffered_tokens = 0


def make_batch(inputs: np.ndarray, labels: np.ndarray, weights: np.ndarray,
               token_rows: np.ndarray) -> dict[str, Any]:
    """Assemble the batch dict (see module docstring), with ``rows`` derived from ``token_rows``."""
    per_sequence = [np.unique(r[r >= 0]) for r in token_rows]
    width = max(1, max(len(r) for r in per_sequence))
    rows = np.full((len(per_sequence), width), -1, dtype=np.int64)
    for i, distinct in enumerate(per_sequence):
        rows[i, : len(distinct)] = distinct
    return {
        "input_ids": np.ascontiguousarray(inputs),
        "labels": np.ascontiguousarray(labels),
        "loss_weight": np.ascontiguousarray(weights),
        "token_rows": np.ascontiguousarray(token_rows),
        "rows": rows,
    }


def batch_to_tensors(batch: dict[str, Any]) -> dict[str, Any]:
    """The same batch with numpy arrays and numbers turned into tensors (zero-copy)."""
    return {k: torch.from_numpy(v) if isinstance(v, np.ndarray)
            else torch.tensor(v) if isinstance(v, (int, float)) else v
            for k, v in batch.items()}


def keep_as_is(batch: Any) -> Any:
    """A DataLoader ``collate_fn`` that leaves the worker's batch untouched (picklable)."""
    return batch
