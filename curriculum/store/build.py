"""Build a behavior store from tar shards and probe sets, reading every shard once.

The store is assembled in a hidden sibling directory and renamed into place at the end, so an
interrupted build never leaves a half-written store under the final name (and a failed rebuild
keeps the old store).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from curriculum.shards.documents import usable_text
from curriculum.shards.manifest import (
    MANIFEST_NAME,
    ROWS_NAME,
    ShardManifest,
    ShardScan,
    expand_shard_spec,
)
from curriculum.store.affinity import (
    AFFINITY_DEFINITION,
    DEFAULT_TOP_K,
    probe_affinity,
    shard_mean_affinity,
)
from curriculum.store.attribution import create_attribution_files
from curriculum.store.embedders import Embedder, make_embedder
from curriculum.store.errors import StoreError
from curriculum.store.index import (
    build_index,
    choose_index_factory,
    default_nprobe,
    empty_copy,
    faiss_module,
    nlist_of,
    save_index,
    to_cpu,
    train_index,
)
from curriculum.store.meta import (
    AFFINITY_FILE,
    COARSE_LISTS_FILE,
    EMBEDDER_STATE_FILE,
    EMBEDDINGS_FILE,
    ESTIMATOR_FILE,
    INDEX_FILE,
    KEY_HASHES_FILE,
    KEY_ROWS_FILE,
    META_FILE,
    PROBE_BEHAVIORS_FILE,
    PROBE_EMBEDDINGS_FILE,
    SHARD_AFFINITY_FILE,
    StoreMeta,
)
from curriculum.store.probe_sets import read_probe_sets
from curriculum.store.ray_engine import local_batch_sizes, ray_embeddings, reblock
from curriculum.store.store import BehaviorStore
from curriculum.store.tables import (
    NpyStreamWriter,
    create_table,
    file_crc32,
    fsync_directory,
    open_table,
    save_atomic,
    temporary_path,
)

#: Stores below this many rows estimate attribution with exact (Flat) neighbour search.
ESTIMATOR_FLAT_BELOW = 200_000
#: Nearest IVF lists kept per row for kNN estimation (probes beyond this do a coarse search).
COARSE_PROBES = 4


def _corpus_manifest(spec: Any) -> tuple[ShardManifest | None, Path | None]:
    """The corpus's own manifest when the spec names a corpus directory or manifest file."""
    if isinstance(spec, (str, Path)):
        candidate = Path(spec)
        path = candidate if candidate.name == MANIFEST_NAME else candidate / MANIFEST_NAME
        if path.is_file():
            return ShardManifest.load(path), path
    return None, None


def _iter_documents(shard_paths: Sequence[str], scan: ShardScan, text_field: str) -> Iterator[bytes]:
    """Texts of every sample in row order, as the loader decodes them (``b""`` where the loader
    skips the sample); ``scan`` records the per-shard counts, offsets and key hashes."""
    for path in shard_paths:
        for sample in scan.samples(path):
            text = usable_text(sample.members, text_field)
            yield text.encode("utf-8") if text is not None else b""
        report = scan.last_report
        if report is not None and report.truncated:
            raise StoreError(f"{path}: damaged shard ({report.error}); rows after the damage "
                             "would be lost, so the store is not built")


def _batches(documents: Iterator[bytes], size: int) -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    for text in documents:
        batch.append(text)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def build_store(
    shards_spec: str | Path | Sequence[str],
    probes_dir: str | Path,
    out_dir: str | Path,
    embedder: str | Embedder = "hashed",
    index_factory: str | None = None,
    show_progress: bool = False,
    *,
    behaviors: Sequence[str] | None = None,
    affinity_top_k: int = DEFAULT_TOP_K,
    fit_documents: int = 20_000,
    batch_documents: int = 4096,
    estimator_factory: str | None = None,
    overwrite: bool = False,
    text_field: str = "text",
    engine: str = "local",
    ray_address: str | None = None,
) -> BehaviorStore:
    """Index shards into a new store at ``out_dir`` and return it opened for writing.

    Reads every shard once: the first ``fit_documents`` texts fit the embedder (the hashed
    embedder's IDF), then every document is embedded, its affinity computed against the probe
    sets, and its key and byte offset recorded. Then the FAISS index (``index_factory``, or one
    chosen by size), the key lookup table, per-shard mean affinity and empty attribution tables
    are written, and finally ``store.json``. When the shard spec is a corpus directory with a
    manifest, the rows read must match it exactly. Texts are decoded as the loader decodes them
    (:func:`curriculum.shards.documents.decode_text`, ``text_field`` of ``.json`` members).

    ``engine="ray"`` embeds the shards as Ray tasks (see :mod:`curriculum.store.ray_engine`) on
    the cluster at ``ray_address`` (a local Ray when ``None``); the store is the same.
    """
    if engine not in ("local", "ray"):
        raise StoreError(f"unknown engine {engine!r}; use local or ray")
    probes = read_probe_sets(probes_dir, behaviors)
    names = list(probes)
    if isinstance(shards_spec, Path):
        shards_spec = str(shards_spec)
    corpus_manifest, corpus_manifest_path = _corpus_manifest(shards_spec)
    if corpus_manifest is not None:
        shard_paths = corpus_manifest.shard_paths
        missing = [p for p in shard_paths if not os.path.isfile(p)]
        if missing:
            raise StoreError(f"{missing[0]}: shard listed in {corpus_manifest_path} not found")
    else:
        shard_paths = expand_shard_spec(shards_spec)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        if not (out / META_FILE).is_file():
            raise StoreError(f"{out}: exists and is not a behavior store; choose another --out")
        if not overwrite:
            raise StoreError(f"{out}: a store already exists there (pass overwrite / --overwrite)")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.building-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        meta = _build(
            staging, shard_paths, corpus_manifest, corpus_manifest_path, probes, names,
            make_embedder(embedder), index_factory, estimator_factory, affinity_top_k,
            fit_documents, batch_documents, show_progress, text_field, engine, ray_address,
        )
        meta.save(staging)
        fsync_directory(staging)
        _move_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    store = BehaviorStore.open(out)
    assert isinstance(store, BehaviorStore)
    return store


