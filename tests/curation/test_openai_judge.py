"""The openai: judge against a real OpenAI-compatible server: ``transformers serve`` on
localhost, serving tiny random-weight LMs the tests build and save locally (no download)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from curriculum.curation import curate, load_principles, make_judge
from curriculum.curation.records import load_rows
from curriculum.ledger import check_ledger, read_ledger
from curriculum.synth import SynthResult


def judge_for(serve, model: Path, concurrency: int = 4, **kwargs):
    return make_judge(f"openai:{serve.base_url}", model=str(model), concurrency=concurrency,
                      timeout_s=30, max_retries=1, score_attempts=2, max_revision_tokens=12,
                      **kwargs)


def test_concurrent_curation(serve, tiny_models, small_llm_corpus: SynthResult,
                             short_principles: Path, tmp_path: Path) -> None:
    principles = load_principles(short_principles)
    judge = judge_for(serve, tiny_models["numbers"], concurrency=4)
    result = curate(small_llm_corpus.out_dir, principles, judge, tmp_path / "out")
    counts = result.counts
    assert counts.rows == 12 and counts.balanced()
    assert counts.total["unscored"] == 0  # the model answers numbers only: all readable
    assert judge.max_in_flight == 4  # requests really overlapped, and never more than 4
    assert judge.requests_sent == result.judge.requests >= 24
    assert check_ledger(tmp_path / "out").ok
    scores = load_rows(tmp_path / "out" / "curation" / "rows.npz")["scores"]
    assert np.isfinite(scores).all() and ((scores >= 0) & (scores <= 100)).all()
    # A rerun is answered from the cache alone and writes the same records.
    again = judge_for(serve, tiny_models["numbers"])
    rerun = curate(small_llm_corpus.out_dir, principles, again, tmp_path / "out")
    assert again.requests_sent == 0 and rerun.judge.cached == result.judge.requests
    assert rerun.counts.to_dict() == counts.to_dict()


def test_answers_that_are_not_numbers_are_unscored(serve, tiny_models,
                                                   small_llm_corpus: SynthResult,
                                                   short_principles: Path,
                                                   tmp_path: Path) -> None:
    principles = load_principles(short_principles)
    judge = judge_for(serve, tiny_models["words"], concurrency=4)
    result = curate(small_llm_corpus.out_dir, principles, judge, tmp_path / "out", limit=6)
    assert result.counts.total == {"kept": 0, "revised": 0, "filtered": 0, "unscored": 6}
    assert result.counts.balanced() and result.output_docs == 0
    assert judge.requests_sent == 6 * 2 * 2  # each answer asked twice before giving up
    reasons = {e.reason for e in read_ledger(tmp_path / "out") if e.row >= 0}
    assert len(reasons) == 1
    (reason,) = reasons
    assert reason == "unscored: deception: unreadable after 2 attempts: no number in the answer"
    assert check_ledger(tmp_path / "out").ok


def _arguments(corpus: SynthResult, principles: Path, serve, model: Path, out: Path) -> list[str]:
    return ["curate", "--shards", str(corpus.out_dir), "--principles", str(principles),
            "--judge", f"openai:{serve.base_url}", "--judge-model", str(model), "--out", str(out),
            "--concurrency", "2", "--max-retries", "1", "--timeout-s", "20",
            "--max-revision-tokens", "12", "--score-attempts", "2", "--limit", "8"]


def _outputs(out: Path) -> dict[str, bytes]:
    names = [p for p in sorted(out.rglob("*")) if p.is_file() and "cache" not in p.parts
             and p.name != "curation.json"]
    return {str(p.relative_to(out)): p.read_bytes() for p in names}


def test_server_killed_mid_run_then_resumed(serve, tiny_models, small_llm_corpus: SynthResult,
                                            short_principles: Path, tmp_path: Path,
                                            capsys) -> None:
    from curriculum.cli import main

    model = tiny_models["numbers"]
    reference = tmp_path / "reference"  # the same job, never interrupted
    curate(small_llm_corpus.out_dir, load_principles(short_principles),
           judge_for(serve, model, concurrency=2), reference, limit=8)

    # The command line job runs in a thread (as it would in its own process) while the server
    # is killed under it.
    out = tmp_path / "killed"
    codes: list[int] = []
    job = threading.Thread(target=lambda: codes.append(main(
        _arguments(small_llm_corpus, short_principles, serve, model, out))))
    cache = out / "cache" / "responses.jsonl"
    job.start()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and job.is_alive():
            if cache.exists() and cache.read_bytes().count(b"\n") >= 6:
                break
            time.sleep(0.05)
        assert job.is_alive(), "the job ended before the server could be killed"
        serve.kill()
        job.join(timeout=120)
    finally:
        if serve.process is None:
            serve.start()
    assert codes == [2]
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"curriculum curate: error: judge server {serve.base_url} "
                           "unreachable after 2 attempts"), last
    answered = cache.read_bytes().count(b"\n")
    total = (reference / "cache" / "responses.jsonl").read_bytes().count(b"\n")
    assert 6 <= answered < total  # the cache kept what arrived before the kill

    assert main(_arguments(small_llm_corpus, short_principles, serve, model, out)) == 0
    assert f"cached {answered:,}" in capsys.readouterr().out  # only the rest was asked
    assert _outputs(out) == _outputs(reference)  # shards, manifest, ledger, records: same bytes
    assert check_ledger(out).ok


def test_dry_run_estimates_cost(serve, tiny_models, small_llm_corpus: SynthResult,
                                short_principles: Path, tmp_path: Path, capsys) -> None:
    from curriculum.cli import main

    code = main(["curate", "--shards", str(small_llm_corpus.out_dir), "--principles",
                 str(short_principles), "--judge", f"openai:{serve.base_url}", "--judge-model",
                 str(tiny_models["numbers"]), "--out", str(tmp_path / "out"), "--dry-run",
                 "--sample", "4", "--concurrency", "4"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "dry run on 4 of 12 rows" in printed
    assert "tokens (" in printed and "requests per document" in printed
    assert not (tmp_path / "out" / "shards").exists()
    cached = (tmp_path / "out" / "cache" / "responses.jsonl").read_bytes().count(b"\n")
    assert cached == 4 * 2  # the real run will reuse these
