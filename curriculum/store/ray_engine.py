"""Embed shards as Ray tasks: the ``ray`` engine of :func:`curriculum.store.build_store`.

One plain Ray task per shard reads the shard, records each sample's key hash and byte offset, and
embeds its texts with the fitted embedder (shipped once through the object store). The driver
takes the results back in shard order, with a bounded number of tasks in flight, and writes the
store exactly as the local engine does, so both engines build the same store.

Why plain tasks and not Ray Data: the unit of work is a shard, and the store's rows are the
manifest's (shard, ordinal) order, which must come back exactly; Ray Data would re-split the
shards into blocks of its own sizing and order, and its webdataset reader knows neither our
ordinals nor byte offsets, so we would have to undo its partitioning on the driver. A task per
shard is the scheduling Ray already does well, with nothing of ours imitating a scheduler.

Ray is an optional dependency (``pip install 'curriculum-loader[ray]'``); the cluster's nodes need
this package installed and the shards at the same path (or URL) as on the driver.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from curriculum.ray_cluster import cluster_cpus, connect, ray_module
from curriculum.shards.manifest import ShardScan
from curriculum.store.embedders import Embedder
from curriculum.store.errors import StoreError


@dataclass
class ShardEmbedding:
    """What one task returns for one shard."""

    path: str
    key_hashes: np.ndarray  # uint64, one per sample
    offsets_bytes: np.ndarray  # int64, one per sample
    embeddings: np.ndarray  # float32 (samples, dim)
    error: str  # why the shard is damaged ("" when it is not)


def embed_shard(path: str, embedder: Embedder, batch_documents: int,
                text_field: str = "text") -> ShardEmbedding:
    """Read one shard and embed its texts, decoded as the loader decodes them (the body of the
    Ray task; runs anywhere)."""
    from curriculum.shards.documents import usable_text
    from curriculum.shards.manifest import key_hash
    from curriculum.shards.remote import local_shard
    from curriculum.shards.tar_samples import ShardReadReport, iter_raw_samples

    report = ShardReadReport(path)
    keys: list[str] = []
    offsets: list[int] = []
    texts: list[bytes] = []
    for sample in iter_raw_samples(local_shard(path), report=report):
        keys.append(sample.key)
        offsets.append(sample.offset_bytes)
        text = usable_text(sample.members, text_field)
        texts.append(text.encode("utf-8") if text is not None else b"")
    vectors = np.zeros((len(texts), int(embedder.dim)), dtype=np.float32)
    for start in range(0, len(texts), batch_documents):
        vectors[start:start + batch_documents] = embedder.embed(texts[start:start + batch_documents])
    return ShardEmbedding(path, key_hash(keys), np.asarray(offsets, dtype=np.int64), vectors,
                          report.error if report.truncated else "")


def iter_shard_embeddings(
    shard_paths: Sequence[str], embedder: Embedder, batch_documents: int,
    address: str | None = None, tasks_in_flight: int | None = None, text_field: str = "text",
) -> Iterator[ShardEmbedding]:
    """Every shard's :class:`ShardEmbedding`, in ``shard_paths`` order, computed as Ray tasks.

    At most ``tasks_in_flight`` shards (default: twice the cluster's CPUs) are submitted and not
    yet consumed, so the driver's memory holds a bounded number of results. A damaged shard
    raises :class:`StoreError` when its turn comes, as the local engine does.
    """
    ray = ray_module()
    started = connect(address)
    try:
        remote_embed = ray.remote(num_cpus=1)(embed_shard)
        embedder_ref = ray.put(embedder)
        limit = tasks_in_flight or max(2, 2 * cluster_cpus())
        pending: deque = deque()
        upcoming = iter(shard_paths)
        for path in upcoming:
            pending.append(remote_embed.remote(path, embedder_ref, batch_documents, text_field))
            if len(pending) >= limit:
                break
        while pending:
            result: ShardEmbedding = ray.get(pending.popleft())
            next_path = next(upcoming, None)
            if next_path is not None:
                pending.append(remote_embed.remote(next_path, embedder_ref, batch_documents,
                                                        text_field))
            if result.error:
                raise StoreError(f"{result.path}: damaged shard ({result.error}); rows after the "
                                 "damage would be lost, so the store is not built")
            yield result
    finally:
        if started:
            ray.shutdown()


def reblock(blocks: Iterator[np.ndarray], sizes: Iterator[int]) -> Iterator[np.ndarray]:
    """The rows of ``blocks`` regrouped into consecutive arrays of the given ``sizes`` (the last
    one shorter when the rows run out), so that per-batch work sees the local engine's batches."""
    buffer: list[np.ndarray] = []
    held = 0
    want = next(sizes)
    for block in blocks:
        buffer.append(block)
        held += len(block)
        while held >= want:
            joined = np.concatenate(buffer) if len(buffer) > 1 else buffer[0]
            yield joined[:want]
            rest = joined[want:]
            buffer, held = ([rest] if len(rest) else []), len(rest)
            want = next(sizes)
    if held:
        yield np.concatenate(buffer)


def local_batch_sizes(head_documents: int, batch_documents: int) -> Iterator[int]:
    """The batch sizes the local engine writes in: the fitting head in batches, then full
    batches from there on."""
    yield from [batch_documents] * (head_documents // batch_documents)
    if head_documents % batch_documents:
        yield head_documents % batch_documents
    while True:
        yield batch_documents


def ray_embeddings(
    shard_paths: Sequence[str], embedder: Embedder, batch_documents: int, address: str | None,
    scan: ShardScan, text_field: str = "text",
) -> Iterator[np.ndarray]:
    """Each shard's embeddings in order, recording per-shard counts, offsets and key hashes in
    ``scan`` the way the local engine's reader does."""
    for result in iter_shard_embeddings(shard_paths, embedder, batch_documents, address,
                                        text_field=text_field):
        scan.counts.append(len(result.key_hashes))
        scan.offsets.append(result.offsets_bytes)
        scan.hashes.append(result.key_hashes)
        yield result.embeddings
