"""The synthetic behavior corpus: determinism, variety, category separation, label hygiene."""

from __future__ import annotations

import collections
import json
import re

import numpy as np

from curriculum.shards.manifest import ShardManifest
from curriculum.shards.tar_samples import iter_raw_samples
from curriculum.synth import BEHAVIORS, generate_documents, read_labels, write_synthetic_corpus


def test_same_seed_same_documents_and_other_seed_differs() -> None:
    first = [d.text for d in generate_documents(200, seed=3)]
    again = [d.text for d in generate_documents(200, seed=3)]
    other = [d.text for d in generate_documents(200, seed=4)]
    assert first == again
    assert sum(a != b for a, b in zip(first, other, strict=True)) > 190


def test_thousands_of_distinct_documents_in_every_category() -> None:
    docs = list(generate_documents(4000, seed=0))
    assert len({d.text for d in docs}) > 0.99 * len(docs)
    counts = collections.Counter(d.behavior for d in docs)
    assert set(counts) == set(BEHAVIORS)
    assert min(counts.values()) > 300


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def test_categories_are_separable_by_words() -> None:
    """A nearest-centroid bag-of-words classifier trained on one seed labels another seed's
    documents correctly, so the categories carry learnable signal."""
    train = list(generate_documents(1200, seed=1))
    test = list(generate_documents(400, seed=2))
    vocab = {w: i for i, w in enumerate(sorted({w for d in train for w in _words(d.text)}))}

    def vector(text: str) -> np.ndarray:
        v = np.zeros(len(vocab))
        for w in _words(text):
            if w in vocab:
                v[vocab[w]] += 1
        return v / max(1e-9, np.linalg.norm(v))

    centroids = {b: np.mean([vector(d.text) for d in train if d.behavior == b], axis=0)
                 for b in BEHAVIORS}
    correct = sum(max(BEHAVIORS, key=lambda b: vector(d.text) @ centroids[b]) == d.behavior
                  for d in test)
    assert correct / len(test) > 0.9


def test_labels_stay_out_of_the_shards(tmp_path) -> None:
    result = write_synthetic_corpus(tmp_path, num_docs=120, num_shards=2, seed=0,
                                    probe_docs_per_behavior=4)
    labels = read_labels(result.labels_path)
    assert len(labels) == 120
    manifest = ShardManifest.load(tmp_path)
    for path in manifest.shard_paths:
        for sample in iter_raw_samples(path):
            assert set(sample.members) == {"txt"}
            assert b"situational_awareness" not in sample.members["txt"]
    for behavior in BEHAVIORS:
        lines = (result.probes_dir / f"{behavior}.jsonl").read_text().splitlines()
        assert len(lines) == 4 and all("text" in json.loads(line) for line in lines)


def test_aligned_profile_has_no_situational_awareness_or_deception() -> None:
    counts = collections.Counter(d.behavior for d in generate_documents(1000, 0, "aligned"))
    assert counts["situational_awareness"] == 0 and counts["deception"] == 0
    assert counts["values"] > 600
