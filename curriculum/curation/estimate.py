"""``--dry-run``: assess a sample, print what the thresholds would do, and what the whole corpus
would cost in tokens and time.

Extrapolation from the sample (documented, not a promise): tokens per assessment are the
judge's reported usage (or characters / 4 where it reports none); each document in a revise band
adds a revision (prompt + about its own length in completion) and, where asked, a re-assessment;
time scales the sample's wall-clock per document by the same request mix. A cached sample costs
nothing the second time, so time it on a cold cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from curriculum.curation.principles import Principle
from curriculum.curation.sampling import SampleAssessment

CHARS_PER_TOKEN = 4.0


@dataclass
class CostEstimate:
    """Counts on the sample and the extrapolation to ``corpus_rows``."""

    sample_rows: int
    corpus_rows: int
    fates: dict[str, dict[str, int]]
    """Per principle: filtered / revised / kept / unscored on the sample."""
    tokens_per_doc: float
    corpus_tokens: float
    corpus_seconds: float
    requests_per_doc: float

    def format(self) -> str:
        """The threshold table and the cost lines."""
        scale = self.corpus_rows / max(self.sample_rows, 1)
        head = f"{'principle':24s}{'filtered':>10s}{'revised':>10s}{'kept':>10s}{'unscored':>10s}"
        lines = [f"dry run on {self.sample_rows:,} of {self.corpus_rows:,} rows "
                 f"(counts on the sample; ~ corpus)", head]
        for name, counts in self.fates.items():
            cells = "".join(f"{counts[f]:>10,}" for f in ("filtered", "revised", "kept",
                                                          "unscored"))
            lines.append(f"{name:24s}{cells}")
            approx = "".join(f"{'~' + format(round(counts[f] * scale), ','):>10s}"
                             for f in ("filtered", "revised", "kept", "unscored"))
            lines.append(f"{'  (corpus)':24s}{approx}")
        lines.append(f"estimated cost for the corpus: {self.corpus_tokens:,.0f} tokens "
                     f"({self.tokens_per_doc:,.0f} per document, {self.requests_per_doc:.2f} "
                     f"requests per document), about {_duration(self.corpus_seconds)}")
        return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def estimate_cost(sample: SampleAssessment, principles: Sequence[Principle],
                  corpus_rows: int) -> CostEstimate:
    """Threshold counts on ``sample`` and the corpus cost extrapolated from it."""
    n = max(len(sample.rows), 1)
    fates: dict[str, dict[str, int]] = {}
    band_any = np.zeros(len(sample.rows), bool)
    reassess = np.zeros(len(sample.rows), np.int64)
    for j, principle in enumerate(principles):
        counts = {"filtered": 0, "revised": 0, "kept": 0, "unscored": 0}
        for i, score in enumerate(sample.scores[:, j].tolist()):
            fate = principle.fate_of(score)
            counts["revised" if fate == "revise" else fate] += 1
            if fate == "revise":
                band_any[i] = True
                reassess[i] += int(principle.reassess_revision)
        fates[principle.name] = counts
    counters = sample.counters
    reported = counters.prompt_tokens + counters.completion_tokens
    assess_tokens = reported / n if reported else float(
        sum(len(p.prompt) for p in principles) / CHARS_PER_TOKEN
        + sample.texts_chars.mean(initial=0) * len(principles) / CHARS_PER_TOKEN)
    doc_tokens = float(sample.texts_chars.mean()) / CHARS_PER_TOKEN if len(sample.rows) else 0.0
    per_assessment = assess_tokens / max(len(principles), 1)
    revise_tokens = float(band_any.mean()) * 2 * doc_tokens if len(sample.rows) else 0.0
    reassess_tokens = float(reassess.mean()) * per_assessment if len(sample.rows) else 0.0
    tokens_per_doc = assess_tokens + revise_tokens + reassess_tokens
    requests_per_doc = len(principles) + float(band_any.mean() + reassess.mean()) \
        if len(sample.rows) else float(len(principles))
    seconds_per_request = sample.wall_s / max(n * len(principles), 1)
    return CostEstimate(len(sample.rows), corpus_rows, fates, tokens_per_doc,
                        tokens_per_doc * corpus_rows,
                        seconds_per_request * requests_per_doc * corpus_rows, requests_per_doc)
