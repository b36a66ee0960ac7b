"""One rule for a sample's text everywhere: a sample whose text is in a ``.json`` member, or in a
``.text`` member, is trained on, indexed into the store, re-read on release and shown by
``curriculum store`` as the same text as a ``.txt`` sample."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from curriculum.cli import main
from curriculum.shards.documents import decode_text, read_sample
from curriculum.shards.writer import write_shards
from curriculum.store import BehaviorStore, build_store
from curriculum.synth import generate_documents, write_synthetic_corpus
from loaders.stream import PackedTextStream, StreamConfig

MEMBERS = ("json", "text", "txt")


def _write(out: Path, texts: list[str], members: tuple[str, ...]) -> None:
    samples = []
    for i, text in enumerate(texts):
        member = members[i % len(members)]
        value = json.dumps({"text": text}) if member == "json" else text
        samples.append({"__key__": f"doc-{i:04d}", member: value})
    write_shards(samples, out, max_docs_per_shard=20)


@pytest.fixture(scope="module")
def corpora(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str]]:
    """The same 60 texts as ``.json`` / ``.text`` / ``.txt`` members, and all as ``.txt``."""
    root = tmp_path_factory.mktemp("members")
    texts = [d.text for d in generate_documents(60, seed=3)]
    mixed, plain = root / "mixed", root / "plain"
    _write(mixed, texts, MEMBERS)
    _write(plain, texts, ("txt",))
    probes = write_synthetic_corpus(root / "probe-source", num_docs=8, num_shards=1, seed=3,
                                    probe_docs_per_behavior=8).probes_dir
    for corpus in (mixed, plain):
        shutil.copytree(probes, corpus / "probes")
    return mixed, plain, texts


def test_every_member_kind_decodes_to_the_text(corpora) -> None:
    mixed, _, texts = corpora
    store = build_store(str(mixed), mixed / "probes", mixed.parent / "mixed-store")
    for row, text in enumerate(texts):
        sample = read_sample(store.manifest, row)
        assert sample is not None and decode_text(sample.members) == text


def test_the_loader_trains_on_json_and_text_members(corpora) -> None:
    mixed, plain, _ = corpora
    config = StreamConfig(batch_size=2, seq_len=32, num_epochs=1, shuffle_shards=False)
    from curriculum.shards.manifest import manifest_for

    def tokens(corpus: Path) -> np.ndarray:
        stream = PackedTextStream(manifest_for(str(corpus)), config)
        batches = list(stream)
        assert stream.skips.total == 0
        return np.concatenate([b["input_ids"] for b in batches])

    assert np.array_equal(tokens(mixed), tokens(plain))


def test_the_store_indexes_json_and_text_members_as_their_text(corpora, tmp_path) -> None:
    mixed, plain, texts = corpora
    a = build_store(str(mixed), mixed / "probes", tmp_path / "a")
    b = build_store(str(plain), plain / "probes", tmp_path / "b")
    rows = np.arange(len(texts))
    assert np.abs(a.affinity(rows)).sum(axis=1).min() > 0  # an empty text has affinity 0
    assert np.array_equal(a.embeddings(rows), b.embeddings(rows))
    assert np.array_equal(a.affinity(rows), b.affinity(rows))


def test_the_store_command_shows_the_text_of_a_json_member(corpora, tmp_path, capsys) -> None:
    mixed, _, texts = corpora
    build_store(str(mixed), mixed / "probes", tmp_path / "s")
    BehaviorStore.open(tmp_path / "s")
    assert main(["store", str(tmp_path / "s"), "--row", "0"]) == 0  # row 0 is a .json sample
    shown = capsys.readouterr().out
    assert " ".join(texts[0].split())[:60] in shown
