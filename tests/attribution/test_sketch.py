"""Sketched mode: exact for low-rank probe gradients, highly rank-correlated with exact scores."""

from __future__ import annotations

import pytest
import torch
from attribution_support import (
    padded_batch,
    small_byte_gpt,
    synthetic_probe_sets,
    synthetic_training_data,
    tiny_gpt,
    tiny_hf_gpt2,
)

from curriculum.attribution import (
    AttributionConfig,
    GradientPiece,
    InRunAttributor,
    per_example_token_loss,
    spearman_correlation,
)
from curriculum.attribution.ghost import dot_products
from curriculum.attribution.sketch import sketch_probe_gradients, sketched_dot_products

pytestmark = pytest.mark.filterwarnings("ignore::curriculum.attribution.UncoveredParametersWarning")


def test_sketch_is_exact_when_probe_gradients_have_rank_at_most_r() -> None:
    generator = torch.Generator().manual_seed(0)
    m, n, rank_each = 20, 12, 3
    probe = torch.stack([
        torch.randn(m, rank_each, generator=generator, dtype=torch.float64)
        @ torch.randn(rank_each, n, generator=generator, dtype=torch.float64)
        for _ in range(2)])
    piece = GradientPiece("w", torch.randn(4, 7, m, generator=generator, dtype=torch.float64),
                          torch.randn(4, 7, n, generator=generator, dtype=torch.float64))
    sketch = sketch_probe_gradients(probe, rank=2 * rank_each, power_iterations=0, generator=generator)
    assert sketch.left.shape == (m, 6) and sketch.core.shape == (2, 6, 6)
    exact = dot_products(piece, probe)
    assert torch.allclose(sketched_dot_products(piece, sketch), exact, rtol=1e-9, atol=1e-9)


def test_spearman_correlation() -> None:
    x = torch.tensor([0.1, 3.0, -2.0, 5.0, 4.0])
    assert spearman_correlation(x, x * 3 + 1) == pytest.approx(1.0)
    assert spearman_correlation(x, -x) == pytest.approx(-1.0)
    assert spearman_correlation(x, torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])) == pytest.approx(0.6)


def test_sketched_scores_rank_like_exact_scores_after_training() -> None:
    seq_len = 64
    batches, _ = synthetic_training_data(16 * 34, seq_len, 16)
    model = small_byte_gpt(seq_len)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for batch in batches[:30]:
        per_example_token_loss(model, batch).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
    probes = {k: v for k, v in synthetic_probe_sets(16, seq_len).items()
              if k in ("values", "situational_awareness")}
    held_out = batches[30:]

    def scores(config: AttributionConfig) -> torch.Tensor:
        attributor = InRunAttributor(model, config, optimizer=optimizer)
        attributor.refresh_probe_gradients(probes)
        result = torch.cat([attributor.score(b, accumulate_grad=False) for b in held_out])
        assert any(form == ("sketched" if config.mode == "sketched" else "per_example")
                   for _, form in attributor.forms_used)
        attributor.close()
        return result

    exact = scores(AttributionConfig())
    correlation = {
        rank: min(spearman_correlation(s[:, k], exact[:, k]) for k in range(2))
        for rank in (2, 16)
        for s in [scores(AttributionConfig(mode="sketched", sketch_rank=rank))]
    }
    assert correlation[16] >= 0.95, correlation
    assert correlation[16] > correlation[2], correlation


@pytest.mark.parametrize("make_model", [
    lambda: tiny_gpt(seed=3),
    lambda: tiny_hf_gpt2(seed=3),
], ids=["linear", "conv1d"])
def test_biases_sketched_with_their_weights_are_exact_at_low_rank(make_model) -> None:  # noqa: ANN001
    """Probe sets of one 2-token document give dense-layer probe gradients of rank <= 2 per
    behavior, also with the bias appended (``sum_t g_t [a_t, 1]``), and a tied embedding/head of
    rank <= 4; a rank-8 sketch of K=2 is then exact, so
    sketched scores -- biases folded into their weights' sketches, on the right side for Linear
    and for Conv1D -- must equal exact ones."""
    model = make_model()
    probes = {name: padded_batch(1, 2, seed, weighted=False) for name, seed in (("a", 5), ("b", 6))}
    batch = padded_batch(4, 9, 7)

    def scores(config: AttributionConfig) -> tuple[torch.Tensor, InRunAttributor]:
        attributor = InRunAttributor(model, config)
        attributor.refresh_probe_gradients(probes)
        return attributor.score(batch, accumulate_grad=False), attributor

    exact, _ = scores(AttributionConfig())
    sketched, attributor = scores(AttributionConfig(mode="sketched", sketch_rank=8,
                                                    sketch_power_iterations=0))
    folded = [sketch.bias for sketch in attributor._sketches.values() if sketch.bias]
    assert folded, "no bias was sketched with its weight"
    assert all(attributor.forms_used[(bias, "sketched")] == 1 for bias in folded)
    assert torch.allclose(sketched, exact, rtol=1e-7, atol=1e-12), (sketched, exact)
