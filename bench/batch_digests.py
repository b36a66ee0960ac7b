"""Digests of every batch the loaders yield, to show that a structural change left them unchanged.

Hashes each batch's arrays (dtype, shape and bytes of every tensor, the fates riding with it) for:

- ``demo/<policy>``: the demo config (``configs/demo.yaml``) trained ``--steps`` steps under
  ``values_first`` and ``uniform`` on a synthesized demo corpus and its store (real ``Trainer``);
- ``resume/*``: the streams of ``tests/curriculum_loader/test_resume_exact.py`` (an
  uninterrupted run, a run cut at step 15 and its resumption from the checkpoint);
- ``stream/*``: the three streams iterated directly (plain concat and pad, curriculum with a
  window, spool and repeat upweighting, a mixed stream), each also interrupted and restored from
  its ``state_dict`` mid-stream.

    python bench/batch_digests.py --out bench/digests/before.json
    python bench/batch_digests.py --compare bench/digests/before.json

Writes a JSON ``{name: [digest per batch]}``; ``--compare`` prints which names differ and exits
1 if any does.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
# The repository ahead of bench/ (whose policies/ folder of YAML files would otherwise stand in
# for the policies package when this runs as a script).
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "curriculum_loader")]


def _feed(digest: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        digest.update(f"{value.dtype}{value.shape}".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    elif dataclasses.is_dataclass(value):
        for field in dataclasses.fields(value):
            digest.update(field.name.encode())
            _feed(digest, getattr(value, field.name))
    elif isinstance(value, dict):
        for key in sorted(value):
            digest.update(str(key).encode())
            _feed(digest, value[key])
    elif isinstance(value, (list, tuple)):
        for item in value:
            _feed(digest, item)
    else:
        digest.update(repr(value).encode())


def batch_digest(batch: Any) -> str:
    """SHA-256 over every array of a batch (keys sorted), fates included."""
    digest = hashlib.sha256()
    _feed(digest, batch)
    return digest.hexdigest()


class Recorder(L.Callback):
    """Digest of every batch a trainer consumes, by step."""

    def __init__(self) -> None:
        self.digests: dict[int, str] = {}

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self.digests[trainer.global_step] = batch_digest(batch)


def _listed(digests: dict[int, str]) -> list[str]:
    return [digests[s] for s in sorted(digests)]


def demo_digests(root: Path, steps: int) -> dict[str, list[str]]:
    """The demo config under both demo policies, ``steps`` steps each."""
    from curriculum.store import build_store
    from curriculum.synth import write_synthetic_corpus
    from train.config import load_fit_config
    from train.fit import run_fit

    corpus, store = root / "demo-data", root / "demo-store"
    write_synthetic_corpus(corpus, num_docs=4000, num_shards=4, seed=0)
    build_store(str(corpus), corpus / "probes", store)
    out = {}
    for policy in ("values_first", "uniform"):
        config = load_fit_config(ROOT / "configs" / "demo.yaml", [
            f"data.shards={corpus}", f"run_dir={root / 'demo' / policy}",
            f"trainer.max_steps={steps}", "trainer.checkpoint_every_n_steps=0",
            f"data.curriculum={{policy: {policy}, store: {store}}}"])
        recorder = Recorder()
        run_fit(config, callbacks=[recorder])
        out[f"demo/{policy}"] = _listed(recorder.digests)
    return out


def resume_digests(root: Path) -> dict[str, list[str]]:
    """The three runs of the exact-resume test."""
    from support import tiny_config

    from curriculum.store import build_store
    from curriculum.synth import write_synthetic_corpus
    from train.fit import run_fit

    corpus, store = root / "corpus", root / "store"
    write_synthetic_corpus(corpus, num_docs=800, num_shards=4, seed=11, probe_docs_per_behavior=16)
    build_store(str(corpus), corpus / "probes", store)
    whole, first, second = Recorder(), Recorder(), Recorder()
    run_fit(tiny_config(corpus, store, root / "whole", "trainer.max_steps=36"), callbacks=[whole])
    run_fit(tiny_config(corpus, store, root / "cut", "trainer.max_steps=20",
                        "trainer.checkpoint_every_n_steps=15", "data.snapshot_every_n_steps=1"),
            callbacks=[first])
    checkpoint = root / "cut" / "checkpoints" / "step-000015.ckpt"
    run_fit(tiny_config(corpus, store, root / "cut", "trainer.max_steps=36"),
            ckpt_path=str(checkpoint), callbacks=[second])
    return {"resume/whole": _listed(whole.digests), "resume/cut": _listed(first.digests),
            "resume/resumed": _listed(second.digests)}


def _iterate(make: Any, limit: int, cut: int) -> list[str]:
    """Digests of ``limit`` batches of ``make()``, then of a copy restored at batch ``cut``."""
    dataset = make()
    digests, state = [], None
    for index, batch in enumerate(dataset):
        if index == cut:
            state = dataset.state_dict()
        digests.append(batch_digest(batch))
        if len(digests) >= limit:
            break
    if state is not None:
        restored = make()
        restored.load_state_dict(state)
        for index, batch in enumerate(restored):
            digests.append(batch_digest(batch))
            if index + 1 >= limit - cut:
                break
    return digests


def stream_digests(root: Path) -> dict[str, list[str]]:
    """The three streams iterated directly, with a mid-stream restore."""
    from curriculum.store import build_store
    from curriculum.synth import write_synthetic_corpus
    from loaders.curriculum_stream import CurriculumStream
    from loaders.datamodule import manifest_for
    from loaders.mix import MixedTextStream, MixSource
    from loaders.policy_stage import CurriculumStreamConfig
    from loaders.stream import PackedTextStream, StreamConfig

    corpus, other, store = root / "s-corpus", root / "s-other", root / "s-store"
    write_synthetic_corpus(corpus, num_docs=400, num_shards=3, seed=3, probe_docs_per_behavior=8)
    write_synthetic_corpus(other, num_docs=200, num_shards=2, seed=4, probe_docs_per_behavior=8)
    build_store(str(corpus), corpus / "probes", store)
    manifest, other_manifest = manifest_for(str(corpus)), manifest_for(str(other))
    policy = str(ROOT / "tests" / "fixtures" / "short_values_first.yaml")
    out = {}
    for packing in ("concat", "pad"):
        config = StreamConfig(batch_size=4, seq_len=64, packing=packing, seed=2, num_epochs=2)
        out[f"stream/plain-{packing}"] = _iterate(
            lambda config=config: PackedTextStream(manifest, config), 400, 37)
        for mode in ("loss_weight", "repeat"):
            curriculum = CurriculumStreamConfig(policy=policy, store=str(store), window_size_docs=16,
                                                upweight_mode=mode)
            out[f"stream/curriculum-{packing}-{mode}"] = _iterate(
                lambda config=config, curriculum=curriculum: CurriculumStream(
                    manifest, config, curriculum), 400, 41)
        out[f"stream/mixed-{packing}"] = _iterate(
            lambda config=config: MixedTextStream(
                [MixSource(manifest, 0.7, "a"), MixSource(other_manifest, 0.3, "b")], config),
            400, 29)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", help="write the digests here (JSON)")
    parser.add_argument("--compare", help="compare with digests written before (JSON)")
    parser.add_argument("--steps", type=int, default=170,
                        help="demo steps per policy (values_first leaves stage 1 by 150)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        digests = {**stream_digests(root), **resume_digests(root), **demo_digests(root, args.steps)}
    print(f"{sum(len(v) for v in digests.values())} batches in {len(digests)} streams, "
          f"{time.perf_counter() - started:.0f} s")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(digests, indent=1) + "\n")
    if args.compare:
        before = json.loads(Path(args.compare).read_text())
        differ = sorted(k for k in set(before) | set(digests) if before.get(k) != digests.get(k))
        for name in sorted(digests):
            status = "DIFFERENT" if name in differ else "identical"
            print(f"{name:<40} {len(digests[name]):>5} batches  {status}")
        if differ:
            print(f"differ: {', '.join(differ)}")
            return 1
        print("all digests identical")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
