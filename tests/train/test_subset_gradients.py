"""A selection step's update equals a plain optimizer step on the selected rows alone, and its
scores are the attributor's exact ones."""

from __future__ import annotations

import copy

import pytest
import torch

from curriculum.attribution import InRunAttributor
from policies.expressions import compile_expression
from policies.select_rule import SelectRule, step_score_checker
from train.model import GPT, GPTConfig
from train.module import weighted_token_loss
from train.per_example_gradients import per_example_bytes
from train.selection import SelectionStep
from train.subset_gradients import SubsetGradientError, SubsetGradients


def _batch(rows: int, tokens: int, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, 50, (rows, tokens), generator=generator)
    labels = torch.randint(0, 50, (rows, tokens), generator=generator)
    labels[1, :5] = -100  # rows with different labelled-token counts
    labels[-1, 9:] = -100
    weight = torch.rand(rows, tokens, generator=generator, dtype=torch.float64) * 2
    return {"input_ids": input_ids, "labels": labels, "loss_weight": weight}


def _subset(batch: dict[str, torch.Tensor], chosen: list[int]) -> dict[str, torch.Tensor]:
    return {k: v[chosen] for k, v in batch.items()}


def _loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The module's loss, sum(w * CE) / labelled tokens, kept in float64 (the module's casts
    the logits to float32, whose rounding differs between a batch and its subset)."""
    logits = model(batch["input_ids"])
    per_token = torch.nn.functional.cross_entropy(
        logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=-100, reduction="none")
    valid = (batch["labels"].flatten() != -100).double()
    return (per_token * batch["loss_weight"].flatten() * valid).sum() / valid.sum()


def test_float64_loss_matches_the_module_loss() -> None:
    model = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=1, n_head=2, n_embd=16)).double()
    batch = _batch(4, 16, 3)
    expected = weighted_token_loss(model(batch["input_ids"]), batch["labels"], batch["loss_weight"])
    assert torch.allclose(_loss(model, batch), expected.double(), rtol=1e-6)


def _coefficients(batch: dict[str, torch.Tensor], chosen: list[int]) -> torch.Tensor:
    valid = (batch["labels"] != -100).sum(dim=1).double()
    coefficients = torch.zeros(len(valid), dtype=torch.float64)
    coefficients[chosen] = valid.sum() / valid[chosen].sum()
    return coefficients


def _twin_models(tie: bool) -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.nn.Module,
                                     torch.optim.Optimizer]:
    """A float64 GPT and an identical copy, each with its AdamW."""
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=16,
                       tie_weights=tie)
    model = GPT(config).double()
    reference = copy.deepcopy(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    reference_optimizer = torch.optim.AdamW(reference.parameters(), lr=1e-2, weight_decay=0.1)
    return model, optimizer, reference, reference_optimizer


def _step_both_and_compare(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                           reference: torch.nn.Module, reference_optimizer: torch.optim.Optimizer,
                           subset: dict[str, torch.Tensor], step: int) -> None:
    """Apply the selection step's ``.grad``; a plain step of ``reference`` on the subset alone;
    the weights must agree."""
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    _loss(reference, subset).backward()
    reference_optimizer.step()
    reference_optimizer.zero_grad(set_to_none=True)
    for (name, mine), theirs in zip(model.named_parameters(), reference.parameters(), strict=True):
        assert torch.allclose(mine, theirs, rtol=0, atol=1e-12), (step, name)


@pytest.mark.parametrize("tie", [False, True])
def test_selection_update_equals_plain_step_on_subset(tie: bool) -> None:
    model, optimizer, reference, reference_optimizer = _twin_models(tie)
    probes = {"a": _batch(3, 16, 7), "b": _batch(3, 16, 8)}
    attributor = InRunAttributor(model, optimizer=optimizer)
    subset = SubsetGradients(model)
    for step, chosen in enumerate(([0, 2, 3], [1, 4], [5, 0, 1, 3])):
        batch = _batch(6, 16, step)
        attributor.refresh_probe_gradients({k: {n: t for n, t in v.items() if n != "loss_weight"}
                                            for k, v in probes.items()})
        attributor.begin(batch)
        subset.arm(6)
        with subset.activations_only():
            loss = _loss(model, batch)
            loss.backward()
        subset.disarm()
        scores = attributor.finish()
        assert scores.shape == (6, 2) and torch.isfinite(scores).all()
        assert all(p.grad is None for p in model.parameters()), "weight gradients were computed"
        for parameter, grad in subset.gradients(_coefficients(batch, chosen)).items():
            parameter.grad = grad
        _step_both_and_compare(model, optimizer, reference, reference_optimizer,
                               _subset(batch, chosen), step)


def test_uncovered_layer_is_refused() -> None:
    class Scaled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(3))

    model = torch.nn.Sequential(torch.nn.Linear(3, 3), Scaled())
    with pytest.raises(SubsetGradientError, match="1 \\(Scaled\\)"):
        SubsetGradients(model)


def _probe_batches() -> dict[str, dict[str, torch.Tensor]]:
    return {k: {n: t for n, t in _batch(3, 16, seed).items() if n != "loss_weight"}
            for k, seed in (("a", 7), ("b", 8))}


@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("recombine", [True, False])
def test_selection_step_scores_and_update(tie: bool, recombine: bool) -> None:
    """Both ways of a selection step (per-row gradients formed once, or the attributor's hooks
    plus the chosen rows' GEMMs): the scores are the attributor's exact ones for a step that
    applies the candidate batch's gradient, and three AdamW steps equal plain steps on the
    chosen rows alone."""
    model, optimizer, reference, reference_optimizer = _twin_models(tie)
    rule = SelectRule("r", compile_expression("-score.a + score.b", step_score_checker(("a", "b"))),
                      0.5)
    step_runner = SelectionStep(model, InRunAttributor(model, optimizer=optimizer),
                                max_per_example_bytes=2**40 if recombine else 0)
    for step in range(3):
        batch = _batch(6, 16, step)
        step_runner.attributor.refresh_probe_gradients(_probe_batches())
        step_runner.begin(batch)
        assert step_runner.recombining == recombine
        _loss(model, batch).backward()
        outcome = step_runner.finish(batch, rule, 1e-2, step, 6)
        assert len(outcome.chosen) == 3

        # The scores a plain step over all candidates would get, on a copy of the model.
        scored = copy.deepcopy(reference)
        scored_optimizer = torch.optim.AdamW(scored.parameters(), lr=1e-2, weight_decay=0.1)
        scored_optimizer.load_state_dict(reference_optimizer.state_dict())
        attributor = InRunAttributor(scored, optimizer=scored_optimizer)
        attributor.refresh_probe_gradients(_probe_batches())
        attributor.begin(batch)
        _loss(scored, batch).backward()
        expected = attributor.finish(lr=1e-2).numpy()
        assert abs(outcome.scores - expected).max() <= 1e-12 * abs(expected).max(), step

        _step_both_and_compare(model, optimizer, reference, reference_optimizer,
                               _subset(batch, list(outcome.chosen)), step)


def test_per_example_budget_picks_the_hooks_path() -> None:
    model = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=1, n_head=2, n_embd=16))
    linear_bytes = sum(m.weight.numel() * 4 for m in model.modules()
                       if isinstance(m, torch.nn.Linear))
    assert per_example_bytes(model, 6) == 6 * linear_bytes
