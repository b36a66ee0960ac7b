"""Document embedders: text in, L2-normalized float32 vectors out.

Three kinds, chosen by a spec string (:func:`make_embedder`):

- ``hashed`` (default, no model weights): hashed word and byte n-gram features with TF-IDF weights,
  projected to a fixed dimension by a sparse random sign projection;
- ``gpt:PATH`` / ``hf:PATH``: mean-pooled hidden states of our reference GPT (a checkpoint file) or
  of a local Hugging Face model directory (never downloaded);
- ``sentence-transformers:PATH``: a local sentence-transformers model (optional dependency).

The model-backed ones live in :mod:`curriculum.store.model_embedders`.

An embedder's ``name`` and ``params()`` go into the store manifest and rebuild it with
:func:`load_embedder`; fitted state (the IDF table) is saved beside it as arrays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from curriculum.store.errors import StoreError
from curriculum.store.hashing import BatchHasher, mix64
from curriculum.store.model_embedders import (
    GPTHiddenStateEmbedder,
    HFHiddenStateEmbedder,
    SentenceTransformerEmbedder,
    l2_normalize,
)

Texts = Sequence[str | bytes]


class Embedder(Protocol):
    """What the store needs from an embedder."""

    name: str
    """Registry name, recorded in the store manifest."""
    dim: int
    """Length of every embedding."""

    def params(self) -> dict[str, Any]:
        """JSON-serializable constructor arguments (``make_embedder(name, **params)`` rebuilds)."""
        ...

    def fit(self, texts: Texts) -> None:
        """Learn corpus statistics from a sample of documents (a no-op for pretrained models)."""
        ...

    def embed(self, texts: Texts) -> np.ndarray:
        """float32 (len(texts), dim), each row of unit L2 norm (all zeros for an empty text)."""
        ...

    def state(self) -> dict[str, np.ndarray]:
        """Fitted arrays to save with the store (empty when there is nothing fitted)."""
        ...

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`state` returned."""
        ...


def _chunks(texts: Texts, max_docs: int = 512, max_bytes: int = 1 << 18) -> list[tuple[int, int]]:
    """(start, stop) ranges of at most ``max_docs`` documents or about ``max_bytes`` of text.

    The hashed embedder's arrays are several times the text's size; small chunks keep them in
    cache, which makes it about twice as fast as one big batch.
    """
    ranges, start, size = [], 0, 0
    for index, text in enumerate(texts):
        size += len(text)
        if index + 1 - start >= max_docs or size >= max_bytes:
            ranges.append((start, index + 1))
            start, size = index + 1, 0
    if start < len(texts):
        ranges.append((start, len(texts)))
    return ranges


