"""Data specs that name a synthetic source instead of existing shards.

``synth:PROFILE`` (the offline template generator, e.g. ``synth:aligned``) and ``lm:MODEL_DIR``
(a local causal LM, see :mod:`curriculum.lm_generator`) are generated once into a cache
directory named after everything that determines their content, and reused afterwards. Any other
spec is a shard spec and is returned unchanged.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

SYNTH_PREFIX = "synth:"
LM_PREFIX = "lm:"


@dataclass
class SyntheticOptions:
    """How much to generate, and how, when a data spec names a synthetic source."""

    num_docs: int = 2000
    """Documents to generate."""
    num_shards: int = 2
    """Shards to write them into."""
    seed: int = 1
    """Generator seed (different from the parent corpus's seed 0 by default)."""
    prompts_path: str | None = None
    """YAML/JSON prompts per behavior for ``lm:`` sources (default prompts otherwise)."""
    lm_behaviors: dict[str, float] | None = None
    """Document shares per behavior for ``lm:`` sources (default: values-heavy)."""
    max_new_tokens: int = 96
    """Tokens sampled per ``lm:`` document, at most."""


def is_synthetic_spec(spec: str) -> bool:
    """Whether ``spec`` names a generator rather than shards."""
    return spec.startswith((SYNTH_PREFIX, LM_PREFIX))


def resolve_data_spec(spec: str, cache_dir: str | Path, options: SyntheticOptions | None = None,
                      show_progress: bool = False) -> str:
    """The shard spec to train on: ``spec`` itself, or the directory a generator wrote it to."""
    if not is_synthetic_spec(spec):
        return spec
    options = options or SyntheticOptions()
    kind, _, target = spec.partition(":")
    if not target:
        raise ValueError(f"{spec}: expected synth:PROFILE or lm:MODEL_DIR")
    recipe = {"spec": spec, "num_docs": options.num_docs, "num_shards": options.num_shards,
              "seed": options.seed}
    if kind == "lm":
        recipe |= {"model": str(Path(target).resolve()), "behaviors": options.lm_behaviors,
                   "max_new_tokens": options.max_new_tokens,
                   "prompts": Path(options.prompts_path).read_text() if options.prompts_path else None}
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:10]
    name = target if kind == "synth" else Path(target).name
    out = Path(cache_dir) / f"{kind}-{name}-{digest}"
    if (out / "manifest.json").is_file() and (out / "recipe.json").is_file():
        return str(out)
    if kind == "synth":
        from curriculum.synth import write_synthetic_corpus

        write_synthetic_corpus(out, num_docs=options.num_docs, num_shards=options.num_shards,
                               seed=options.seed, profile=target, show_progress=show_progress)
    else:
        from curriculum.lm_generator import (
            DEFAULT_BEHAVIOR_MIX,
            LMGeneratorConfig,
            SamplingConfig,
            load_prompts,
            write_lm_corpus,
        )

        config = LMGeneratorConfig(
            model_path=target, num_docs=options.num_docs, seed=options.seed,
            behaviors=dict(options.lm_behaviors or DEFAULT_BEHAVIOR_MIX),
            prompts=load_prompts(options.prompts_path) if options.prompts_path else {},
            sampling=SamplingConfig(max_new_tokens=options.max_new_tokens),
        )
        write_lm_corpus(config, out, num_shards=options.num_shards, show_progress=show_progress)
    # Written last: a directory without it is an interrupted generation and is redone.
    (out / "recipe.json").write_text(json.dumps(recipe, indent=1))
    return str(out)
