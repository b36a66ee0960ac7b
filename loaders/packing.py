"""Pack tokenized documents into fixed-length training batches.

Two modes:

- ``concat`` (default): documents, each followed by an end-of-text token, form one token stream.
  Sequence ``j`` takes ``input_ids = stream[jT:(j+1)T]`` and ``labels = stream[jT+1:(j+1)T+1]``:
  every token enters the inputs exactly once and the labels exactly once (shifted by one), so no
  token is lost or duplicated across sequence boundaries.
- ``pad``: one document per sequence (split into chunks of T+1 tokens when longer), padded with
  end-of-text and label ``IGNORE_INDEX``. Every example then belongs to one row, which per-example
  attribution needs.

A batch is a :class:`curriculum.batch.StreamBatch` of numpy arrays (tensors are made in the
training process by :func:`batch_to_tensors`: passing many small tensors out of DataLoader
workers costs a shared-memory file each, which dominated the loader's time); its keys and
shapes are documented in :mod:`curriculum.batch`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from curriculum.batch import IGNORE_INDEX, StreamBatch


@dataclass
class PackerState:
    """Tokens waiting for the next batch (at most one batch worth): checkpointable.

    In ``concat`` mode documents are kept whole, one row, weight and length per document (the
    first may be the rest of a document cut at the last batch), so adding one costs no per-token
    work; per-token rows and weights are made once per batch with ``np.repeat``.
    """

    tokens: list[np.ndarray] = field(default_factory=list)
    """Token arrays in stream order (a document's end-of-text is an array of its own)."""
    rows: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    """Tokens of each document, end-of-text included: ``sum(lengths)`` tokens are buffered."""
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
        self._eos = np.array([eos_id], dtype=np.int64)

    # -- adding documents -------------------------------------------------------------------
    def add(self, token_ids: np.ndarray, row: int, weight: float = 1.0) -> None:
        """Buffer one document's tokens (end-of-text is appended here).

        Batches are cut lazily by :meth:`pop`, so a checkpoint taken between two pops holds every
        buffered token and nothing is lost on resume.
        """
        tokens = np.asarray(token_ids, dtype=np.int64)
        if self.mode == "pad":
            tokens = np.append(tokens, self.eos_id)
            chunk = self.seq_len + 1
            for start in range(0, len(tokens) - 1, self.seq_len):
                self.state.pending_sequences.append((tokens[start:start + chunk], row, weight))
            return
        state = self.state
        state.tokens.append(tokens)
        state.tokens.append(self._eos)
        state.rows.append(row)
        state.weights.append(weight)
        state.lengths.append(len(tokens) + 1)
        self._buffered_tokens += len(tokens) + 1

    def ready(self) -> bool:
        """Whether a whole batch is buffered."""
        if self.mode == "pad":
            return len(self.state.pending_sequences) >= self.batch_size
        # One extra token is needed: the label of the last input position.
        return self._buffered_tokens >= self.batch_size * self.seq_len + 1

    def pop(self) -> StreamBatch:
        """Cut the next batch; call only when :meth:`ready`."""
        return self._cut_padded() if self.mode == "pad" else self._cut_concat()

    def has_tokens(self) -> bool:
        """Whether anything is buffered."""
        return bool(self.state.pending_sequences) or self._buffered_tokens > 0

    def pop_partial(self) -> StreamBatch:
        """At the end of the data: the buffered remainder as one batch, padded (IGNORE_INDEX), so
        no buffered token is lost. An empty buffer gives an all-padding batch."""
        shape = (self.batch_size, self.seq_len)
        if self.mode == "pad":
            sequences = self.state.pending_sequences
            self.state.pending_sequences = []
            while len(sequences) < self.batch_size:
                sequences.append((np.zeros(1, np.int64), -1, 0.0))
            self.state.pending_sequences = sequences
            return self._cut_padded()
        tokens, rows, weights = self._buffered()
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

    def _buffered(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Buffered tokens with the row and weight of each (int64, int64, float32)."""
        state = self.state
        if not state.lengths:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
        tokens = np.concatenate(state.tokens) if len(state.tokens) > 1 else state.tokens[0]
        rows = np.repeat(np.array(state.rows, dtype=np.int64), state.lengths)
        weights = np.repeat(np.array(state.weights, dtype=np.float32), state.lengths)
        return tokens, rows, weights

    def _cut_concat(self) -> StreamBatch:
        n = self.batch_size * self.seq_len
        state = self.state
        tokens, rows, weights = self._buffered()
        # Keep token n (the next batch's first input) so it is neither lost nor repeated: the
        # documents from the one holding token n on stay, that one shortened to its rest.
        ends = np.cumsum(state.lengths)
        first_kept = int(np.searchsorted(ends, n, side="right"))
        state.tokens = [tokens[n:]]
        state.rows = state.rows[first_kept:]
        state.weights = state.weights[first_kept:]
        state.lengths = [int(ends[first_kept]) - n, *state.lengths[first_kept + 1:]]
        self._buffered_tokens = len(tokens) - n
        shape = (self.batch_size, self.seq_len)
        return make_batch(
            tokens[:n].reshape(shape), tokens[1:n + 1].reshape(shape),
            weights[1:n + 1].reshape(shape), rows[1:n + 1].reshape(shape),
        )

    def _cut_padded(self) -> StreamBatch:
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
        """Buffered tokens as plain arrays, one row and weight per token (small: under one
        batch)."""
        tokens, rows, weights = self._buffered()
        # int32 halves what travels with every batch (token ids and rows fit comfortably).
        return {
            "tokens": tokens.astype(np.int32), "rows": rows.astype(np.int32), "weights": weights,
            "pending": [(t.astype(np.int32), r, w) for t, r, w in self.state.pending_sequences],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        tokens = np.asarray(state["tokens"], np.int64)
        rows = np.asarray(state["rows"], np.int64)
        weights = np.asarray(state["weights"], np.float32)
        # Runs of equal (row, weight) become one document each: the per-token rows and weights,
        # all that batches are made of, come out the same.
        starts = np.flatnonzero(np.r_[True, (rows[1:] != rows[:-1]) | (weights[1:] != weights[:-1])]
                                ) if len(rows) else np.zeros(0, np.int64)
        lengths = np.diff(np.r_[starts, len(rows)])
        self.state = PackerState(
            [tokens] if len(tokens) else [], rows[starts].tolist(),
            [float(w) for w in weights[starts]], lengths.tolist(),
            [(np.asarray(t, np.int64), int(r), float(w)) for t, r, w in state["pending"]],
        )
        self._buffered_tokens = len(tokens)

    def reset(self) -> None:
        """Drop buffered tokens (at an epoch boundary)."""
        self.state = PackerState()
        self._buffered_tokens = 0


def pack_batches(packer: Packer, feed: Iterable[object], stamp: Callable[[StreamBatch], None],
                 *, after_batch: Callable[[], None] | None = None,
                 flush: Callable[[], bool] = lambda: False) -> Iterator[StreamBatch]:
    """The packing loop every stream shares: cut batches as the feed fills the packer.

    ``feed`` adds documents to ``packer`` and yields whenever a batch may be ready; every ready
    batch is cut, given to ``stamp`` (which adds the stream's own keys) and yielded, and
    ``after_batch`` runs right after the yield (where a checkpoint may have been taken). When the
    feed ends (finite data), the buffered remainder goes out as one padded batch, so nothing is
    lost — also an empty one when ``flush()`` says something must still travel (fates).
    """
    for _ in feed:
        while packer.ready():
            batch = packer.pop()
            stamp(batch)
            yield batch
            if after_batch is not None:
                after_batch()
    if packer.has_tokens() or flush():
        batch = packer.pop_partial()
        stamp(batch)
        yield batch


def make_batch(inputs: np.ndarray, labels: np.ndarray, weights: np.ndarray,
               token_rows: np.ndarray) -> StreamBatch:
    """Assemble the batch dict (see module docstring), with ``rows`` derived from ``token_rows``:
    the distinct rows >= 0 of each sequence in ascending order, padded with -1 to the largest
    count in the batch (at least one column)."""
    rows = distinct_rows(token_rows)
    return {
        "input_ids": np.ascontiguousarray(inputs),
        "labels": np.ascontiguousarray(labels),
        "loss_weight": np.ascontiguousarray(weights),
        "token_rows": np.ascontiguousarray(token_rows),
        "rows": rows,
    }


def distinct_rows(token_rows: np.ndarray) -> np.ndarray:
    """The distinct rows >= 0 of each sequence of ``token_rows`` (B, T), ascending, padded with
    -1 to the largest count (at least one column)."""
    # Tokens come in runs of one row: only the first token of each run (a few per sequence) can
    # be new, so the distinct rows are found among those, not among all B x T tokens.
    heads = np.ones(token_rows.shape, dtype=bool)
    heads[:, 1:] = token_rows[:, 1:] != token_rows[:, :-1]
    sequence, _ = np.nonzero(heads)
    values = token_rows[heads]
    keep = values >= 0
    sequence, values = sequence[keep], values[keep]
    order = np.lexsort((values, sequence))
    sequence, values = sequence[order], values[order]
    new = np.ones(len(values), dtype=bool)
    new[1:] = (values[1:] != values[:-1]) | (sequence[1:] != sequence[:-1])
    sequence, values = sequence[new], values[new]
    # Column of each distinct row: its rank within its sequence.
    starts = np.searchsorted(sequence, np.arange(len(token_rows)))
    columns = np.arange(len(values)) - starts[sequence]
    width = max(1, int(columns.max()) + 1) if len(columns) else 1
    rows = np.full((len(token_rows), width), -1, dtype=np.int64)
    rows[sequence, columns] = values
    return rows


def batch_to_tensors(batch: StreamBatch) -> StreamBatch:
    """The same batch with numpy arrays and numbers turned into tensors (zero-copy)."""
    return {k: torch.from_numpy(v) if isinstance(v, np.ndarray)
            else torch.tensor(v) if isinstance(v, (int, float)) else v
            for k, v in batch.items()}


def keep_as_is(batch: Any) -> Any:
    """A DataLoader ``collate_fn`` that leaves the worker's batch untouched (picklable)."""
    return batch
