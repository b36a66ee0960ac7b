"""Scores equal brute-force per-example gradient dot products (torch.func, float64)."""

from __future__ import annotations

import warnings

import pytest
import torch
from attribution_support import (
    EmbedMLP,
    brute_force_scores,
    padded_batch,
    per_example_gradients,
    probe_gradient,
    relative_error,
    tiny_gpt,
    tiny_hf_gpt2,
)

from curriculum.attribution import (
    AttributionConfig,
    InRunAttributor,
    UncoveredParametersWarning,
    per_example_token_loss,
)

pytestmark = pytest.mark.filterwarnings(
    "ignore:There is a performance drop:UserWarning",  # vmap over sdpa falls back to a loop
    "ignore::curriculum.attribution.UncoveredParametersWarning",
)

MODELS = {
    "embedding+linear (tied, all covered)": lambda: EmbedMLP().double(),
    "gpt": lambda: tiny_gpt(tie=False),
    "gpt tied": lambda: tiny_gpt(tie=True),
    "hf gpt2 (Conv1D, tied)": tiny_hf_gpt2,
}
SHAPES = [(1, 6), (3, 9), (5, 14)]
TOLERANCE = 1e-4


def probe_sets(seed: int = 10) -> dict[str, dict[str, torch.Tensor]]:
    return {
        "first": padded_batch(3, 9, seed, weighted=False),
        "second": padded_batch(4, 7, seed + 1, weighted=False),
        "third": padded_batch(2, 12, seed + 2, weighted=False),
    }


