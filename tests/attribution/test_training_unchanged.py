"""Attribution never changes the training update: same .grad, same weights, same random stream."""

from __future__ import annotations

import copy

import pytest
import torch
from attribution_support import VOCAB, padded_batch, tiny_hf_gpt2

from curriculum.attribution import AttributionConfig, InRunAttributor, per_example_token_loss
from train.model import GPT, GPTConfig

pytestmark = pytest.mark.filterwarnings("ignore::curriculum.attribution.UncoveredParametersWarning")


def gpt_with_dropout() -> GPT:
    """float32, dropout on (the random stream matters), tied embeddings."""
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=VOCAB, block_size=16, n_layer=2, n_head=2, n_embd=16,
                         dropout=0.1, tie_weights=True))


def float_batch(step: int) -> dict[str, torch.Tensor]:
    batch = padded_batch(4, 12, seed=step, empty_row=step % 2 == 0)
    batch["loss_weight"] = batch["loss_weight"].float()
    return batch


def probes() -> dict[str, dict[str, torch.Tensor]]:
    return {"x": padded_batch(3, 9, 50, weighted=False), "y": padded_batch(2, 11, 51, weighted=False)}


@pytest.mark.parametrize("mode", ["exact", "sketched"])
@pytest.mark.parametrize("make_model", [gpt_with_dropout, lambda: tiny_hf_gpt2().float().train()],
                         ids=["gpt-dropout-tied", "hf-gpt2"])
def test_weights_after_training_steps_are_bitwise_equal(make_model, mode: str) -> None:  # noqa: ANN001
    plain = make_model()
    attributed = copy.deepcopy(plain)
    plain_optimizer = torch.optim.AdamW(plain.parameters(), lr=1e-2)
    optimizer = torch.optim.AdamW(attributed.parameters(), lr=1e-2)
    attributor = InRunAttributor(attributed, AttributionConfig(mode=mode, sketch_rank=2),
                                 optimizer=optimizer)
    torch.manual_seed(1)
    for step in range(4):
        per_example_token_loss(plain, float_batch(step)).sum().backward()
        plain_optimizer.step()
        plain_optimizer.zero_grad()
    torch.manual_seed(1)
    for step in range(4):
        attributor.refresh_probe_gradients(probes())  # probe forward/backward every step
        _, scores = attributor.loss_and_scores(float_batch(step), lr=1e-2)
        assert scores.shape == (4, 2) and torch.isfinite(scores).all()
        optimizer.step()
        optimizer.zero_grad()
    # Dropout draws from the global generator: equal weights also mean an unchanged stream.
    for (name, a), b in zip(plain.named_parameters(), attributed.parameters(), strict=True):
        assert torch.equal(a, b), name


def test_grad_is_identical_and_probe_refresh_leaves_grad_mode_and_rng_alone() -> None:
    model = gpt_with_dropout()
    twin = copy.deepcopy(model)
    attributor = InRunAttributor(model)
    batch = float_batch(3)
    sentinel = {n: torch.full_like(p, 7.0) for n, p in model.named_parameters()}
    for name, parameter in model.named_parameters():
        parameter.grad = sentinel[name].clone()
    model.train()
    state = torch.get_rng_state()
    attributor.refresh_probe_gradients(probes())
    assert torch.equal(torch.get_rng_state(), state)
    assert all(m.training for m in model.modules())
    for name, parameter in model.named_parameters():
        assert torch.equal(parameter.grad, sentinel[name]), name
    model.zero_grad(set_to_none=True)
    torch.manual_seed(5)
    attributor.loss_and_scores(batch)
    torch.manual_seed(5)
    per_example_token_loss(twin, batch).sum().backward()
    for (name, a), b in zip(model.named_parameters(), twin.parameters(), strict=True):
        assert torch.equal(a.grad, b.grad), name


def test_scoring_without_a_training_step_leaves_grad_empty() -> None:
    model = gpt_with_dropout()
    attributor = InRunAttributor(model)
    attributor.refresh_probe_gradients(probes())
    scores = attributor.score(float_batch(1), accumulate_grad=False)
    assert scores.shape == (4, 2)
    assert all(p.grad is None for p in model.parameters())
