"""Candidate batches for in-batch selection, and the return queue of rows not selected.

The loader delivers ``candidate_factor`` x the batch size rows per step (the stream's batch size
is multiplied; every row keeps its ``token_rows`` and ``rows``, so the documents' provenance
travels with it). :class:`CandidateStream` puts the rows returned at earlier steps in front of
them (oldest first), gives every new row a sequence id (unique in the run), and after the
selection :meth:`CandidateStream.settle` decides each row's fate: SELECT (it updated the
weights), RETURN (back in the queue, offered again at the next step; at most the rule's
``max_returns`` times) or REJECT (with the rule as reason). Each fate becomes selection-ledger
records (:mod:`curriculum.ledger.selection`), one per document in the row, with its labelled
tokens.

The queue is part of the trainer's checkpointed state (:meth:`state_dict`), so a resumed run
offers the same rows at the same steps. Its size is bounded: at most ``max_returns`` x
(candidate rows - kept rows) rows wait at any time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from curriculum.batch import IGNORE_INDEX
from curriculum.ledger.selection import SELECTION_DTYPE, SelectionEvent

#: Per-row tensors of a packed batch that travel with a returned row.
ROW_KEYS = ("input_ids", "labels", "loss_weight", "token_rows", "rows")


@dataclass
class Candidates:
    """The rows of one step's candidate batch, in batch order."""

    sequences: np.ndarray
    """(C,) int64 sequence ids."""
    returns: np.ndarray
    """(C,) int64 times each row was returned before this step."""
    loader_rows: int
    """Rows that came from the loader this step (the rest were returned)."""
    documents: list[tuple[np.ndarray, np.ndarray]]
    """Per row: (document rows, labelled tokens of each)."""


@dataclass
class Settled:
    """What :meth:`CandidateStream.settle` decided at one step."""

    selected: int = 0
    returned: int = 0
    rejected: int = 0
    records: np.ndarray = field(default_factory=lambda: np.zeros(0, SELECTION_DTYPE))
    """Selection-ledger records of the step (OFFERs of new rows included)."""


def row_documents(token_rows: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(document rows, labelled tokens of each) of one packed row."""
    mine = token_rows[(labels != IGNORE_INDEX) & (token_rows >= 0)]
    rows, tokens = np.unique(mine, return_counts=True)
    return rows.astype(np.int64), tokens.astype(np.int64)


class CandidateStream:
    """Composes each step's candidate batch from the loader's rows and the return queue."""

    def __init__(self) -> None:
        self.next_sequence = 0
        self.queue: list[dict[str, Any]] = []
        """Returned rows, oldest first: ``{"sequence", "returns", <ROW_KEYS>: numpy row}``."""
        self._pending_offers: np.ndarray = np.zeros(0, SELECTION_DTYPE)

    def compose(self, batch: dict[str, Any], step: int) -> Candidates:
        """Put the queue's rows in front of ``batch``'s (in place: the dict's tensors are
        replaced) and describe the resulting candidate batch."""
        loader_rows = int(batch["input_ids"].shape[0])
        fresh = np.arange(self.next_sequence, self.next_sequence + loader_rows, dtype=np.int64)
        self.next_sequence += loader_rows
        returned = self.queue
        self.queue = []
        if returned:
            device = batch["input_ids"].device
            for key in ROW_KEYS:
                if key not in batch:
                    continue
                mine = [torch.as_tensor(entry[key]) for entry in returned]
                theirs = list(batch[key].cpu())
                width = max(t.shape[-1] for t in mine + theirs)
                # `rows` is padded with -1 to the widest row of each batch.
                padded = [torch.nn.functional.pad(t, (0, width - t.shape[-1]), value=-1)
                          for t in mine + theirs]
                batch[key] = torch.stack(padded).to(device)
        sequences = np.concatenate([np.array([e["sequence"] for e in returned], np.int64), fresh])
        returns = np.array([e["returns"] for e in returned] + [0] * loader_rows, np.int64)
        token_rows = batch["token_rows"].cpu().numpy()
        labels = batch["labels"].cpu().numpy()
        documents = [row_documents(token_rows[i], labels[i]) for i in range(len(sequences))]
        offers = [_records(SelectionEvent.OFFER, step, sequences[i], *documents[i], -1)
                  for i in range(len(returned), len(sequences))]
        self._pending_offers = np.concatenate(offers) if offers else np.zeros(0, SELECTION_DTYPE)
        return Candidates(sequences, returns, loader_rows, documents)

    def settle(self, candidates: Candidates, batch: dict[str, Any], chosen: np.ndarray,
               step: int, stage: int, unselected: str = "reject", max_returns: int = 0) -> Settled:
        """Record each candidate row's fate and queue the returned ones. ``chosen``: indices of
        the rows that updated the weights; ``stage``: whose rule decided (-1: no rule, every
        row chosen)."""
        keep = np.zeros(len(candidates.sequences), bool)
        keep[np.asarray(chosen, np.int64)] = True
        settled = Settled()
        parts = [self._pending_offers]
        self._pending_offers = np.zeros(0, SELECTION_DTYPE)
        rows_cpu = {key: batch[key].cpu().numpy() for key in ROW_KEYS if key in batch}
        for i, sequence in enumerate(candidates.sequences.tolist()):
            if keep[i]:
                event = SelectionEvent.SELECT
                settled.selected += 1
            elif unselected == "return" and candidates.returns[i] < max_returns:
                event = SelectionEvent.RETURN
                settled.returned += 1
                entry = {key: values[i].copy() for key, values in rows_cpu.items()}
                entry.update(sequence=sequence, returns=int(candidates.returns[i]) + 1)
                self.queue.append(entry)
            else:
                event = SelectionEvent.REJECT
                settled.rejected += 1
            parts.append(_records(event, step, sequence, *candidates.documents[i], stage))
        settled.records = np.concatenate(parts)
        return settled

    def pending_sequences(self) -> list[int]:
        """Sequence ids waiting in the return queue."""
        return [int(entry["sequence"]) for entry in self.queue]

    def state_dict(self) -> dict[str, Any]:
        """The queue and the next sequence id (plain numpy/ints: loads with weights_only)."""
        return {"next_sequence": self.next_sequence,
                "queue": [{k: (v.tolist() if isinstance(v, np.ndarray) else v)
                           for k, v in entry.items()} for entry in self.queue]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.next_sequence = int(state["next_sequence"])
        dtypes = {"loss_weight": np.float32}
        self.queue = [{k: (np.asarray(v, dtypes.get(k, np.int64)) if k in ROW_KEYS else int(v))
                       for k, v in entry.items()} for entry in state["queue"]]


def _records(event: SelectionEvent, step: int, sequence: int, rows: np.ndarray,
             tokens: np.ndarray, stage: int) -> np.ndarray:
    out = np.zeros(len(rows), SELECTION_DTYPE)
    out["event"], out["step"], out["sequence"] = int(event), step, sequence
    out["row"], out["tokens"], out["stage"] = rows, tokens, stage
    return out
