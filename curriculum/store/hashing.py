"""Vectorized, seed-stable hashing of byte n-grams and words for a whole batch of documents.

Everything here is numpy over one concatenated byte buffer, never a Python loop per n-gram, and
never Python's ``hash()`` (salted per process by ``PYTHONHASHSEED``): the same text gives the same
hashes in every process and on every machine.

The trick is a polynomial prefix hash modulo 2**64: with ``H[k] = sum_{j<k} c_j * P**j`` over the
buffer, the hash of the segment ``[s, e)`` is ``(H[e] - H[s]) * P**-s``, which does not depend on
where the segment sits (P is odd, so it has an inverse modulo 2**64). numpy's uint64 arithmetic
wraps, which is exactly arithmetic modulo 2**64. A splitmix64 finalizer then spreads the bits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_MULTIPLIER = 0x100000001B3  # the 64-bit FNV prime: odd, so invertible modulo 2**64
_MULTIPLIER_INVERSE = pow(_MULTIPLIER, -1, 2**64)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)

#: Lower-case ASCII letters, keep digits and bytes >= 0x80 (UTF-8), turn punctuation into spaces.
_NORMALIZE = bytes(
    (b + 32 if 65 <= b <= 90 else b) if (chr(b).isalnum() or b >= 0x80) else 32 for b in range(256)
)
_IS_WORD = np.frombuffer(bytes(1 if b != 32 else 0 for b in _NORMALIZE), dtype=np.uint8).astype(bool)


def mix64(values: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer: a bijection of uint64 that spreads every input bit over the output."""
    x = values.astype(np.uint64, copy=True)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def salted(values: np.ndarray, salt: int) -> np.ndarray:
    """Mixed hashes in a family of their own (so the word "the" and the 3-gram "the" differ)."""
    return mix64(values ^ np.uint64((salt * int(_GOLDEN)) & (2**64 - 1)))


@dataclass
class Features:
    """Hashed features of a batch: for each occurrence, its document and its 64-bit hash."""

    documents: np.ndarray  # int64, index of the document in the batch
    hashes: np.ndarray  # uint64


class BatchHasher:
    """Hashes word and byte n-grams of many documents at once (powers of P are cached)."""

    def __init__(self) -> None:
        self._powers = np.ones(1, dtype=np.uint64)
        self._inverse_powers = np.ones(1, dtype=np.uint64)

    def _ensure_powers(self, length: int) -> None:
        if len(self._powers) > length:
            return
        size = max(length + 1, 2 * len(self._powers))
        self._powers = np.cumprod(np.full(size, _MULTIPLIER, dtype=np.uint64))
        self._powers = np.concatenate([[np.uint64(1)], self._powers[:-1]])
        self._inverse_powers = np.cumprod(np.full(size, _MULTIPLIER_INVERSE, dtype=np.uint64))
        self._inverse_powers = np.concatenate([[np.uint64(1)], self._inverse_powers[:-1]])

    def hash_batch(
        self,
        texts: Sequence[str | bytes],
        char_ngram_sizes: Sequence[int],
        word_ngram_sizes: Sequence[int],
    ) -> dict[str, Features]:
        """Features per family (``char3``, ``word1``, ``word2``, ...) of every text in the batch.

        Texts are normalized first: ASCII lower-cased, punctuation turned into spaces, runs of
        spaces collapsed; bytes of UTF-8 multi-byte characters are kept as they are. No feature
        crosses from one document into the next.
        """
        families: dict[str, Features] = {}
        if not len(texts):
            empty = Features(np.zeros(0, np.int64), np.zeros(0, np.uint64))
            names = [f"char{n}" for n in char_ngram_sizes] + [f"word{n}" for n in word_ngram_sizes]
            return dict.fromkeys(names, empty)
        encoded = [t.encode("utf-8", "replace") if isinstance(t, str) else bytes(t) for t in texts]
        lengths = np.fromiter((len(t) for t in encoded), dtype=np.int64, count=len(encoded))
        buffer = np.frombuffer(b" ".join(encoded).translate(_NORMALIZE) + b" ", dtype=np.uint8)
        document = np.repeat(np.arange(len(lengths)), lengths + 1)
        # Collapse runs of spaces (punctuation became spaces) and drop leading ones, so that
        # "end. Next" and "end Next" give the same n-grams. Afterwards every non-empty document
        # is its bytes plus exactly one trailing space; an all-space document has no bytes.
        is_space = buffer == 32
        keep = ~(is_space & np.concatenate([[True], is_space[:-1]]))
        buffer, document = buffer[keep], document[keep]
        total = len(buffer)
        # How many bytes of its document are left from each position on, not counting the
        # trailing space: an n-gram starting at i stays inside its document iff remaining >= n.
        counts = np.bincount(document, minlength=len(lengths))
        ends = np.cumsum(counts) - 1
        remaining = np.repeat(ends, counts) - np.arange(total)
        self._ensure_powers(total)
        codes = buffer.astype(np.uint64) + np.uint64(1)
        prefix = np.zeros(total + 1, dtype=np.uint64)
        np.cumsum(codes * self._powers[:total], out=prefix[1:])

        for size in char_ngram_sizes:
            begin = np.flatnonzero(remaining >= size)
            raw = (prefix[begin + size] - prefix[begin]) * self._inverse_powers[begin]
            families[f"char{size}"] = Features(document[begin], salted(raw, 1000 + size))

        is_word = _IS_WORD[buffer]
        previous = np.concatenate([[False], is_word[:-1]])
        following = np.concatenate([is_word[1:], [False]])
        word_begin = np.flatnonzero(is_word & ~previous)
        word_end = np.flatnonzero(is_word & ~following) + 1
        words = salted(
            (prefix[word_end] - prefix[word_begin]) * self._inverse_powers[word_begin], 1
        )
        word_document = document[word_begin]
        for size in word_ngram_sizes:
            if size == 1:
                families["word1"] = Features(word_document, words)
                continue
            count = len(words) - size + 1
            if count <= 0:
                families[f"word{size}"] = Features(np.zeros(0, np.int64), np.zeros(0, np.uint64))
                continue
            combined = words[:count].copy()
            same = np.ones(count, dtype=bool)
            for offset in range(1, size):
                combined = mix64(combined * np.uint64(_MULTIPLIER) + words[offset : offset + count])
                same &= word_document[offset : offset + count] == word_document[:count]
            families[f"word{size}"] = Features(word_document[:count][same], combined[same])
        return families
