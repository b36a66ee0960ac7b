"""``grad:CKPT``: a store embedder on gradient features of a checkpoint, registered from train."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from curriculum.store import BehaviorStore, build_store
from curriculum.synth import write_synthetic_corpus
from train.model import GPT, GPTConfig

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _checkpoint(path) -> str:  # noqa: ANN001
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=257, block_size=64, n_layer=1, n_head=2, n_embd=64))
    # The layout of a Lightning checkpoint of CurriculumLM: ``model.``-prefixed weights.
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, path)
    return str(path)


def test_grad_store_builds_reopens_and_groups_by_effect(tmp_path) -> None:
    import train.grad_embedder  # noqa: F401 -- registers "grad"

    corpus = write_synthetic_corpus(tmp_path / "corpus", num_docs=60, num_shards=1, seed=2,
                                    probe_docs_per_behavior=8)
    spec = f"grad:{_checkpoint(tmp_path / 'step.ckpt')},rank=4,seq_len=64,n_head=2"
    store = build_store(str(corpus.out_dir), corpus.probes_dir, tmp_path / "store", embedder=spec)
    assert store.meta.embedder["name"] == "grad"
    vectors = store.embeddings(np.arange(store.num_rows))
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    # Centred on the corpus mean: documents do not all point the same way.
    assert float(np.mean(vectors @ vectors.T)) < 0.5
    store.close()
    with BehaviorStore.open(tmp_path / "store") as reopened:  # the manifest rebuilds it
        again = reopened.embed(["The nurse told the family the honest truth."])
        assert again.shape == (1, vectors.shape[1])


def test_the_core_does_not_import_train_and_finds_grad_through_its_entry_point() -> None:
    # The store's registry reaches the gradient embedder through the ``curriculum.embedders``
    # entry point, and only when a spec names it: importing the core loads nothing of train.
    code = ("import sys; from curriculum.store.embedders import embedder_class\n"
            "assert not any(m == 'train' or m.startswith('train.') for m in sys.modules)\n"
            "cls = embedder_class('grad')\n"
            "print(cls.__module__, cls.spec_argument)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["train.grad_embedder", "checkpoint"]
