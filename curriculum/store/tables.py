"""Memory-mapped ``.npy`` tables: atomic writes, streamed writes, and validated opening.

Every table of the store is a plain ``.npy`` file, so ``np.load(path, mmap_mode="r")`` works on
it outside the library too. Static tables are written to a temporary name and renamed into place
(``os.replace`` is atomic on POSIX), so a crash leaves either the old file or the new one, never
half of one. Tables whose length is not known in advance (the embeddings, written while shards
are read) are streamed by :class:`NpyStreamWriter`, which fixes the header once the row count is
known.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np

from curriculum.store.errors import StoreError

#: Bytes reserved for the header of a streamed ``.npy`` (a multiple of 64, as the format wants).
_STREAM_HEADER_BYTES = 256


def temporary_path(path: Path) -> Path:
    """A sibling name for writing ``path`` before the rename (same directory, same filesystem)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def fsync_directory(directory: Path) -> None:
    """Make renames inside ``directory`` durable (best effort: not every filesystem allows it)."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def save_atomic(path: Path, array: np.ndarray) -> None:
    """Write ``array`` to ``path`` as ``.npy``: temporary file, fsync, rename."""
    path = Path(path)
    temporary = temporary_path(path)
    with open(temporary, "wb") as handle:
        np.save(handle, np.ascontiguousarray(array), allow_pickle=False)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``: temporary file, fsync, rename."""
    path = Path(path)
    temporary = temporary_path(path)
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def create_table(path: Path, dtype: np.dtype | str, shape: tuple[int, ...]) -> np.memmap:
    """A new zero-filled table, memory-mapped read-write (the file is sparse until written)."""
    return np.lib.format.open_memmap(Path(path), mode="w+", dtype=np.dtype(dtype), shape=shape)


def _npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
              "shape": tuple(shape)}
    text = repr(header).encode("latin1")
    prefix = b"\x93NUMPY\x01\x00"
    padding = _STREAM_HEADER_BYTES - len(prefix) - 2 - len(text) - 1
    if padding < 0:
        raise ValueError(f"shape {shape} does not fit a {_STREAM_HEADER_BYTES}-byte header")
    body = text + b" " * padding + b"\n"
    return prefix + len(body).to_bytes(2, "little") + body


class NpyStreamWriter:
    """Append rows to a ``.npy`` whose row count is only known at the end.

    Rows go to a temporary file after a reserved header; :meth:`close` writes the real header
    and renames the file into place. Nothing appears under the final name unless ``close`` ran.
    """

    def __init__(self, path: Path, dtype: np.dtype | str, row_shape: tuple[int, ...]) -> None:
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self.row_shape = tuple(row_shape)
        self.rows = 0
        self._temporary = temporary_path(self.path)
        self._handle = open(self._temporary, "wb")  # noqa: SIM115 (open until close/abort)
        self._handle.write(b"\0" * _STREAM_HEADER_BYTES)

    def append(self, rows: np.ndarray) -> None:
        """Append a block of rows (shape ``(n, *row_shape)``)."""
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.shape[1:] != self.row_shape:
            raise ValueError(f"{self.path.name}: rows of shape {rows.shape[1:]}, "
                             f"expected {self.row_shape}")
        self._handle.write(rows.tobytes())
        self.rows += len(rows)

    def close(self) -> None:
        """Write the header for the final row count and rename into place."""
        self._handle.seek(0)
        self._handle.write(_npy_header(self.dtype, (self.rows, *self.row_shape)))
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        os.replace(self._temporary, self.path)

    def abort(self) -> None:
        """Drop the temporary file."""
        self._handle.close()
        self._temporary.unlink(missing_ok=True)


def open_table(
    path: Path,
    dtype: np.dtype | str,
    shape: tuple[int, ...],
    writable: bool = False,
) -> np.ndarray:
    """Memory-map a table and check its dtype and shape; a damaged or wrong file raises
    :class:`StoreError` naming the file and the cause."""
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"{path}: missing table")
    try:
        # A zero-row table cannot be memory-mapped; it is read instead (it holds nothing).
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            header_shape, _, header_dtype = read_header(handle)
        if 0 in header_shape:
            table = np.load(path, allow_pickle=False)
        else:
            table = np.load(path, mmap_mode="r+" if writable else "r", allow_pickle=False)
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        cause = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise StoreError(f"{path}: damaged table ({cause})") from error
    if header_dtype != np.dtype(dtype) or tuple(table.shape) != tuple(shape):
        raise StoreError(
            f"{path}: table is {header_dtype}{tuple(table.shape)}, the store expects "
            f"{np.dtype(dtype)}{tuple(shape)}"
        )
    return table


def file_crc32(path: Path, chunk_bytes: int = 1 << 24) -> int:
    """CRC-32 of a whole file (streamed)."""
    crc = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            crc = zlib.crc32(chunk, crc)
    return crc
