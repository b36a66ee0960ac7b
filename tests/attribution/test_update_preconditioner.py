"""Scores describe the update Adam really makes: its second moment includes this step's gradient.

Brute-force references: the update of a real AdamW step (b1 = 0, so the update is exactly
``-lr * g / denominator``), and per-example gradients from ``torch.func`` with ``v_t`` written
out by hand. Also the per-token terms that let a packed row's score be split per document.
"""

from __future__ import annotations

import pytest
import torch
from attribution_support import (
    VOCAB,
    padded_batch,
    per_example_gradients,
    probe_gradient,
    relative_error,
    tiny_gpt,
)
from torch import nn

from curriculum.attribution import InRunAttributor, per_example_token_loss
from curriculum.attribution.probe import adam_denominator, adam_update_denominator

pytestmark = pytest.mark.filterwarnings(
    "ignore:There is a performance drop:UserWarning",
    "ignore::curriculum.attribution.UncoveredParametersWarning",
)


@pytest.mark.parametrize("make_optimizer", [
    lambda p: torch.optim.AdamW(p, lr=0.1, betas=(0.0, 0.99), eps=1e-4, weight_decay=0.0),
    lambda p: torch.optim.Adam(p, lr=0.1, betas=(0.0, 0.9), eps=1e-3),
    lambda p: torch.optim.Adam(p, lr=0.1, betas=(0.0, 0.95), eps=1e-5, amsgrad=True),
    lambda p: torch.optim.Adam(p, lr=0.1, betas=(0.0, 0.9), eps=1e-3, weight_decay=0.05),
], ids=["adamw", "adam", "amsgrad", "adam-l2"])
def test_update_denominator_is_the_one_the_step_divides_by(make_optimizer) -> None:  # noqa: ANN001
    """Read before the step (from .grad and the state), it reproduces the step's update, the
    first step included (no state yet)."""
    model = tiny_gpt()
    optimizer = make_optimizer(model.parameters())
    parameter = model.wte.weight
    (group,) = optimizer.param_groups
    for step in range(4):
        per_example_token_loss(model, padded_batch(3, 8, step)).sum().backward()
        gradient = parameter.grad.clone()
        denominator = adam_update_denominator(optimizer, parameter, gradient)
        if group["weight_decay"]:
            gradient = gradient + group["weight_decay"] * parameter.detach()
        before = parameter.detach().clone()
        optimizer.step()
        optimizer.zero_grad()
        update = parameter.detach() - before
        assert torch.allclose(update, -0.1 * gradient / denominator, rtol=1e-10, atol=1e-14), step


