"""FAISS indexes over unit-norm embeddings (inner product = cosine similarity).

The index type is a FAISS factory string, chosen by size unless the user gives one:

- below ``flat_below`` vectors (1M by default): ``Flat``, exact search;
- up to 20M: ``IVF{nlist},Flat`` with ``nlist`` about ``2 * sqrt(n)`` (a power of two): few
  lists probed per query keep the coarse search the larger cost, so fewer lists are faster;
- beyond: ``IVF{nlist},PQ{dim/4}`` (32 bytes a vector at dimension 128).

The GPU build of FAISS is used for training, adding and searching when ``faiss.get_num_gpus()``
is positive; indexes are always saved in their CPU form. FAISS is imported inside functions:
DataLoader workers import this package's readers without ever loading FAISS (fork and OpenMP
do not mix).
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from curriculum.store.errors import StoreError
from curriculum.store.tables import temporary_path

#: The number of lists in an IVF factory string.
_IVF = re.compile(r"IVF(\d+)")


def choose_index_factory(num_vectors: int, dim: int, flat_below: int = 1_000_000) -> str:
    """The factory string for ``num_vectors`` vectors of dimension ``dim``."""
    if num_vectors < flat_below:
        return "Flat"
    nlist = 1 << max(6, min(16, round(math.log2(2 * math.sqrt(num_vectors)))))
    if num_vectors < 20_000_000:
        return f"IVF{nlist},Flat"
    pq = next(m for m in range(max(1, dim // 4), 0, -1) if dim % m == 0)
    return f"IVF{nlist},PQ{pq}"


def nlist_of(factory: str) -> int | None:
    """The number of IVF lists a factory string asks for, or None for non-IVF indexes."""
    match = _IVF.search(factory)
    return int(match.group(1)) if match else None


def default_nprobe(factory: str) -> int:
    """Lists probed per query before any tuning: ``nlist / 256`` (16 at 4096 lists), at least 8.

    Enough for recall@10 of about 0.9 even on weakly clustered embeddings (bench/); the
    estimator tunes its own value on the data (``KnnEstimator.tune_nprobe``).
    """
    nlist = nlist_of(factory)
    return 0 if nlist is None else min(nlist, max(8, nlist // 256))


def faiss_module() -> Any:
    """The ``faiss`` module (imported on first use, with a clear message when missing)."""
    try:
        import faiss
    except ImportError as error:
        raise ImportError("the behavior store needs FAISS: pip install faiss-cpu") from error
    return faiss


def gpus_available() -> bool:
    """Whether this FAISS build sees a GPU."""
    faiss = faiss_module()
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def to_search_device(index: Any) -> Any:
    """The index on all GPUs when there are any (and the index type supports it), else as is."""
    if not gpus_available():
        return index
    faiss = faiss_module()
    try:
        return faiss.index_cpu_to_all_gpus(index)
    except (RuntimeError, AttributeError):  # some index types have no GPU version
        return index


def to_cpu(index: Any) -> Any:
    """The CPU form of an index (for saving)."""
    faiss = faiss_module()
    if gpus_available() and hasattr(faiss, "index_gpu_to_cpu"):
        try:
            return faiss.index_gpu_to_cpu(index)
        except (RuntimeError, AttributeError, TypeError):
            return index
    return index


def set_nprobe(index: Any, nprobe: int) -> None:
    """Set the lists probed per query of an IVF index (CPU or GPU, wrapped or not)."""
    if nprobe <= 0:
        return
    faiss = faiss_module()
    space = faiss.GpuParameterSpace() if type(index).__name__.startswith("Gpu") else None
    space = space or faiss.ParameterSpace()
    with contextlib.suppress(RuntimeError):  # not an IVF index: nothing to set
        space.set_index_parameter(index, "nprobe", int(nprobe))


def new_index(factory: str, dim: int) -> Any:
    """An empty inner-product index from a factory string; a bad string raises StoreError."""
    faiss = faiss_module()
    try:
        return faiss.index_factory(int(dim), factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[-1] if str(error).strip() else "invalid"
        raise StoreError(f"index factory {factory!r}: {first}") from error


def train_index(
    factory: str,
    dim: int,
    num_vectors: int,
    read_rows: Callable[[int, int], np.ndarray],
    train_sample_per_list: int = 40,
    seed: int = 0,
) -> Any:
    """An empty index, trained when its type needs it, on the search device (GPU if any).

    ``read_rows(start, stop)`` returns the float32 vectors of rows ``[start, stop)``. Training
    uses a random sample of ``train_sample_per_list`` vectors per IVF list (FAISS wants at least
    39; k-means time grows with the sample and it dominates the build of large stores).
    """
    index = new_index(factory, dim)
    if index.is_trained:
        return to_search_device(index)
    nlist = nlist_of(factory) or 256
    if num_vectors < nlist:
        raise StoreError(
            f"index factory {factory!r}: {num_vectors} vectors cannot train {nlist} lists; "
            "use Flat or fewer lists"
        )
    sample_size = min(num_vectors, max(train_sample_per_list * nlist, 10_000))
    rng = np.random.default_rng(seed)
    sample_rows = np.sort(rng.choice(num_vectors, size=sample_size, replace=False))
    index = to_search_device(index)
    index.train(np.ascontiguousarray(_gather(read_rows, num_vectors, sample_rows), np.float32))
    return index


def build_index(
    factory: str,
    dim: int,
    num_vectors: int,
    read_rows: Callable[[int, int], np.ndarray],
    add_batch_rows: int = 65_536,
    progress: Callable[[int], None] | None = None,
) -> Any:
    """Train (when needed) and fill an index with ``num_vectors`` vectors; ids are row numbers
    (the order of adding). Comes back on the search device, with the default nprobe set."""
    index = train_index(factory, dim, num_vectors, read_rows)
    for start in range(0, num_vectors, add_batch_rows):
        stop = min(start + add_batch_rows, num_vectors)
        index.add(np.ascontiguousarray(read_rows(start, stop), dtype=np.float32))
        if progress is not None:
            progress(stop - start)
    set_nprobe(index, default_nprobe(factory))
    return index


def empty_copy(index: Any) -> Any:
    """A CPU copy of a trained index without its vectors (a template for another index)."""
    faiss = faiss_module()
    copy = faiss.clone_index(to_cpu(index))
    copy.reset()
    return copy


def _gather(
    read_rows: Callable[[int, int], np.ndarray], num_vectors: int, rows: np.ndarray
) -> np.ndarray:
    """Vectors of sorted ``rows``, read block by block (sequential reads of a memory map)."""
    parts = []
    block = 1 << 18
    for start in range(0, num_vectors, block):
        stop = min(start + block, num_vectors)
        inside = rows[(rows >= start) & (rows < stop)]
        if len(inside):
            parts.append(read_rows(start, stop)[inside - start])
    return np.concatenate(parts)


def save_index(index: Any, path: Path) -> None:
    """Write the CPU form of ``index`` atomically (temporary file, then rename)."""
    import os

    faiss = faiss_module()
    path = Path(path)
    temporary = temporary_path(path)
    faiss.write_index(to_cpu(index), str(temporary))
    os.replace(temporary, path)


def load_index(path: Path, dim: int, num_vectors: int, nprobe: int) -> Any:
    """Read an index and check it against the store; a damaged or wrong file raises StoreError."""
    faiss = faiss_module()
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"{path}: missing FAISS index")
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as error:
        lines = [line for line in str(error).splitlines() if line.strip()]
        cause = lines[-1].strip() if lines else "unreadable"
        raise StoreError(f"{path}: damaged FAISS index ({cause})") from error
    if index.d != dim or index.ntotal != num_vectors:
        raise StoreError(
            f"{path}: index holds {index.ntotal} vectors of dimension {index.d}, the store has "
            f"{num_vectors} rows of dimension {dim}"
        )
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise StoreError(f"{path}: index does not use inner product (metric {index.metric_type})")
    index = to_search_device(index)
    set_nprobe(index, nprobe)
    return index
