"""One batch contract: the streams yield the keys of curriculum.batch.Batch, IGNORE_INDEX is
defined once (and -100 written nowhere else), and decisions and ledger fates share one
numbering."""

from __future__ import annotations

import re
from pathlib import Path

from curriculum.batch import BATCH_KEYS, IGNORE_INDEX
from curriculum.ledger import Fate
from curriculum.shards.manifest import manifest_for
from loaders.stream import PackedTextStream, StreamConfig
from policies.decisions import DEFER, DROP, EMIT, KIND_NAMES

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("curriculum", "loaders", "policies", "train")


def test_a_stream_batch_has_the_typed_keys(small_corpus) -> None:
    stream = PackedTextStream(manifest_for(str(small_corpus.out_dir)),
                              StreamConfig(batch_size=2, seq_len=2048, packing="pad"))
    batch = next(iter(stream))
    assert set(BATCH_KEYS) <= set(batch) and set(batch) - set(BATCH_KEYS) == {"skipped_rows"}
    assert (batch["labels"] == IGNORE_INDEX).any()  # padding


def test_ignore_index_is_defined_once_and_never_written_as_a_number() -> None:
    definitions, literals = [], []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for number, line in enumerate(path.read_text().splitlines(), start=1):
                code = line.split("#")[0]
                if re.match(r"\s*IGNORE_INDEX\s*=", code):
                    definitions.append(f"{path.relative_to(ROOT)}:{number}")
                elif re.search(r"(?<![\w.])-100\b", code) and '"""' not in code and "``" not in code:
                    literals.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert len(definitions) == 1 and definitions[0].startswith("curriculum/batch.py"), definitions
    assert not literals, literals


def test_decisions_and_fates_number_the_same_ideas_the_same() -> None:
    assert (EMIT, DEFER, DROP) == (Fate.EMIT, Fate.DEFER, Fate.DROP)
    assert KIND_NAMES == {Fate.EMIT: "emit", Fate.DEFER: "defer", Fate.DROP: "drop"}