def _train(model: nn.Module, steps: int, high_token: int) -> torch.optim.Optimizer:
    """AdamW steps on batches that use token ids below ``high_token`` only."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95), eps=1e-8)
    for step in range(steps):
        batch = padded_batch(4, 10, 100 + step)
        batch["input_ids"] = batch["input_ids"] % high_token
        per_example_token_loss(model, batch).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
    return optimizer


def test_training_step_scores_match_brute_force_and_unseen_tokens_do_not_dominate() -> None:
    model = tiny_gpt(tie=False)
    optimizer = _train(model, 3, high_token=VOCAB // 2)  # half the embedding rows have v = 0
    attributor = InRunAttributor(model, optimizer=optimizer)
    probes = {"a": padded_batch(3, 9, 10, weighted=False), "b": padded_batch(2, 12, 11, weighted=False)}
    attributor.refresh_probe_gradients(probes)
    names = attributor.covered_parameters
    batch = padded_batch(5, 9, seed=7)  # uses every token id
    scores = attributor.score(batch, accumulate_grad=True)  # .grad is this step's gradient

    per_example = per_example_gradients(model, batch, names)
    parameters = dict(model.named_parameters())
    (group,) = optimizer.param_groups
    beta2, eps = group["betas"][1], group["eps"]
    expected_columns, stale_columns = [], []
    for probe in probes.values():
        g_probe = probe_gradient(model, probe, names)
        column = stale = 0
        for n in names:
            state = optimizer.state[parameters[n]]
            batch_gradient = per_example[n].sum(0)  # the loss is a sum of per-example terms
            v_t = beta2 * state["exp_avg_sq"] + (1 - beta2) * batch_gradient**2
            t = float(state["step"]) + 1
            denominator = (v_t / (1 - beta2**t)).sqrt() + eps
            column = column + (per_example[n] * g_probe[n] / denominator).flatten(1).sum(1)
            old = (state["exp_avg_sq"] / (1 - beta2 ** float(state["step"]))).sqrt() + eps
            stale = stale + (per_example[n] * g_probe[n] / old).flatten(1).sum(1)
        expected_columns.append(column)
        stale_columns.append(stale)
    expected = torch.stack(expected_columns, dim=1)
    assert relative_error(scores, expected) <= 1e-6
    # The state's v (before the step) would give unseen rows 1/eps and swamp the scores.
    stale = torch.stack(stale_columns, dim=1)
    assert float(stale.abs().max()) > 1e3 * float(expected.abs().max())


def test_gradient_clipping_scales_the_update_and_its_second_moment() -> None:
    model = tiny_gpt()
    optimizer = _train(model, 2, high_token=VOCAB)
    attributor = InRunAttributor(model, optimizer=optimizer)
    probes = {"a": padded_batch(3, 9, 10, weighted=False)}
    attributor.refresh_probe_gradients(probes)
    batch = padded_batch(4, 9, seed=3)
    attributor.begin(batch)
    per_example_token_loss(model, batch).sum().backward()
    clipped = attributor.finish(grad_scale=0.25)
    names = attributor.covered_parameters
    per_example = per_example_gradients(model, batch, names)
    parameters = dict(model.named_parameters())
    g_probe = probe_gradient(model, probes["a"], names)
    expected = 0
    for n in names:
        denominator = adam_update_denominator(optimizer, parameters[n], 0.25 * parameters[n].grad)
        expected = expected + (0.25 * per_example[n] * g_probe[n] / denominator).flatten(1).sum(1)
    assert relative_error(clipped[:, 0], expected) <= 1e-6
    assert adam_denominator(optimizer, parameters[names[0]]) is not None


class PositionwiseLM(nn.Module):
    """No interaction between positions: a token's terms are its own loss's gradient."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens = nn.Embedding(VOCAB, 8)
        self.hidden = nn.Linear(8, 16)
        self.head = nn.Linear(16, VOCAB)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.hidden(self.tokens(idx))))


@pytest.mark.parametrize("precondition", [False, True], ids=["plain", "adam"])
def test_per_token_terms_split_a_packed_row_into_its_documents(precondition: bool) -> None:
    torch.manual_seed(0)
    model = PositionwiseLM().double()
    optimizer = _train(model, 2, VOCAB) if precondition else None
    attributor = InRunAttributor(model, optimizer=optimizer)
    probes = {"a": padded_batch(3, 9, 10, weighted=False), "b": padded_batch(2, 7, 11, weighted=False)}
    attributor.refresh_probe_gradients(probes)
    first, second = padded_batch(1, 5, 1), padded_batch(1, 7, 2)
    packed = {key: torch.cat([first[key], second[key]], dim=1) for key in first}
    attributor.begin(packed, per_token=True)
    per_example_token_loss(model, packed).sum().backward()
    terms = attributor.finish()
    assert terms.shape == (1, 12, 2)
    # Apart: two padded rows, the same labelled tokens and the same update (.grad kept).
    apart = {key: torch.zeros(2, 7, dtype=first[key].dtype) for key in first}
    apart["labels"][:] = -100
    for i, (doc, length) in enumerate(((first, 5), (second, 7))):
        for key in doc:
            apart[key][i, :length] = doc[key][0]
    attributor.begin(apart)
    loss = per_example_token_loss(model, apart).sum()
    torch.autograd.grad(loss, list(model.parameters()))
    separate = attributor.finish()
    assert relative_error(terms[0, :5].sum(0), separate[0]) <= 1e-9
    assert relative_error(terms[0, 5:].sum(0), separate[1]) <= 1e-9
    attributor.begin(packed)
    torch.autograd.grad(per_example_token_loss(model, packed).sum(), list(model.parameters()))
    assert relative_error(terms.sum(1), attributor.finish()) <= 1e-9
