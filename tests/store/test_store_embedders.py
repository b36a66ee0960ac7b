"""Embedders: the default hashed embedder is deterministic across processes, batch-independent
and unit-norm; the model embedders run on real (tiny) models; specs parse or fail clearly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from curriculum.store import (
    HashedNgramEmbedder,
    StoreError,
    load_embedder,
    make_embedder,
)
from curriculum.synth import generate_documents
from train.embedders import GPTHiddenStateEmbedder

TEXTS = [d.text for d in generate_documents(300, seed=2)]


def test_hashed_embeddings_are_unit_norm_and_batch_independent() -> None:
    embedder = HashedNgramEmbedder(dim=64)
    embedder.fit(TEXTS)
    whole = embedder.embed(TEXTS)
    assert whole.dtype == np.float32 and whole.shape == (300, 64)
    np.testing.assert_allclose(np.linalg.norm(whole, axis=1), 1.0, rtol=1e-5)
    pieces = np.concatenate([embedder.embed(TEXTS[:1]), embedder.embed(TEXTS[1:77]),
                             embedder.embed(TEXTS[77:])])
    np.testing.assert_array_equal(whole, pieces)
    np.testing.assert_array_equal(embedder.embed([t.encode() for t in TEXTS[:5]]), whole[:5])
    empty = embedder.embed(["", "...", "a"])
    assert not empty[0].any() and not empty[1].any() and np.linalg.norm(empty[2]) > 0
    assert embedder.embed([]).shape == (0, 64)


def test_hashed_embedder_is_the_same_in_every_process() -> None:
    script = (
        "import sys, numpy as np; from curriculum.store import HashedNgramEmbedder; "
        "from curriculum.synth import generate_documents; "
        "texts = [d.text for d in generate_documents(50, seed=2)]; "
        "e = HashedNgramEmbedder(dim=32); e.fit(texts); "
        "sys.stdout.buffer.write(e.embed(texts).tobytes())"
    )
    outputs = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        outputs.append(subprocess.run([sys.executable, "-c", script], env=env,
                                      capture_output=True, check=True).stdout)
    assert outputs[0] == outputs[1] and len(outputs[0]) == 50 * 32 * 4


def test_hashed_similarity_reflects_shared_words() -> None:
    embedder = make_embedder("hashed:dim=256")
    a, b, c = embedder.embed([
        "The model noticed it was being evaluated by the lab.",
        "The assistant noticed that it was being evaluated by the developers.",
        "Bread dough needs flour, water, salt and yeast.",
    ])
    assert a @ b > 0.4 > a @ c


def test_fitted_state_round_trips_through_the_store_record() -> None:
    embedder = make_embedder("hashed:dim=48,char_ngram_sizes=4,seed=3")
    embedder.fit(TEXTS)
    rebuilt = load_embedder({"name": embedder.name, "params": embedder.params()},
                            embedder.state())
    assert rebuilt.params()["char_ngram_sizes"] == [4]
    np.testing.assert_array_equal(rebuilt.embed(TEXTS[:10]), embedder.embed(TEXTS[:10]))


def test_gpt_embedder_mean_pools_hidden_states(tmp_path: Path) -> None:
    import torch

    from train.model import GPT, GPTConfig

    config = GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=64)
    torch.manual_seed(0)
    model = GPT(config)
    checkpoint = tmp_path / "gpt.pt"
    torch.save({"config": config.__dict__, "state_dict": model.state_dict()}, checkpoint)
    embedder = make_embedder(f"gpt:{checkpoint}")
    vectors = embedder.embed(TEXTS[:6])
    assert vectors.shape == (6, 32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    # Same numbers as pooling the model's own final hidden states one text at a time.
    ids = torch.tensor([list(TEXTS[0].encode()[:64])])
    captured = {}
    model.ln_f.register_forward_hook(lambda _m, _i, out: captured.setdefault("h", out))
    model(ids)
    pooled = captured["h"][0].mean(0).detach().numpy()
    np.testing.assert_allclose(vectors[0], pooled / np.linalg.norm(pooled), atol=1e-5)
    # Padding a batch does not change a text's embedding (causal attention).
    np.testing.assert_allclose(embedder.embed(TEXTS[:1])[0], vectors[0], atol=1e-5)
    assert isinstance(GPTHiddenStateEmbedder(seed=1), GPTHiddenStateEmbedder)


def test_hf_embedder_loads_a_local_model(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = sorted({w for t in TEXTS[:50] for w in t.lower().replace(".", " ").split()})
    vocab = {"[UNK]": 0, "[PAD]": 1, **{w: i + 2 for i, w in enumerate(words)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]",
                                                pad_token="[PAD]")
    fast.save_pretrained(tmp_path)
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=32)
    transformers.BertModel(config).save_pretrained(tmp_path)
    embedder = make_embedder(f"hf:{tmp_path},max_tokens=32")
    vectors = embedder.embed(TEXTS[:4])
    assert vectors.shape == (4, 16)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    with pytest.raises(StoreError, match="cannot load a local Hugging Face model"):
        make_embedder(f"hf:{tmp_path / 'missing'}")


def test_specs_that_cannot_work_fail_clearly() -> None:
    with pytest.raises(StoreError, match="unknown embedder 'bert'"):
        make_embedder("bert:/x")
    with pytest.raises(StoreError, match="expected key=value"):
        make_embedder("hashed:128")
    with pytest.raises(StoreError, match="unexpected keyword argument 'width'"):
        make_embedder("hashed:width=3")
    with pytest.raises(ValueError, match="bucket_bits"):
        make_embedder("hashed:bucket_bits=40")
    try:
        import sentence_transformers  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install sentence-transformers"):
            make_embedder("st:/some/model")
