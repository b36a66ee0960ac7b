"""Curriculum-scheduled language-model pre-training driven by attributed behavior.

The public API: import from here, not from the implementation packages. Names are resolved
lazily (PEP 562), so ``import curriculum`` is cheap and the implementation packages, which use
``curriculum``'s own modules, never meet a half-initialised package.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: Public name -> module that defines it.
_EXPORTS: dict[str, str] = {
    # corpora
    "BEHAVIORS": "curriculum.synth",
    "generate_documents": "curriculum.synth",
    "read_labels": "curriculum.synth",
    "write_synthetic_corpus": "curriculum.synth",
    # shards and loading
    "ManifestError": "loaders.manifest",
    "ShardManifest": "loaders.manifest",
    "expand_shard_spec": "loaders.manifest",
    "manifest_for": "loaders.manifest",
    "convert_to_shards": "loaders.shards",
    "write_shards": "loaders.shards",
    "Packer": "loaders.packing",
    "batch_to_tensors": "loaders.packing",
    "PackedTextStream": "loaders.stream",
    "StreamConfig": "loaders.stream",
    "CurriculumDataModule": "loaders.datamodule",
    "stream_loader": "loaders.datamodule",
    "ByteTokenizer": "loaders.tokenize",
    "HFTokenizer": "loaders.tokenize",
    "make_tokenizer": "loaders.tokenize",
    # training
    "GPT": "train.model",
    "GPTConfig": "train.model",
    "CurriculumLM": "train.module",
    "ProbeLossCallback": "train.callbacks",
    "DataConfig": "train.config",
    "FitConfig": "train.config",
    "ModelConfig": "train.config",
    "OptimConfig": "train.config",
    "TrainerConfig": "train.config",
    "load_fit_config": "train.config",
    "read_probe_losses": "train.fit",
    "run_fit": "train.fit",
    # behavior store
    **{name: "curriculum.store" for name in (
        "BehaviorStore", "StoreReader", "StoreError", "build_store", "HashedNgramEmbedder",
        "GPTHiddenStateEmbedder", "HFHiddenStateEmbedder", "SentenceTransformerEmbedder",
        "make_embedder", "KnnEstimator")},
    # policies
    **{name: "policies" for name in (
        "CurriculumState", "Emit", "Defer", "Drop", "Decision", "DecisionBatch", "Policy",
        "BasePolicy", "StagedPolicy", "PolicyRunner", "PolicyError", "PolicySpec", "StageSpec",
        "load_policy", "load_policy_text", "register_policy", "registered_policies",
        "builtin_policy_names", "StageTracker", "StageTransition", "CurriculumDriver",
        "DocumentScores", "ScoreBatch", "StoreScores", "PercentileTable", "preview_policy",
        "plot_preview", "PreviewResult")},
    # ledger
    **{name: "curriculum.ledger" for name in (
        "Fate", "FateBatch", "FateRecorder", "LedgerWriter", "LedgerRecord", "LedgerCheck",
        "LedgerSummary", "LedgerMeta", "LedgerError", "read_ledger", "load_ledger",
        "check_ledger", "summarize_ledger", "write_ledger_meta", "read_ledger_meta")},
    # curation by principles
    **{name: "curriculum.curation" for name in (
        "curate", "CurationResult", "Principle", "PrincipleError", "load_principles",
        "make_judge", "Judge", "JudgeError", "JudgeItem", "JudgeReply")},
    # online attribution
    **{name: "curriculum.attribution" for name in (
        "InRunAttributor", "AttributionConfig", "ScoreResult", "UncoveredParametersWarning",
        "GradientFeatureProjector", "GradientFeatureConfig", "GradientFeatureEmbedder",
        "per_example_token_loss", "mean_token_probe_loss", "adam_preconditioner",
        "spearman_correlation")},
    "AttributionCallback": "train.attribution_callback",
    "AttributionSettings": "train.attribution_callback",
    # branching and synthetic data
    **{name: "train.early_checkpoints" for name in (
        "EarlyCheckpointConfig", "EarlyCheckpointCallback", "EarlyCheckpoint",
        "list_early_checkpoints")},
    **{name: "train.branch" for name in (
        "BranchConfig", "BranchError", "run_branch", "prepare_branch", "read_lineage",
        "load_checkpoint", "LR_SCHEDULES")},
    **{name: "train.sweep" for name in ("run_sweep", "SweepResult", "SweepRow")},
    **{name: "loaders.mix" for name in ("MixedTextStream", "MixSource", "MixedDataModule")},
    **{name: "curriculum.lm_generator" for name in (
        "LMGeneratorConfig", "SamplingConfig", "generate_lm_documents", "write_lm_corpus",
        "DEFAULT_PROMPTS", "load_prompts")},
    **{name: "curriculum.synthetic_sources" for name in ("SyntheticOptions", "resolve_data_spec")},
    **{name: "curriculum.store" for name in (
        "ShardSummaries", "Embedder", "load_embedder", "read_probe_sets", "choose_index_factory")},
    # the curriculum loader
    "CurriculumStream": "loaders.curriculum_stream",
    "CurriculumStreamConfig": "loaders.policy_stage",
    "SharedCurriculumState": "loaders.shared_state",
    "CurriculumCallback": "train.curriculum_callback",
    "ExactLoaderStateCallback": "train.loader_state",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'curriculum' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