class HashedNgramEmbedder:
    """TF-IDF over hashed word 1-2-grams and byte 3- and 5-grams, sparse-projected to ``dim``.

    Each feature's 64-bit hash picks one of ``2**bucket_bits`` buckets (the TF-IDF feature space).
    A bucket is projected onto ``projections`` coordinates of the output with random signs derived
    from the bucket number, i.e. a fixed sparse Johnson-Lindenstrauss projection that preserves
    inner products in expectation. Word features and character features are two groups, each
    normalized on its own before they are added, so long documents' many character n-grams do not
    drown the words. Term frequencies are raw counts; IDF is ``log((1 + n) / (1 + df)) + 1``,
    fitted on a sample of the corpus (before :meth:`fit`, every IDF is 1).
    """

    name = "hashed"

    def __init__(
        self,
        dim: int = 256,
        bucket_bits: int = 20,
        char_ngram_sizes: Sequence[int] | int = (3, 5),
        word_ngram_sizes: Sequence[int] | int = (1, 2),
        projections: int = 2,
        seed: int = 0,
    ) -> None:
        if dim < 1 or not 8 <= bucket_bits <= 28 or projections < 1:
            raise ValueError(
                f"hashed embedder: need dim >= 1, 8 <= bucket_bits <= 28, projections >= 1 "
                f"(got dim={dim}, bucket_bits={bucket_bits}, projections={projections})"
            )
        self.dim = int(dim)
        self.bucket_bits = int(bucket_bits)
        self.char_ngram_sizes = tuple(int(n) for n in np.atleast_1d(char_ngram_sizes))
        self.word_ngram_sizes = tuple(int(n) for n in np.atleast_1d(word_ngram_sizes))
        self.projections = int(projections)
        self.seed = int(seed)
        self._hasher = BatchHasher()
        num_buckets = 1 << self.bucket_bits
        buckets = np.arange(num_buckets, dtype=np.uint64)
        self._dims = np.empty((self.projections, num_buckets), dtype=np.int32)
        self._signs = np.empty((self.projections, num_buckets), dtype=np.float32)
        for j in range(self.projections):
            bits = mix64(buckets ^ np.uint64((self.seed * 1_000_003 + j + 1) & (2**64 - 1)))
            self._dims[j] = (bits % np.uint64(self.dim)).astype(np.int32)
            self._signs[j] = np.where(bits >> np.uint64(63), -1.0, 1.0)
        self.idf = np.ones(num_buckets, dtype=np.float32)
        self.documents_fitted = 0
        self._update_weights()

    def params(self) -> dict[str, Any]:
        """Constructor arguments."""
        return {
            "dim": self.dim,
            "bucket_bits": self.bucket_bits,
            "char_ngram_sizes": list(self.char_ngram_sizes),
            "word_ngram_sizes": list(self.word_ngram_sizes),
            "projections": self.projections,
            "seed": self.seed,
        }

    def _update_weights(self) -> None:
        self._weights = self._signs * (self.idf / math.sqrt(self.projections))[None, :]

    def _groups(self, texts: Texts) -> list[tuple[np.ndarray, np.ndarray]]:
        """(documents, buckets) of the word group and of the character group."""
        families = self._hasher.hash_batch(texts, self.char_ngram_sizes, self.word_ngram_sizes)
        shift = np.uint64(64 - self.bucket_bits)
        groups = []
        for prefix in ("word", "char"):
            parts = [f for name, f in families.items() if name.startswith(prefix)]
            if not parts:
                continue
            documents = np.concatenate([p.documents for p in parts])
            buckets = (np.concatenate([p.hashes for p in parts]) >> shift).astype(np.int64)
            groups.append((documents, buckets))
        return groups

    def fit(self, texts: Texts) -> None:
        """Set IDF from the document frequency of each bucket in ``texts``."""
        if not len(texts):
            return
        num_buckets = 1 << self.bucket_bits
        document_frequency = np.zeros(num_buckets, dtype=np.int64)
        for start, stop in _chunks(texts):
            for documents, buckets in self._groups(texts[start:stop]):
                pairs = np.sort(documents * num_buckets + buckets)
                if len(pairs):
                    first = np.concatenate([[True], pairs[1:] != pairs[:-1]])
                    unique = pairs[first] % num_buckets
                    document_frequency += np.bincount(unique, minlength=num_buckets)
        self.idf = (np.log((1.0 + len(texts)) / (1.0 + document_frequency)) + 1.0).astype(
            np.float32
        )
        self.documents_fitted = len(texts)
        self._update_weights()

    def embed(self, texts: Texts) -> np.ndarray:
        """Unit-norm float32 embeddings of ``texts``."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start, stop in _chunks(texts):
            out[start:stop] = self._embed_chunk(texts[start:stop])
        return out

    def _embed_chunk(self, texts: Texts) -> np.ndarray:
        count = len(texts)
        out = np.zeros((count, self.dim), dtype=np.float64)
        for documents, buckets in self._groups(texts):
            group = np.zeros(count * self.dim, dtype=np.float64)
            base = documents * self.dim
            for j in range(self.projections):
                group += np.bincount(
                    base + self._dims[j][buckets],
                    weights=self._weights[j][buckets],
                    minlength=count * self.dim,
                )
            group = group.reshape(count, self.dim)
            norms = np.linalg.norm(group, axis=1, keepdims=True)
            out += np.divide(group, norms, out=np.zeros_like(group), where=norms > 0)
        return l2_normalize(out.astype(np.float32))

    def state(self) -> dict[str, np.ndarray]:
        """The IDF table and the number of documents it was fitted on."""
        return {"idf": self.idf, "documents_fitted": np.asarray(self.documents_fitted)}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore a fitted IDF table."""
        idf = np.asarray(state["idf"], dtype=np.float32)
        if idf.shape != (1 << self.bucket_bits,):
            raise StoreError(f"embedder state: IDF table has shape {idf.shape}, expected "
                             f"({1 << self.bucket_bits},)")
        self.idf = idf
        self.documents_fitted = int(state.get("documents_fitted", 0))
        self._update_weights()


