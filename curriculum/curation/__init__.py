"""Pre-training data curation by principles: an LLM judge scores each document 0-100 against
user-defined principles; documents above a FILTER threshold are removed, those between the
REVISE and FILTER thresholds are rewritten, the rest pass unchanged; every row's fate goes to a
ledger, and the scores can go to the behavior store as ``assess.<principle>``.

Modules: :mod:`~.principles` (YAML), :mod:`~.judge` (protocol, spec strings) with
:mod:`~.openai_judge`, :mod:`~.hf_judge`, :mod:`~.probe_judge`; :mod:`~.scoring` (reading a
score), :mod:`~.cache` (resumability), :mod:`~.decide` (fates), :mod:`~.pipeline` (``curate``),
:mod:`~.store_scores`, :mod:`~.estimate` (``--dry-run``), :mod:`~.distill`.
"""

from curriculum.curation.judge import (
    Judge,
    JudgeError,
    JudgeItem,
    JudgeReply,
    JudgeSpec,
    make_judge,
)
from curriculum.curation.pipeline import CurationResult, curate
from curriculum.curation.principles import Principle, PrincipleError, load_principles
from curriculum.curation.scoring import Reading, read_score

__all__ = [
    "CurationResult",
    "Judge",
    "JudgeError",
    "JudgeItem",
    "JudgeReply",
    "JudgeSpec",
    "Principle",
    "PrincipleError",
    "Reading",
    "curate",
    "load_principles",
    "make_judge",
    "read_score",
]
