"""Trap documents: generic sentence planting, and trap corpora from ``curriculum synth``."""

from __future__ import annotations

import collections
import random

import pytest

from curriculum.cli import main
from curriculum.synth import generate_documents, read_labels
from curriculum.traps import TrapSpec, parse_trap_guests, plant_sentences, split_sentences


def test_planting_keeps_every_host_sentence_in_order_and_adds_guest_sentences() -> None:
    host = "One is here. Two follows! Three ends? Four closes."
    guest = "Alpha speaks. Beta answers. Gamma leaves."
    rng = random.Random(0)
    for count in (1, 2, 3, 5):
        mixed = split_sentences(plant_sentences(host, guest, count, rng))
        planted = [s for s in mixed if s in split_sentences(guest)]
        assert [s for s in mixed if s not in planted] == split_sentences(host)
        assert len(planted) == min(count, 3)
        assert planted == sorted(planted, key=split_sentences(guest).index)
    assert plant_sentences(host, "", 2, rng) == host


def test_trap_corpus_labels_traps_and_leaves_the_other_documents_alone() -> None:
    clean = list(generate_documents(600, seed=4))
    trapped = list(generate_documents(600, seed=4, traps=TrapSpec(0.2)))
    counts = collections.Counter(d.behavior for d in trapped)
    traps = [d for d in trapped if d.behavior.startswith("trap_")]
    assert set(counts) >= {"trap_situational_awareness", "trap_deception"}
    assert 0.14 < len(traps) / len(trapped) < 0.26
    for before, after in zip(clean, trapped, strict=True):
        if not after.behavior.startswith("trap_"):
            assert before == after
    for trap in traps:
        sentences = split_sentences(trap.text)
        assert 4 <= len(sentences) <= 10


def test_synth_command_writes_trap_labels_and_refuses_bad_shares(tmp_path, capsys) -> None:
    out = tmp_path / "corpus"
    assert main(["synth", str(out), "--docs", "200", "--shards", "1", "--trap-share", "0.3",
                 "--trap-guests", "situational_awareness"]) == 0
    labels = collections.Counter(read_labels(out / "labels.csv").values())
    assert labels["trap_situational_awareness"] > 30 and "trap_deception" not in labels
    assert not (out / "probes" / "trap_situational_awareness.jsonl").exists()
    with pytest.raises(SystemExit, match="trap share"):
        main(["synth", str(tmp_path / "x"), "--trap-share", "1.5"])
    with pytest.raises(ValueError, match="NAME:SHARE"):
        parse_trap_guests("situational_awareness:lots")
