"""Packing: no token lost or duplicated across sequence boundaries; padding mode."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from loaders.packing import IGNORE_INDEX, Packer, make_batch


def _docs(seed: int, count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 250, size=int(rng.integers(1, 90))) for _ in range(count)]


def test_concat_packing_keeps_every_token_exactly_once() -> None:
    docs = _docs(0, 300)
    packer = Packer(batch_size=3, seq_len=16, eos_id=256)
    batches = []
    for row, tokens in enumerate(docs):
        packer.add(tokens, row)
        while packer.ready():
            batches.append(packer.pop())
    stream = np.concatenate([np.append(d, 256) for d in docs])
    rows = np.concatenate([np.full(len(d) + 1, r) for r, d in enumerate(docs)])
    inputs = np.concatenate([np.asarray(b["input_ids"]).ravel() for b in batches])
    labels = np.concatenate([np.asarray(b["labels"]).ravel() for b in batches])
    token_rows = np.concatenate([np.asarray(b["token_rows"]).ravel() for b in batches])
    n = len(inputs)
    assert n == len(batches) * 3 * 16 and n > 0.9 * len(stream) - 3 * 16
    assert np.array_equal(inputs, stream[:n])
    assert np.array_equal(labels, stream[1 : n + 1])
    assert np.array_equal(token_rows, rows[1 : n + 1])
    # The buffer holds exactly the tokens not yet used as inputs.
    assert np.array_equal(packer.state_dict()["tokens"], stream[n:])
    for batch in batches:
        for seq_rows, seq_token_rows in zip(batch["rows"], batch["token_rows"], strict=True):
            expected = np.unique(seq_token_rows)
            got = seq_rows
            assert np.array_equal(got[got >= 0], expected)


def test_packer_state_round_trip_continues_identically() -> None:
    docs = _docs(1, 120)
    reference, resumed = Packer(2, 12, 256), None
    out_a, out_b = [], []
    for row, tokens in enumerate(docs):
        reference.add(tokens, row)
        while reference.ready():
            out_a.append(reference.pop()["input_ids"])
        if row == 60:
            resumed = Packer(2, 12, 256)
            resumed.load_state_dict(reference.state_dict())
            split = len(out_a)
        elif resumed is not None:
            resumed.add(tokens, row)
            while resumed.ready():
                out_b.append(resumed.pop()["input_ids"])
    assert all((a == b).all() for a, b in zip(out_a[split:], out_b, strict=True))
    assert len(out_a[split:]) == len(out_b)


def test_pad_mode_one_document_per_sequence() -> None:
    packer = Packer(batch_size=2, seq_len=8, eos_id=256, mode="pad")
    packer.add(np.arange(3), row=5)
    packer.add(np.arange(20), row=6)  # 21 tokens with eos: chunks of 8 predicted tokens
    batches = []
    while packer.ready():
        batches.append(packer.pop())
    assert len(batches) == 2  # 1 + 3 chunks of at most 8 predicted tokens
    first = batches[0]
    assert first["input_ids"][0, :3].tolist() == [0, 1, 2]
    assert first["labels"][0].tolist() == [1, 2, 256] + [IGNORE_INDEX] * 5
    assert first["token_rows"][0].tolist() == [5, 5, 5] + [-1] * 5
    assert first["rows"][:, 0].tolist() == [5, 6]
    assert first["loss_weight"][0].tolist() == [1, 1, 1, 0, 0, 0, 0, 0]
    second = batches[1]
    assert second["input_ids"][1, :4].tolist() == [16, 17, 18, 19]
    assert second["labels"][1, :5].tolist() == [17, 18, 19, 256, IGNORE_INDEX]
    assert not packer.state.pending_sequences


def _unique_per_sequence(token_rows: np.ndarray) -> np.ndarray:
    """``rows`` by its definition: np.unique of each sequence's rows >= 0, padded with -1."""
    per_sequence = [np.unique(r[r >= 0]) for r in token_rows]
    width = max(1, max(len(r) for r in per_sequence))
    rows = np.full((len(per_sequence), width), -1, dtype=np.int64)
    for i, distinct in enumerate(per_sequence):
        rows[i, : len(distinct)] = distinct
    return rows


@settings(max_examples=300, deadline=None, database=None)
@given(token_rows=arrays(np.int64, st.tuples(st.integers(1, 5), st.integers(1, 9)),
                         elements=st.integers(-1, 6)))
def test_batch_rows_are_the_distinct_rows_of_each_sequence(token_rows: np.ndarray) -> None:
    zeros = np.zeros(token_rows.shape)
    rows = make_batch(zeros, zeros, zeros, token_rows)["rows"]
    assert rows.dtype == np.int64
    np.testing.assert_array_equal(rows, _unique_per_sequence(token_rows))


@settings(max_examples=60, deadline=None, database=None)
@given(seed=st.integers(0, 2**16), batch_size=st.integers(1, 4), seq_len=st.integers(1, 40),
       checkpoints=st.sets(st.integers(0, 80), max_size=6))
def test_concat_packer_delivers_the_token_stream_with_rows_weights_and_checkpoints(
        seed: int, batch_size: int, seq_len: int, checkpoints: set[int]) -> None:
    rng = np.random.default_rng(seed)
    docs = [rng.integers(0, 250, size=int(rng.integers(0, 60))) for _ in range(80)]
    # Repeated rows in a row (repetition upweighting) and several weights.
    rows = [i // 2 if i % 5 == 0 else i for i in range(len(docs))]
    weights = [float(rng.choice([0.5, 1.0, 2.0, 1 / 3])) for _ in docs]
    packer = Packer(batch_size, seq_len, eos_id=256)
    batches = []
    for i, (tokens, row, weight) in enumerate(zip(docs, rows, weights, strict=True)):
        if i in checkpoints:  # a resumed packer continues exactly and holds the same state
            state = packer.state_dict()
            packer = Packer(batch_size, seq_len, eos_id=256)
            packer.load_state_dict(state)
            again = packer.state_dict()
            for key in ("tokens", "rows", "weights"):
                np.testing.assert_array_equal(again[key], state[key])
        packer.add(tokens, row, weight)
        while packer.ready():
            batches.append(packer.pop())
    batches.append(packer.pop_partial())
    assert not packer.has_tokens()
    stream = np.concatenate([np.append(d, 256) for d in docs])
    token_rows = np.concatenate([np.full(len(d) + 1, r) for d, r in zip(docs, rows, strict=True)])
    token_weights = np.concatenate([np.full(len(d) + 1, w, np.float32)
                                    for d, w in zip(docs, weights, strict=True)])
    n = len(stream)
    inputs = np.concatenate([b["input_ids"].ravel() for b in batches])
    labels = np.concatenate([b["labels"].ravel() for b in batches])
    got_rows = np.concatenate([b["token_rows"].ravel() for b in batches])
    got_weights = np.concatenate([b["loss_weight"].ravel() for b in batches])
    np.testing.assert_array_equal(inputs[:n], stream)
    np.testing.assert_array_equal(labels[:n - 1], stream[1:])
    np.testing.assert_array_equal(got_rows[:n - 1], token_rows[1:])
    np.testing.assert_array_equal(got_weights[:n - 1], token_weights[1:])
    assert (labels[n - 1:] == IGNORE_INDEX).all() and (got_rows[n - 1:] == -1).all()
    assert (got_weights[n - 1:] == 0).all()
    for batch in batches:
        np.testing.assert_array_equal(batch["rows"], _unique_per_sequence(batch["token_rows"]))
