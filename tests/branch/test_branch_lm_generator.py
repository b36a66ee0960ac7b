"""The LM generator samples from a small random model saved locally, with provenance per document."""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import pytest

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from lm_support import save_tiny_causal_lm  # noqa: E402

from curriculum.lm_generator import (  # noqa: E402
    GENERATOR_NAME,
    LMGeneratorConfig,
    SamplingConfig,
    generate_lm_documents,
    load_prompts,
    weights_sha256,
    write_lm_corpus,
)
from curriculum.shards.manifest import ShardManifest  # noqa: E402
from curriculum.shards.tar_samples import iter_raw_samples  # noqa: E402
from curriculum.synthetic_sources import SyntheticOptions, resolve_data_spec  # noqa: E402
from loaders.stream import PackedTextStream, StreamConfig  # noqa: E402


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    return save_tiny_causal_lm(tmp_path_factory.mktemp("tiny-lm"))


def _config(model_dir, **changes) -> LMGeneratorConfig:
    config = LMGeneratorConfig(str(model_dir), num_docs=7, samples_per_prompt=3, seed=2,
                               behaviors={"values": 0.5, "neutral": 0.5},
                               prompts={"values": ["Honesty means", "She told the truth"]},
                               sampling=SamplingConfig(max_new_tokens=12))
    return replace(config, **changes)


def test_writes_shards_with_provenance_in_each_document(tiny_lm, tmp_path) -> None:
    config = _config(tiny_lm)
    result = write_lm_corpus(config, tmp_path / "lm", num_shards=2)
    manifest = ShardManifest.load(result.out_dir)
    assert (manifest.num_rows, manifest.num_shards) == (7, 2)
    samples = [s for path in manifest.shard_paths for s in iter_raw_samples(path)]
    with result.labels_path.open() as handle:
        labels = {r["key"]: r["behavior"] for r in csv.DictReader(handle)}
    for sample in samples:
        text = sample.members["txt"].decode()
        meta = json.loads(sample.members["json"])
        assert meta["generator"] == GENERATOR_NAME
        assert meta["model_path"] == str(tiny_lm.resolve())
        assert meta["weights_sha256"] == weights_sha256(tiny_lm)
        assert meta["behavior"] == labels[sample.key]
        assert meta["prompt"] in config.prompts_for(meta["behavior"])
        assert text.startswith(meta["prompt"])
        assert meta["sampling"] == {"max_new_tokens": 12, "temperature": 0.9, "top_p": 0.95,
                                    "top_k": 0, "repetition_penalty": 1.0}
        assert isinstance(meta["seed"], int) and 0 <= meta["sample_index"] < 3
        assert 0 <= meta["new_tokens"] <= 12
    # The loader reads them like any corpus.
    batch = next(iter(PackedTextStream(manifest, StreamConfig(batch_size=1, seq_len=16))))
    assert batch["input_ids"].shape == (1, 16)


def test_same_seed_same_documents_other_seed_other_documents(tiny_lm) -> None:
    def texts(seed: int) -> list[str]:
        return [d.text for d in generate_lm_documents(_config(tiny_lm, num_docs=4, seed=seed,
                                                              hash_weights=False))]

    first = texts(3)
    assert first == texts(3)
    assert first != texts(4)


def test_lm_data_spec_is_generated_once_and_reused(tiny_lm, tmp_path) -> None:
    options = SyntheticOptions(num_docs=3, num_shards=1, seed=1, max_new_tokens=8)
    path = resolve_data_spec(f"lm:{tiny_lm}", tmp_path, options)
    manifest = tmp_path.joinpath(path.split("/")[-1], "manifest.json")
    stamp = manifest.stat().st_mtime_ns
    assert resolve_data_spec(f"lm:{tiny_lm}", tmp_path, options) == path
    assert manifest.stat().st_mtime_ns == stamp
    assert ShardManifest.load(path).num_rows == 3


def test_prompt_files_are_validated(tmp_path) -> None:
    good = tmp_path / "prompts.yaml"
    good.write_text("values:\n  - Kindness is\nneutral: [The river]\n")
    assert load_prompts(good) == {"values": ["Kindness is"], "neutral": ["The river"]}
    bad = tmp_path / "bad.yaml"
    bad.write_text("values: Kindness is\n")
    with pytest.raises(ValueError, match="values: expected a non-empty list"):
        load_prompts(bad)
    with pytest.raises(ValueError, match="no prompts for behavior"):
        LMGeneratorConfig("m", behaviors={"gardening": 1.0}).prompts_for("gardening")