def train_a_little(model: torch.nn.Module, steps: int = 3) -> torch.optim.Optimizer:
    """A few AdamW steps, so the optimizer holds second moments."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95), eps=1e-6)
    for step in range(steps):
        per_example_token_loss(model, padded_batch(4, 10, 100 + step)).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
    return optimizer


def adam_denominators(optimizer: torch.optim.Optimizer, model: torch.nn.Module,
                      names: list[str]) -> dict[str, torch.Tensor]:
    """1 / (sqrt(v) / sqrt(1 - beta2^t) + eps), written out from the optimizer state."""
    parameters = dict(model.named_parameters())
    (group,) = optimizer.param_groups
    beta2, eps = group["betas"][1], group["eps"]
    result = {}
    for name in names:
        state = optimizer.state[parameters[name]]
        correction = 1 - beta2 ** float(state["step"])
        result[name] = 1 / (state["exp_avg_sq"].sqrt() / correction**0.5 + eps)
    return result


@pytest.mark.parametrize("precondition", [False, True], ids=["plain", "adam"])
@pytest.mark.parametrize("model_name", list(MODELS))
def test_scores_match_brute_force(model_name: str, precondition: bool) -> None:
    model = MODELS[model_name]()
    optimizer = train_a_little(model) if precondition else None
    attributor = InRunAttributor(model, optimizer=optimizer)
    assert attributor.precondition is precondition
    probes = probe_sets()
    attributor.refresh_probe_gradients(probes)
    names = attributor.covered_parameters
    denominators = adam_denominators(optimizer, model, names) if precondition else None
    for batch_size, seq_len in SHAPES:
        batch = padded_batch(batch_size, seq_len, seed=batch_size * seq_len, empty_row=True)
        scores = attributor.score(batch, accumulate_grad=False)
        expected = brute_force_scores(model, batch, probes, names, denominators)
        assert scores.shape == (batch_size, 3)
        assert relative_error(scores, expected) <= TOLERANCE, (batch_size, seq_len)
        if batch_size > 1:  # the fully padded example has no loss, hence no gradient
            assert torch.all(scores[-1] == 0)


@pytest.mark.parametrize("form", ["aggregated", "per_example", "gram"])
@pytest.mark.parametrize("model_name", ["embedding+linear (tied, all covered)", "hf gpt2 (Conv1D, tied)"])
def test_every_exact_form_matches_brute_force(model_name: str, form: str) -> None:
    model = MODELS[model_name]()
    config = AttributionConfig(exact_forms=(form,), max_chunk_bytes=2048)  # forces chunking too
    attributor = InRunAttributor(model, config)
    probes = probe_sets()
    attributor.refresh_probe_gradients(probes)
    batch = padded_batch(4, 11, seed=3)
    scores = attributor.score(batch, accumulate_grad=False)
    used = {f for _, f in attributor.forms_used}
    assert form in used
    expected = brute_force_scores(model, batch, probes, attributor.covered_parameters)
    assert relative_error(scores, expected) <= TOLERANCE


def test_gram_form_is_chosen_for_small_probe_sets() -> None:
    model = EmbedMLP(width=32).double()
    attributor = InRunAttributor(model)
    probes = {"tiny": padded_batch(1, 3, 5, weighted=False)}
    attributor.refresh_probe_gradients(probes)
    batch = padded_batch(3, 8, 1)
    scores = attributor.score(batch, accumulate_grad=False)
    assert ("hidden.weight", "gram") in attributor.forms_used
    expected = brute_force_scores(model, batch, probes, attributor.covered_parameters)
    assert relative_error(scores, expected) <= TOLERANCE


def test_full_coverage_means_the_whole_gradient() -> None:
    """Embedding + Linear only: nothing is left out, so scores are full-gradient dot products."""
    model = EmbedMLP().double()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UncoveredParametersWarning)
        attributor = InRunAttributor(model)
    assert attributor.uncovered_parameters == []
    assert attributor.covered_parameters == [n for n, _ in model.named_parameters()]


def test_split_step_api_equals_loss_and_scores_and_applies_lr() -> None:
    """begin / (forward, backward by the caller) / finish gives the same scores, times -lr."""
    model = tiny_gpt(tie=True)
    attributor = InRunAttributor(model)
    attributor.refresh_probe_gradients(probe_sets())
    batch = padded_batch(3, 9, seed=1)
    _, reference = attributor.loss_and_scores(batch)
    model.zero_grad()
    attributor.begin(batch)
    loss = per_example_token_loss(model, batch).sum()
    (4.0 * loss).backward()  # a loss scaler's factor, divided out below
    scores = attributor.finish(lr=0.5, loss_scale=4.0)
    assert relative_error(scores, -0.5 * reference) <= 1e-12
    with attributor.scoring(batch, lr=0.5) as result:
        per_example_token_loss(model, batch).sum().backward()
    assert relative_error(result.scores, -0.5 * reference) <= 1e-12


def test_per_example_losses_sum_to_the_training_loss() -> None:
    """Our l_i sum to the LightningModule's loss, so the hooks see the same gradients."""
    module = pytest.importorskip("train.module")
    model = tiny_gpt()
    batch = padded_batch(4, 10, seed=2)
    logits = model(batch["input_ids"])
    expected = module.weighted_token_loss(logits.float(), batch["labels"], batch["loss_weight"])
    actual = per_example_token_loss(model, batch).sum()
    assert torch.allclose(actual.float(), expected.float(), rtol=1e-6)


def test_exact_scores_follow_the_optimizer_state_between_probe_refreshes() -> None:
    """Probe gradients stay as refreshed, but each scored step divides them by the second
    moments Adam holds at that step (re-read automatically once the optimizer has stepped)."""
    model = MODELS["embedding+linear (tied, all covered)"]()
    optimizer = train_a_little(model)
    attributor = InRunAttributor(model, optimizer=optimizer)
    probes = probe_sets()
    attributor.refresh_probe_gradients(probes)
    names = attributor.covered_parameters
    probe_weights = {name: p.detach().clone() for name, p in model.named_parameters()}
    for step in range(2):  # training moves the weights and the second moments on
        batch = padded_batch(4, 8, seed=100 + step)
        per_example_token_loss(model, batch).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
    batch = padded_batch(5, 9, seed=7)
    scores = attributor.score(batch, accumulate_grad=False)
    # Expected: per-example gradients now, probe gradients at the refresh, Adam's v now.
    per_example = per_example_gradients(model, batch, names)
    trained = {name: p.detach().clone() for name, p in model.named_parameters()}
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(probe_weights[name])
    stale = [probe_gradient(model, probe, names) for probe in probes.values()]
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(trained[name])
    denominators = adam_denominators(optimizer, model, names)
    expected = torch.stack([
        sum((per_example[n] * g[n] * denominators[n]).flatten(1).sum(1) for n in names)
        for g in stale], dim=1)
    assert relative_error(scores, expected) <= TOLERANCE
