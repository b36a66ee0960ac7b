"""Signal: after a short CPU training run on the synthetic corpus, each category's documents are
attributed most strongly to their own behavior's probe set."""

from __future__ import annotations

import pytest
import torch
from attribution_support import small_byte_gpt, synthetic_probe_sets, synthetic_training_data

from curriculum.attribution import AttributionConfig, InRunAttributor, per_example_token_loss
from curriculum.synth import BEHAVIORS

pytestmark = pytest.mark.filterwarnings("ignore::curriculum.attribution.UncoveredParametersWarning")

SEQ_LEN = 64
STEPS = 160
SCORED_FROM = 100
PROBE_REFRESH_STEPS = 10
LR = 3e-3


def test_documents_are_attributed_to_their_own_behavior() -> None:
    batches, behaviors = synthetic_training_data(16 * STEPS, SEQ_LEN, 16)
    probes = synthetic_probe_sets(16, SEQ_LEN)
    model = small_byte_gpt(SEQ_LEN)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    attributor = InRunAttributor(model, AttributionConfig(), optimizer=optimizer)
    # In-Run Data Shapley: sum each document's -lr * <P grad L_Vk, grad l_i> over its steps.
    totals = {b: torch.zeros(len(BEHAVIORS), dtype=torch.float64) for b in BEHAVIORS}
    counts = dict.fromkeys(BEHAVIORS, 0)
    first_losses = None
    for step, (batch, labels) in enumerate(zip(batches, behaviors, strict=True)):
        if step < SCORED_FROM:
            per_example_token_loss(model, batch).sum().backward()
        else:
            if (step - SCORED_FROM) % PROBE_REFRESH_STEPS == 0:
                losses = attributor.refresh_probe_gradients(probes)
                first_losses = first_losses or losses
            else:
                attributor.refresh_preconditioner()
            _, scores = attributor.loss_and_scores(batch, lr=LR)
            for behavior, row in zip(labels, scores.double(), strict=True):
                totals[behavior] += row
                counts[behavior] += 1
        optimizer.step()
        optimizer.zero_grad()
    assert attributor.behaviors == BEHAVIORS
    assert all(counts[b] >= 50 for b in BEHAVIORS), counts
    # mean[c][k]: mean score of category c's documents for behavior k's probe set. A negative
    # score lowers the probe loss, so "most attributed" is "most negative".
    mean = {c: totals[c] / counts[c] for c in BEHAVIORS}
    for k, behavior in enumerate(BEHAVIORS):
        own = mean[behavior][k]
        others = {c: float(mean[c][k]) for c in BEHAVIORS if c != behavior}
        assert own < 0, (behavior, float(own))
        assert all(own < value for value in others.values()), (behavior, float(own), others)