EMBEDDERS: dict[str, type] = {
    HashedNgramEmbedder.name: HashedNgramEmbedder,
    GPTHiddenStateEmbedder.name: GPTHiddenStateEmbedder,
    HFHiddenStateEmbedder.name: HFHiddenStateEmbedder,
    SentenceTransformerEmbedder.name: SentenceTransformerEmbedder,
}

#: Which constructor argument the ``NAME:VALUE`` part of a spec fills.
_SPEC_ARGUMENT = {"gpt": "checkpoint", "hf": "path", "sentence-transformers": "path"}
#: Embedders that live outside the core, and the module whose import registers each (named in
#: errors only: the core never imports them).
_REGISTERED_BY = {"grad": "train.grad_embedder"}


def register_embedder(name: str, factory: type, spec_argument: str | None = None) -> None:
    """Make ``name`` usable in embedder specs and store manifests (for embedders that live in
    other layers, e.g. model-based ones in ``train``). ``spec_argument``: the constructor
    argument the ``NAME:VALUE`` part of a spec fills."""
    EMBEDDERS[name] = factory
    if spec_argument:
        _SPEC_ARGUMENT[name] = spec_argument


def _unknown(name: object) -> str:
    hint = f" (import {_REGISTERED_BY[name]} to register it)" if name in _REGISTERED_BY else ""
    return f"unknown embedder {name!r}{hint}; known: {', '.join(EMBEDDERS)}"


def make_embedder(spec: str | Embedder = "hashed", **params: Any) -> Embedder:
    """An embedder from a spec: ``hashed``, ``hashed:dim=128``, ``gpt:ckpt.pt``, ``hf:DIR``,
    ``sentence-transformers:DIR`` (``st:DIR`` for short), or an embedder object as it is.

    Extra ``key=value`` settings follow a comma: ``hf:DIR,max_tokens=128``.
    """
    if not isinstance(spec, str):
        return spec
    name, _, rest = spec.partition(":")
    name = {"st": "sentence-transformers", "": "hashed"}.get(name, name)
    if name not in EMBEDDERS:
        raise StoreError(_unknown(name))
    arguments: dict[str, Any] = {}
    for index, part in enumerate(p for p in rest.split(",") if p):
        key, equals, value = part.partition("=")
        if not equals:
            if index or name not in _SPEC_ARGUMENT:
                raise StoreError(f"embedder spec {spec!r}: expected key=value, got {part!r}")
            arguments[_SPEC_ARGUMENT[name]] = part
        else:
            arguments[key.strip()] = _parse_value(value.strip())
    arguments.update(params)
    try:
        return EMBEDDERS[name](**arguments)
    except TypeError as error:
        raise StoreError(f"embedder spec {spec!r}: {error}") from error


def _parse_value(value: str) -> Any:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    if "+" in value:  # n-gram sizes: 3+4+5
        return [int(v) for v in value.split("+")]
    return value


def load_embedder(record: dict[str, Any], state: dict[str, np.ndarray] | None = None) -> Embedder:
    """Rebuild the embedder a store manifest describes (``{"name": ..., "params": {...}}``)."""
    name = record.get("name")
    if name not in EMBEDDERS:
        raise StoreError(f"store manifest: {_unknown(name)}")
    embedder = EMBEDDERS[name](**record.get("params", {}))
    if state:
        embedder.load_state(state)
    return embedder
