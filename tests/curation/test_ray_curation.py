"""``curriculum curate --engine ray`` writes what the local engine writes, on a real local Ray
with 2 CPUs: with the probe judge (revisions included) and with an OpenAI-compatible server
(``transformers serve``), whose replies reach the same response cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from curriculum.cli import main
from curriculum.curation import JudgeError, JudgeSpec, curate, load_principles
from curriculum.ledger import check_ledger
from curriculum.synth import SynthResult

ray = pytest.importorskip("ray")

REPO = Path(__file__).resolve().parents[2]
PRINCIPLES = REPO / "configs" / "principles"


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=100 * 1024 * 1024)
    yield
    ray.shutdown()


def _outputs(out: Path) -> dict[str, bytes]:
    """Every output file but the summary (compared apart: it holds request counts)."""
    files = {}
    for path in sorted(out.rglob("*")):
        relative = path.relative_to(out).as_posix()
        if path.is_file() and relative != "curation.json" and not relative.startswith("cache/"):
            files[relative] = path.read_bytes()
    return files


def _summary(out: Path) -> dict:
    record = json.loads((out / "curation.json").read_text())
    return {k: v for k, v in record.items() if k not in ("judge_requests", "cached_replies")}


def test_ray_curation_writes_what_the_local_engine_writes(curation_corpus: SynthResult,
                                                          curation_store: Path, tmp_path: Path,
                                                          local_ray) -> None:
    principles = load_principles(PRINCIPLES)
    spec = JudgeSpec(f"probe:{curation_store}", batch_size=96)  # chunks straddle shards
    local = curate(curation_corpus.out_dir, principles, spec, tmp_path / "local")
    distributed = curate(curation_corpus.out_dir, principles, spec, tmp_path / "ray",
                         engine="ray", chunks_in_flight=2)
    assert distributed.extra["engine"] == "ray (2 workers)"
    assert local.counts.total["revised"] > 0 and local.counts.total["filtered"] > 0
    assert local.counts.to_dict() == distributed.counts.to_dict()
    first, second = _outputs(tmp_path / "local"), _outputs(tmp_path / "ray")
    assert len(first) > 5 and sorted(first) == sorted(second)
    assert [name for name in first if first[name] != second[name]] == []
    assert _summary(tmp_path / "local") == _summary(tmp_path / "ray")
    assert not (tmp_path / "ray" / "cache").exists()  # the probe judge is not cached
    assert check_ledger(tmp_path / "ray").ok


def test_ray_engine_refuses_a_judge_object_and_names_a_bad_store(curation_corpus: SynthResult,
                                                                tmp_path: Path,
                                                                local_ray) -> None:
    principles = load_principles(PRINCIPLES)
    with pytest.raises(ValueError, match="JudgeSpec"):
        curate(curation_corpus.out_dir, principles, object(), tmp_path / "x",  # type: ignore[arg-type]
               engine="ray")
    missing = tmp_path / "no-store"
    with pytest.raises(JudgeError, match=f"judge probe:{missing}"):
        curate(curation_corpus.out_dir, principles, JudgeSpec(f"probe:{missing}"),
               tmp_path / "y", engine="ray")


def test_ray_curation_with_a_served_model_fills_the_cache(small_llm_corpus: SynthResult,
                                                          short_principles: Path, serve,
                                                          tiny_models: dict[str, Path],
                                                          tmp_path: Path, local_ray,
                                                          capsys) -> None:
    out = tmp_path / "out"
    args = ["curate", "--shards", str(small_llm_corpus.out_dir), "--principles",
            str(short_principles), "--judge", f"openai:{serve.base_url}", "--judge-model",
            str(tiny_models["numbers"]), "--out", str(out), "--concurrency", "2",
            "--timeout-s", "60", "--max-revision-tokens", "12", "--limit", "8"]
    assert main([*args, "--engine", "ray", "--ray-workers", "2"]) == 0
    printed = capsys.readouterr().out
    assert "engine ray (2 workers)" in printed
    ray_files, ray_summary = _outputs(out), _summary(out)
    asked = json.loads((out / "curation.json").read_text())["judge_requests"]
    assert asked >= 8
    # The local engine, on the same output directory, finds every reply in the cache that the
    # Ray workers filled, asks nothing, and writes the same files.
    assert main(args) == 0
    record = json.loads((out / "curation.json").read_text())
    assert record["judge_requests"] == 0 and record["cached_replies"] >= asked
    assert _outputs(out) == ray_files and _summary(out) == ray_summary
    shutil.rmtree(out)
