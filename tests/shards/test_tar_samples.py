"""Samples of a shard, read fast, are exactly what the ``tarfile``-only reader gives.

:func:`curriculum.shards.tar_samples.iter_raw_samples` reads members with the fast reader and hands over to
``tarfile`` mid-shard when the archive turns unusual. Whatever the damage and wherever a resumed
read starts, the samples (ordinals, keys, offsets, member bytes), the :class:`ShardReadReport` and
any exception must equal those of the reader that used ``tarfile`` alone (``tarfile_samples``).
"""

from __future__ import annotations

import gzip
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tar_archives import (
    BLOCK,
    END,
    fix_checksum,
    has_gnu_tar,
    header_block,
    header_offsets,
    padded,
    python_tar,
    tar_command_archive,
    tarfile_samples,
    webdataset_shard,
)

from curriculum.shards.tar_samples import ShardReadReport, iter_raw_samples

SAMPLES = [
    {"__key__": "doc0", "txt": "first document", "json": {"text": "first"}},
    {"__key__": "doc1", "txt": b"\xff not utf-8"},
    {"__key__": "doc2", "txt": "x" * BLOCK, "cls": 3},
    {"__key__": "doc3", "json": {"text": "json only"}},
    {"__key__": "k" * 130, "txt": "a key longer than a ustar name field"},
    {"__key__": "doc5", "txt": "last " * 300},
]


def _read(reader, path: Path, ordinal: int, offset: int) -> tuple[list, tuple, str | None]:
    report = ShardReadReport(str(path))
    samples = []
    try:
        for sample in reader(path, ordinal, offset, report):
            samples.append(sample)
    except Exception as error:  # tarfile raises ValueError on a few damaged archives
        return samples, (report.truncated, report.error), f"{type(error).__name__}: {error}"
    return samples, (report.truncated, report.error), None


def assert_samples_agree(path: Path, ordinal: int = 0, offset: int = 0) -> list:
    """Fast and tarfile-only readers agree from (ordinal, offset); returns the samples."""
    expected = _read(tarfile_samples, path, ordinal, offset)
    got = _read(iter_raw_samples, path, ordinal, offset)
    assert got == expected
    return got[0]


def _boundaries(path: Path) -> list[tuple[int, int]]:
    """(ordinal, offset) of every sample a tarfile-only pass finds: where a resume may start."""
    return [(s.ordinal, s.offset_bytes) for s in tarfile_samples(path)]


def _write(directory: Path, data: bytes, name: str = "shard.tar") -> Path:
    path = directory / name
    path.write_bytes(data)
    return path


def test_webdataset_shard_from_the_start_and_from_every_sample(tmp_path: Path) -> None:
    path = _write(tmp_path, webdataset_shard(SAMPLES))
    samples = assert_samples_agree(path)
    assert [s.key for s in samples] == ["doc0", "doc1", "doc2", "doc3", "k" * 130, "doc5"]
    assert samples[0].members == {"txt": b"first document", "json": b'{"text": "first"}'}
    for ordinal, offset in _boundaries(path):
        resumed = assert_samples_agree(path, ordinal, offset)
        assert resumed == samples[ordinal:]


def test_truncated_at_every_kind_of_cut_point(tmp_path: Path) -> None:
    data = webdataset_shard(SAMPLES[:4])
    boundaries = _boundaries(_write(tmp_path, data, "whole.tar"))
    end = max(header_offsets(data)) + 3 * BLOCK
    cuts = sorted({*range(0, end, 97)} | {b + d for b in range(0, end, BLOCK) for d in (-1, 0, 1)})
    for cut in cuts:
        path = _write(tmp_path, data[:max(cut, 0)])
        for ordinal, offset in [(0, 0), *boundaries[1:3]]:
            assert_samples_agree(path, ordinal, offset)


def test_damage_mid_shard_ends_the_shard_quietly_as_tarfile_does(tmp_path: Path) -> None:
    # tarfile ends a stream quietly at a bad header, unless the bad header is the stream's first;
    # a reader that restarted tarfile at the damaged header would report a truncated shard.
    data = bytearray(webdataset_shard(SAMPLES))
    third = _boundaries(_write(tmp_path, bytes(data)))[2][1]
    data[third + 5] ^= 0x01
    path = _write(tmp_path, bytes(data))
    samples = assert_samples_agree(path)
    assert len(samples) == 2
    report = ShardReadReport(str(path))
    list(iter_raw_samples(path, report=report))
    assert not report.truncated
    # Started right at the damage, tarfile does report it.
    assert _read(iter_raw_samples, path, 2, third)[1][0]


def test_a_pax_record_tarfile_rejects_with_value_error_ends_the_shard_as_truncated(
        tmp_path: Path) -> None:
    """``tarfile`` raises ValueError (not a TarError) on a non-numeric ``GNU.sparse.size``: the
    shard is reported truncated after its complete samples, and the loader skips the rest with a
    reason instead of crashing its worker."""
    from tar_archives import pax_record, raw_pax_member

    from curriculum.shards.documents import Document, Skipped, iter_documents

    good = b"".join(raw_pax_member(pax_record(b"mtime", b"1700000000"), f"doc{i}.txt", b"text")
                    for i in range(2))
    bad = raw_pax_member(pax_record(b"GNU.sparse.size", b"abc"), "doc9.txt", b"lost")
    path = _write(tmp_path, good + bad + END)
    report = ShardReadReport(str(path))
    samples = list(iter_raw_samples(path, report=report))
    # doc1 was still open when the error came (more of its members could have followed).
    assert [s.key for s in samples] == ["doc0"]
    assert report.truncated and report.error.startswith("ValueError")
    items = list(iter_documents(str(path), first_row=10, expected_count=3))
    assert isinstance(items[0], Document) and items[0].row == 10
    assert [(type(i), i.row, i.reason) for i in items[1:]] == [
        (Skipped, 11, "truncated tar"), (Skipped, 12, "truncated tar")]


