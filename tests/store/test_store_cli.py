"""``curriculum index`` and ``curriculum store`` end to end, through the real entry point."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from curriculum.cli import main
from curriculum.store import BehaviorStore, StoreReader
from curriculum.synth import write_synthetic_corpus


def test_index_then_inspect(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = write_synthetic_corpus(tmp_path / "corpus", num_docs=120, num_shards=2, seed=4,
                                    probe_docs_per_behavior=8)
    out = tmp_path / "store"
    code = main(["index", "--shards", str(corpus.out_dir / "shard-{000000..000001}.tar"),
                 "--probes", str(corpus.probes_dir), "--out", str(out),
                 "--embedder", "hashed:dim=128", "--index-factory", "IVF8,Flat"])
    assert code == 0
    captured = capsys.readouterr()
    assert "indexed 120 documents from 2 shards" in captured.out
    assert "index documents" in captured.err  # the progress bar
    reader = StoreReader(out)
    assert reader.dim == 128 and reader.meta.index["factory"] == "IVF8,Flat"

    store = BehaviorStore.open(out)
    assert isinstance(store, BehaviorStore)
    store.record_attribution([2], np.full((1, 4), 0.25))
    store.close()
    assert main(["store", str(out), "--row", "2", "--neighbors", "3"]) == 0
    shown = capsys.readouterr().out
    assert "row 2  key doc00000002" in shown
    assert "measured (n=1)" in shown and "estimated" not in shown
    assert shown.count("  row ") == 3  # three neighbours, never the row itself
    for behavior in reader.behaviors:
        assert behavior in shown

    assert main(["store", str(out), "--key", "doc00000100", "--neighbors", "0"]) == 0
    assert "row 100  key doc00000100" in capsys.readouterr().out

    assert main(["store", str(out), "--summary", "--verify"]) == 0
    summary = capsys.readouterr().out
    assert "rows 120  shards 2  behaviors 4  dim 128" in summary
    assert "measured rows (any behavior): 1 of 120" in summary
    assert "files match store.json" in summary


def test_bad_input_exits_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = write_synthetic_corpus(tmp_path / "corpus", num_docs=30, num_shards=1, seed=4,
                                    probe_docs_per_behavior=4)
    cases = [
        (["index", "--shards", str(tmp_path / "nothing-*.tar"), "--probes",
          str(corpus.probes_dir), "--out", str(tmp_path / "s")], "no shards match"),
        (["index", "--shards", str(corpus.out_dir), "--probes", str(corpus.probes_dir),
          "--out", str(tmp_path / "s"), "--embedder", "word2vec"], "unknown embedder 'word2vec'"),
        (["index", "--shards", str(corpus.out_dir), "--probes", str(corpus.probes_dir),
          "--out", str(tmp_path / "s"), "--embedder", "st:/no/such/model"],
         "sentence-transformers"),
        (["store", str(tmp_path / "missing"), "--summary"], "no such store directory"),
        (["store", str(corpus.out_dir), "--row", "0"], "store.json: missing"),
    ]
    for argv, cause in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert cause in err[-1], (argv, err)
        assert err[-1].startswith(f"curriculum {argv[0]}: error: ")
    assert not (tmp_path / "s").exists()