def _move_into_place(staging: Path, out: Path) -> None:
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(staging, out)
    fsync_directory(out.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _build(
    staging: Path,
    shard_paths: list[str],
    corpus_manifest: ShardManifest | None,
    corpus_manifest_path: Path | None,
    probes: dict[str, list[str]],
    names: list[str],
    embedder: Embedder,
    index_factory: str | None,
    estimator_factory: str | None,
    affinity_top_k: int,
    fit_documents: int,
    batch_documents: int,
    show_progress: bool,
    text_field: str,
    engine: str = "local",
    ray_address: str | None = None,
) -> StoreMeta:
    dim = int(embedder.dim)
    scan = ShardScan()
    # With Ray, the driver reads only the fitting head; the tasks report the shards' rows.
    documents = _iter_documents(shard_paths, ShardScan() if engine == "ray" else scan, text_field)
    total = corpus_manifest.num_rows if corpus_manifest is not None else None
    embeddings_out = NpyStreamWriter(staging / EMBEDDINGS_FILE, np.float32, (dim,))
    affinity_out = NpyStreamWriter(staging / AFFINITY_FILE, np.float32, (len(names),))
    probe_behaviors = np.concatenate(
        [np.full(len(probes[n]), column, dtype=np.int32) for column, n in enumerate(names)]
    )
    probe_texts = [t for n in names for t in probes[n]]
    probe_embeddings: np.ndarray | None = None

    def write_vectors(vectors: np.ndarray) -> None:
        embeddings_out.append(vectors)
        affinity_out.append(
            probe_affinity(vectors, probe_embeddings, probe_behaviors, len(names), affinity_top_k)
        )

    try:
        with tqdm(total=total, desc="index documents", unit="doc",
                  disable=not show_progress) as bar:
            # The first documents fit the embedder (IDF); they are embedded right after.
            head: list[bytes] = []
            for text in documents:
                head.append(text)
                if len(head) >= fit_documents:
                    break
            embedder.fit(head)
            probe_embeddings = embedder.embed(probe_texts)
            if engine == "ray":
                documents.close()
                vectors = ray_embeddings(shard_paths, embedder, batch_documents, ray_address,
                                         scan, text_field)
                # Affinity in the local engine's batches: the same floats, whatever BLAS does.
                for block in reblock(vectors, local_batch_sizes(len(head), batch_documents)):
                    write_vectors(block)
                    bar.update(len(block))
            else:
                for start in range(0, len(head), batch_documents):
                    write_vectors(embedder.embed(head[start : start + batch_documents]))
                    bar.update(min(batch_documents, len(head) - start))
                del head
                for batch in _batches(documents, batch_documents):
                    write_vectors(embedder.embed(batch))
                    bar.update(len(batch))
        embeddings_out.close()
        affinity_out.close()
    except BaseException:
        embeddings_out.abort()
        affinity_out.abort()
        raise

    manifest = scan.manifest(shard_paths)
    if corpus_manifest is not None:
        _check_against_corpus(manifest, corpus_manifest, corpus_manifest_path)
    num_rows = manifest.num_rows
    if num_rows == 0:
        raise StoreError(f"{shard_paths[0]}: the shards hold no documents")
    manifest.save(staging)

    embeddings = open_table(staging / EMBEDDINGS_FILE, np.float32, (num_rows, dim))
    affinity = open_table(staging / AFFINITY_FILE, np.float32, (num_rows, len(names)))
    order = np.argsort(manifest.key_hashes, kind="stable")
    save_atomic(staging / KEY_HASHES_FILE, manifest.key_hashes[order])
    save_atomic(staging / KEY_ROWS_FILE, order.astype(np.int64))
    save_atomic(staging / SHARD_AFFINITY_FILE,
                shard_mean_affinity(affinity, manifest.first_rows, manifest.counts))
    save_atomic(staging / PROBE_EMBEDDINGS_FILE, probe_embeddings)
    save_atomic(staging / PROBE_BEHAVIORS_FILE, probe_behaviors)
    state = embedder.state()
    if state:
        temporary = temporary_path(staging / EMBEDDER_STATE_FILE)
        with open(temporary, "wb") as handle:
            np.savez(handle, **state)
        os.replace(temporary, staging / EMBEDDER_STATE_FILE)

    factory = index_factory or choose_index_factory(num_rows, dim)

    def read_rows(start: int, stop: int) -> np.ndarray:
        return np.asarray(embeddings[start:stop])

    with tqdm(total=num_rows, desc="faiss index", unit="vec", disable=not show_progress) as bar:
        index = build_index(factory, dim, num_rows, read_rows, progress=bar.update)
    save_index(index, staging / INDEX_FILE)

    estimator = estimator_factory or choose_index_factory(
        num_rows, dim, flat_below=ESTIMATOR_FLAT_BELOW
    )
    if nlist_of(estimator):
        # The estimator's IVF index is trained once here, on all rows' embeddings, so that it
        # fits every row that may get measured later; the writer fills it as measurements come.
        if estimator == factory:
            template = empty_copy(index)
        else:
            template = train_index(estimator, dim, num_rows, read_rows)
        save_index(template, staging / ESTIMATOR_FILE)
        with tqdm(total=num_rows, desc="coarse lists", unit="row",
                  disable=not show_progress) as bar:
            _write_coarse_lists(staging / COARSE_LISTS_FILE, template, num_rows, read_rows,
                                bar.update)
    create_attribution_files(staging, num_rows, len(names))

    static = [EMBEDDINGS_FILE, AFFINITY_FILE, SHARD_AFFINITY_FILE, PROBE_EMBEDDINGS_FILE,
              PROBE_BEHAVIORS_FILE, KEY_HASHES_FILE, KEY_ROWS_FILE, INDEX_FILE, MANIFEST_NAME,
              ROWS_NAME]
    static += [f for f in (EMBEDDER_STATE_FILE, ESTIMATOR_FILE, COARSE_LISTS_FILE)
               if (staging / f).is_file()]
    files = {
        name: {"bytes": (staging / name).stat().st_size, "crc32": file_crc32(staging / name)}
        for name in static
    }
    return StoreMeta(
        behaviors=names,
        num_rows=num_rows,
        num_shards=manifest.num_shards,
        content_hash=manifest.content_hash(),
        dim=dim,
        embedder={"name": embedder.name, "params": embedder.params()},
        index={
            "factory": factory,
            "nprobe": default_nprobe(factory),
            "estimator_factory": estimator,
            "estimator_nprobe": default_nprobe(estimator),
        },
        affinity={
            "definition": AFFINITY_DEFINITION,
            "top_k": int(affinity_top_k),
            "probe_documents": {n: len(probes[n]) for n in names},
        },
        files=files,
    )


def _write_coarse_lists(
    path: Path, template: Any, num_rows: int, read_rows: Any, progress: Any,
    block_rows: int = 65_536,
) -> None:
    """Each row's ``COARSE_PROBES`` nearest IVF lists of the estimator's quantizer, so that kNN
    estimation can skip the coarse search (see ``KnnEstimator.search``)."""
    faiss = faiss_module()
    quantizer = faiss.extract_index_ivf(to_cpu(template)).quantizer
    probes = min(COARSE_PROBES, quantizer.ntotal)
    table = create_table(path, np.int32, (num_rows, probes))
    for start in range(0, num_rows, block_rows):
        stop = min(start + block_rows, num_rows)
        _, lists = quantizer.search(np.ascontiguousarray(read_rows(start, stop)), probes)
        table[start:stop] = lists
        progress(stop - start)
    table.flush()


def _check_against_corpus(
    read: ShardManifest, corpus: ShardManifest, corpus_path: Path | None
) -> None:
    """Refuse to build when the shards no longer hold what the corpus manifest says."""
    for path, expected, found in zip(corpus.shard_paths, corpus.counts, read.counts, strict=True):
        if expected != found:
            raise StoreError(f"{corpus_path}: lists {expected} samples in {path}, the shard holds "
                             f"{found}; rebuild the manifest")
    if not np.array_equal(read.key_hashes, corpus.key_hashes):
        raise StoreError(f"{corpus_path}: sample keys differ from the shards; rebuild the manifest")