def test_damaged_bytes_with_and_without_a_valid_checksum(tmp_path: Path) -> None:
    data = webdataset_shard(SAMPLES[:4])
    boundaries = _boundaries(_write(tmp_path, data))
    headers = header_offsets(data)
    positions = [p for h in headers[2:6] for p in (h, h + 1, h + 100, h + 124, h + 130, h + 135,
                                                    h + 148, h + 156, h + 345)]
    positions += [headers[3] + BLOCK + d for d in (0, 5, 11)]  # member data
    for position in positions:
        for value in (0x00, 0x31, 0x78, 0xFF):
            damaged = bytearray(data)
            damaged[position] = value
            header = position - position % BLOCK
            for fix in (False, True):
                if fix:
                    damaged[header:header + BLOCK] = fix_checksum(damaged[header:header + BLOCK])
                path = _write(tmp_path, bytes(damaged))
                for ordinal, offset in [(0, 0), *boundaries[1:3]]:
                    assert_samples_agree(path, ordinal, offset)


@pytest.mark.skipif(not has_gnu_tar(), reason="needs GNU tar")
@pytest.mark.parametrize(("format", "long_names"), [("gnu", True), ("pax", True), ("ustar", True),
                                                    ("v7", False)])
def test_tar_command_archives(tmp_path: Path, format: str, long_names: bool) -> None:
    # GNU long names hand over to tarfile mid-shard; every resume point must agree as well.
    path = _write(tmp_path, tar_command_archive(tmp_path, format, long_names))
    samples = assert_samples_agree(path)
    assert {"./docs/sample0", "./docs/empty", "./docs/block"} <= {s.key for s in samples}
    for ordinal, offset in _boundaries(path):
        assert_samples_agree(path, ordinal, offset)


def test_files_that_are_not_tar_archives(tmp_path: Path) -> None:
    good = webdataset_shard(SAMPLES[:2])
    cases = {
        "empty.tar": b"",
        "zeros.tar": END,
        "gzip.tar": gzip.compress(good),
        "text.tar": b"this is not a tar archive\n" * 100,
        "header-only.tar": bytes(header_block("a.txt", 700)),
        "no-end-marker.tar": bytes(header_block("a.txt", 3)) + padded(b"abc"),
    }
    for name, data in cases.items():
        path = _write(tmp_path, data, name)
        assert_samples_agree(path)
    path = _write(tmp_path, good)
    for offset in (len(good) - BLOCK, len(good), len(good) + 5 * BLOCK):  # resume at/after the end
        assert_samples_agree(path, 7, offset)


def test_closing_a_reader_early_releases_the_shard(tmp_path: Path) -> None:
    path = _write(tmp_path, webdataset_shard(SAMPLES))
    open_files = len(os.listdir("/proc/self/fd"))
    for _ in range(50):  # how the defer spool re-reads one sample
        reader = iter_raw_samples(path, 1, _boundaries(path)[1][1])
        assert next(reader).key == "doc1"
        reader.close()
    assert len(os.listdir("/proc/self/fd")) == open_files


def _mapped_file_mb() -> float | None:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1]) / 1024
    return None


@pytest.mark.skipif(not Path("/proc/self/status").exists() or _mapped_file_mb() is None,
                    reason="needs Linux /proc RssFile")
def test_resident_memory_stays_flat_over_a_large_shard(tmp_path: Path) -> None:
    members = [(f"k{i:03d}.bin", bytes([i]) * (1 << 20)) for i in range(96)]
    path = _write(tmp_path, python_tar(members))
    before = _mapped_file_mb()
    peak = 0.0
    for sample in iter_raw_samples(path):
        assert sample.members["bin"][:1] == bytes([sample.ordinal])
        peak = max(peak, _mapped_file_mb() - before)
    assert peak < 40  # of a 96 MB shard: read pages are handed back as the reader goes


_KEYS = st.sampled_from(["doc", "a/b", "k" * 120, "ünï", "x.y", "sub/", "z"])
_MEMBERS = st.dictionaries(st.sampled_from(["txt", "json", "cls", "TXT", "seg.txt"]),
                           st.binary(max_size=700), min_size=1, max_size=3)


@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(samples=st.lists(st.tuples(_KEYS, _MEMBERS), min_size=1, max_size=5),
       mutation=st.sampled_from(["none", "cut", "byte", "byte+checksum"]),
       where=st.floats(0, 1, exclude_max=True), value=st.integers(0, 255),
       start=st.integers(0, 6))
def test_random_shards_and_damage(samples: list[tuple[str, dict[str, bytes]]], mutation: str,
                                  where: float, value: int, start: int) -> None:
    # Repeated keys make consecutive samples merge, as webdataset groups them.
    data = webdataset_shard([{"__key__": f"{key}{i % 2}", **members}
                             for i, (key, members) in enumerate(samples)])
    position = int(where * (max(header_offsets(data)) + 3 * BLOCK))
    damaged = bytearray(data)
    if mutation == "cut":
        damaged = damaged[:position]
    elif mutation.startswith("byte"):
        damaged[position] = value
        if mutation == "byte+checksum":
            header = position - position % BLOCK
            damaged[header:header + BLOCK] = fix_checksum(damaged[header:header + BLOCK])
    with tempfile.TemporaryDirectory() as tmp:
        boundaries = _boundaries(_write(Path(tmp), data))
        ordinal, offset = [(0, 0), *boundaries][start % (len(boundaries) + 1)]
        assert_samples_agree(_write(Path(tmp), bytes(damaged)), ordinal, offset)
