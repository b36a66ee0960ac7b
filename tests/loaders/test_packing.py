"""Packing: no token lost or duplicated across sequence boundaries; padding mode."""

from __future__ import annotations

import numpy as np

from loaders.packing import IGNORE_INDEX, Packer


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
