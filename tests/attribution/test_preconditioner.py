"""Adam preconditioning: the formula matches the update torch's Adam/AdamW actually make."""

from __future__ import annotations

import pytest
import torch
from attribution_support import EmbedMLP, padded_batch

from curriculum.attribution import AttributionConfig, InRunAttributor, adam_preconditioner
from curriculum.attribution.losses import per_example_token_loss


@pytest.mark.parametrize("make_optimizer", [
    lambda p: torch.optim.Adam(p, lr=0.1, betas=(0.0, 0.9), eps=1e-3),
    lambda p: torch.optim.AdamW(p, lr=0.1, betas=(0.0, 0.99), eps=1e-4, weight_decay=0.0),
    lambda p: torch.optim.Adam(p, lr=0.1, betas=(0.0, 0.95), eps=1e-5, amsgrad=True),
], ids=["adam", "adamw", "amsgrad"])
def test_preconditioner_reproduces_the_adam_update(make_optimizer) -> None:  # noqa: ANN001
    """With b1 = 0 the update is exactly -lr * g * P, where P is read after the step (the state
    then holds the v that step divided by), bias correction included."""
    model = EmbedMLP().double()
    optimizer = make_optimizer(model.parameters())
    parameter = model.hidden.weight
    assert adam_preconditioner(optimizer, parameter) is None  # no state before the first step
    for step in range(4):
        per_example_token_loss(model, padded_batch(3, 8, step)).sum().backward()
        gradient = parameter.grad.clone()
        before = parameter.detach().clone()
        optimizer.step()
        optimizer.zero_grad()
        update = parameter.detach() - before
        expected = -0.1 * gradient * adam_preconditioner(optimizer, parameter)
        assert torch.allclose(update, expected, rtol=1e-10, atol=1e-14), step


def test_attributor_preconditions_by_default_only_under_adam() -> None:
    model = EmbedMLP().double()
    assert not InRunAttributor(model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1)).precondition
    assert InRunAttributor(model, optimizer=torch.optim.AdamW(model.parameters())).precondition
    assert not InRunAttributor(model, AttributionConfig(precondition=False),
                               optimizer=torch.optim.AdamW(model.parameters())).precondition
    with pytest.raises(ValueError, match="Adam"):
        InRunAttributor(model, AttributionConfig(precondition=True),
                        optimizer=torch.optim.SGD(model.parameters(), lr=0.1))


def test_before_the_first_step_scores_are_not_preconditioned() -> None:
    model = EmbedMLP().double()
    optimizer = torch.optim.AdamW(model.parameters())
    attributor = InRunAttributor(model, optimizer=optimizer)
    probes = {"p": padded_batch(2, 6, 9, weighted=False)}
    attributor.refresh_probe_gradients(probes)
    assert attributor.unpreconditioned_parameters == attributor.covered_parameters
    batch = padded_batch(3, 7, 1)
    unconditioned = InRunAttributor(model)
    unconditioned.refresh_probe_gradients(probes)
    assert torch.equal(attributor.score(batch, accumulate_grad=False),
                       unconditioned.score(batch, accumulate_grad=False))
    model.zero_grad()
    per_example_token_loss(model, batch).sum().backward()
    optimizer.step()
    attributor.refresh_preconditioner()
    assert attributor.unpreconditioned_parameters == []
