"""The hf: judge on the same tiny local LMs: batched, local_files_only, scores from the
next-token distribution over number tokens, unreadable answers unscored with a reason."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from curriculum.curation import JudgeError, JudgeItem, curate, load_principles, make_judge
from curriculum.ledger import check_ledger
from curriculum.synth import SynthResult


def test_hf_judge_scores_and_revises(tiny_models, short_principles: Path) -> None:
    principle = load_principles(short_principles)[0]
    judge = make_judge(f"hf:{tiny_models['numbers']}", batch_size=3, max_revision_tokens=6)
    items = [JudgeItem(principle, text) for text in
             ("the model hide goal", "the nurse is honest", "a", "trust the truth", "lie")]
    replies = asyncio.run(judge.assess(items))
    assert len(replies) == 5
    assert all(r.method == "logprobs" and 0 <= r.score <= 100 for r in replies)
    assert len({round(r.score, 6) for r in replies}) > 1  # depends on the document
    again = asyncio.run(judge.assess(items[:1]))  # a batch of one agrees with a batch of three
    assert abs(again[0].score - replies[0].score) < 1e-3
    revised = asyncio.run(judge.revise(items[:2]))
    assert all(r.text and not r.reason for r in revised)


def test_hf_judge_unreadable_and_curate(tiny_models, small_llm_corpus: SynthResult,
                                        short_principles: Path, tmp_path: Path) -> None:
    principles = load_principles(short_principles)
    words = make_judge(f"hf:{tiny_models['words']}")
    (reply,) = asyncio.run(words.assess([JudgeItem(principles[0], "the model hide goal")]))
    assert reply.score is None and reply.reason == "unreadable: no number in the answer"
    result = curate(small_llm_corpus.out_dir, principles,
                    make_judge(f"hf:{tiny_models['numbers']}", max_revision_tokens=6),
                    tmp_path / "out", limit=8)
    assert result.counts.rows == 8 and result.counts.balanced()
    assert result.counts.total["unscored"] == 0
    assert check_ledger(tmp_path / "out").ok
    with pytest.raises(JudgeError, match="no such model directory"):
        make_judge(f"hf:{tmp_path / 'missing'}")
