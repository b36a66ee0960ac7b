"""Gradient features: inner products equal gradient dot products at full rank, approximate them
at low rank, and the store embedder speaks the store's Embedder protocol."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from attribution_support import (
    EmbedMLP,
    padded_batch,
    per_example_gradients,
    probe_gradient,
    relative_error,
    tiny_gpt,
    tiny_hf_gpt2,
)

from curriculum.attribution import spearman_correlation
from curriculum.attribution.grad_features import (
    GradientFeatureConfig,
    GradientFeatureEmbedder,
    GradientFeatureProjector,
)
from curriculum.attribution.losses import per_example_token_loss
from train.model import GPT, GPTConfig

pytestmark = pytest.mark.filterwarnings(
    "ignore:There is a performance drop:UserWarning",
    "ignore::curriculum.attribution.UncoveredParametersWarning",
)


def flat_gradients(model: torch.nn.Module, batch: dict, names: list[str]) -> torch.Tensor:
    gradients = per_example_gradients(model, batch, names)
    return torch.cat([gradients[n].flatten(1) for n in names], dim=1)


@pytest.mark.parametrize("make_model", [lambda: EmbedMLP().double(), lambda: tiny_gpt(tie=True),
                                        tiny_hf_gpt2], ids=["embed-mlp", "gpt-tied", "hf-gpt2"])
def test_full_rank_features_preserve_gradient_dot_products(make_model) -> None:  # noqa: ANN001
    model = make_model()
    projector = GradientFeatureProjector(model, GradientFeatureConfig(rank=64))
    names = projector.capture.covered_parameters
    batch = padded_batch(5, 10, seed=3, empty_row=True)
    features = projector.features(batch)
    gradients = flat_gradients(model, batch, names)
    assert relative_error(features @ features.T, gradients @ gradients.T) <= 1e-10
    probe = padded_batch(3, 9, seed=10, weighted=False)
    probe_gradients = probe_gradient(model, probe, names)
    direction = torch.cat([probe_gradients[n].flatten() for n in names])
    assert relative_error(features @ projector.probe_features(probe), gradients @ direction) <= 1e-10
    assert torch.all(features[-1] == 0)  # the fully padded example


def test_low_rank_features_rank_documents_like_gradients() -> None:
    model = tiny_gpt(tie=True)
    projector = GradientFeatureProjector(model, GradientFeatureConfig(rank=8, seed=1))
    assert projector.dim < sum(p.numel() for p in model.parameters()) / 5
    names = projector.capture.covered_parameters
    batch = padded_batch(32, 12, seed=5)
    probe = padded_batch(3, 9, seed=10, weighted=False)
    probe_gradients = probe_gradient(model, probe, names)
    direction = torch.cat([probe_gradients[n].flatten() for n in names])
    exact = flat_gradients(model, batch, names) @ direction
    approximate = projector.features(batch) @ projector.probe_features(probe)
    assert spearman_correlation(approximate, exact) >= 0.85


def test_in_run_features_equal_standalone_features_and_leave_grad_alone() -> None:
    model = tiny_gpt(tie=True)
    projector = GradientFeatureProjector(model, GradientFeatureConfig(rank=4))
    batch = padded_batch(4, 9, seed=2)
    standalone = projector.features(batch)
    assert all(p.grad is None for p in model.parameters())
    projector.begin(batch)
    per_example_token_loss(model, batch).sum().backward()
    assert torch.allclose(projector.finish(), standalone, rtol=1e-10, atol=1e-14)


def test_store_embedder_protocol() -> None:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=257, block_size=32, n_layer=1, n_head=2, n_embd=16))
    embedder = GradientFeatureEmbedder(model=model, rank=4, seq_len=32)
    texts = ["The nurse told the truth.", "", "The model noticed it was being evaluated."]
    vectors = embedder.embed(texts)
    assert vectors.shape == (3, embedder.dim) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors[[0, 2]], axis=1), 1.0, atol=1e-5)
    assert np.all(vectors[1] == 0)
    direction = embedder.behavior_direction(["Honesty mattered to the judge.", "She was fair."])
    assert direction.shape == (embedder.dim,)
    assert np.isclose(np.linalg.norm(direction), 1.0, atol=1e-5)
    assert embedder.params()["rank"] == 4 and embedder.state() == {}
    again = GradientFeatureEmbedder(model=model, rank=4, seq_len=32)
    assert np.allclose(again.embed(texts), vectors, atol=1e-6)  # projections come from the seed
