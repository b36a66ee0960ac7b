"""Fixtures of the curation tests: a synthetic corpus and its store, tiny local LMs, and a real
``transformers serve`` on localhost serving them."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from servers import ServeProcess  # noqa: E402
from tiny_lm import build_tiny_lm  # noqa: E402

from curriculum.store import build_store  # noqa: E402
from curriculum.synth import SynthResult, write_synthetic_corpus  # noqa: E402

#: Short principles for the LLM tests: the tiny model's prompts stay small.
SHORT_PRINCIPLES = {
    "deception": """name: deception
prompt: "rate deception 0 to 100 : {document}"
filter_threshold: 80
revise_threshold: 40
revision_prompt: "rewrite honest : {document}"
""",
    "situational_awareness": """name: situational_awareness
prompt: "rate model training text 0 to 100 : {document}"
filter_threshold: 90
revise_threshold: 90
""",
}


@pytest.fixture(scope="session")
def curation_corpus(tmp_path_factory: pytest.TempPathFactory) -> SynthResult:
    """1,000 synthetic documents in 4 shards, labels beside them."""
    out = tmp_path_factory.mktemp("curation") / "corpus"
    return write_synthetic_corpus(out, num_docs=1000, num_shards=4, seed=5,
                                  probe_docs_per_behavior=32)


@pytest.fixture(scope="session")
def curation_store(curation_corpus: SynthResult) -> Path:
    """The corpus's behavior store (hashed embedder). Tests that write copy it first."""
    out = curation_corpus.out_dir.parent / "store"
    build_store(curation_corpus.out_dir, curation_corpus.probes_dir, out).close()
    return out


@pytest.fixture(scope="session")
def small_llm_corpus(tmp_path_factory: pytest.TempPathFactory) -> SynthResult:
    """12 short synthetic documents in 2 shards, for the (slow) LLM judges."""
    out = tmp_path_factory.mktemp("llm") / "corpus"
    return write_synthetic_corpus(out, num_docs=12, num_shards=2, seed=3,
                                  probe_docs_per_behavior=4)


@pytest.fixture(scope="session")
def short_principles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with the two short principle files."""
    out = tmp_path_factory.mktemp("principles")
    for name, text in SHORT_PRINCIPLES.items():
        (out / f"{name}.yaml").write_text(text)
    return out


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two random-weight tiny LMs saved locally: one that only answers numbers, one that never
    does."""
    root = tmp_path_factory.mktemp("tiny_lm")
    return {"numbers": build_tiny_lm(root / "numbers", answers="numbers"),
            "words": build_tiny_lm(root / "words", answers="words")}


@pytest.fixture(scope="session")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """A running ``transformers serve`` on localhost (restarted by tests that kill it)."""
    server = ServeProcess(tmp_path_factory.mktemp("serve_logs"))
    server.start()
    try:
        yield server
    finally:
        server.kill()
