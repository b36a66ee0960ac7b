"""What the hooks cover, what they report, and how misuse fails."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from attribution_support import (
    VOCAB,
    EmbedMLP,
    brute_force_scores,
    padded_batch,
    relative_error,
    tiny_gpt,
    tiny_hf_gpt2,
)
from torch import nn

from curriculum.attribution import InRunAttributor, UncoveredParametersWarning
from curriculum.attribution.hooks import LayerCapture

pytestmark = pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")


def probes() -> dict[str, dict[str, torch.Tensor]]:
    return {"a": padded_batch(3, 8, 21, weighted=False), "b": padded_batch(2, 6, 22, weighted=False)}


def test_layer_norms_of_our_gpt_are_listed_in_one_warning() -> None:
    model = tiny_gpt()
    with pytest.warns(UncoveredParametersWarning) as record:
        capture = LayerCapture(model)
    (message,) = [str(w.message) for w in record]
    for name in ("blocks.0.ln_1 (LayerNorm): weight, bias", "blocks.1.ln_2 (LayerNorm)",
                 "ln_f (LayerNorm)"):
        assert name in message
    assert "10 parameter tensors" in message
    assert sorted(capture.uncovered_parameters) == sorted(
        n for n, _ in model.named_parameters() if ".ln_" in n or n.startswith("ln_f"))
    assert "wpe.weight" in capture.covered_parameters
    assert {layer.kind for layer in capture.layers} == {"linear", "embedding"}
    capture.remove()


def test_hf_gpt2_conv1d_layers_are_covered() -> None:
    model = tiny_hf_gpt2()
    with pytest.warns(UncoveredParametersWarning):
        capture = LayerCapture(model)
    kinds = {layer.name: layer.kind for layer in capture.layers}
    assert kinds["transformer.h.0.attn.c_attn"] == "conv1d"
    assert kinds["transformer.h.1.mlp.c_proj"] == "conv1d"
    assert kinds["transformer.wte"] == kinds["transformer.wpe"] == "embedding"
    assert kinds["lm_head"] == "linear"
    # lm_head.weight is transformer.wte.weight: one name, two covered layers.
    assert "lm_head.weight" not in capture.covered_parameters
    assert "transformer.wte.weight" in capture.covered_parameters


def test_frozen_parameters_are_neither_covered_nor_reported() -> None:
    model = EmbedMLP().double()
    model.hidden.weight.requires_grad_(False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UncoveredParametersWarning)
        attributor = InRunAttributor(model)
    assert "hidden.weight" not in attributor.covered_parameters
    assert "hidden.bias" in attributor.covered_parameters
    attributor.refresh_probe_gradients(probes())
    batch = padded_batch(3, 7, 1)
    expected = brute_force_scores(model, batch, probes(), attributor.covered_parameters)
    assert relative_error(attributor.score(batch, accumulate_grad=False), expected) <= 1e-4


class FunctionalReuse(nn.Module):
    """Uses ``proj.weight`` once through the layer and once functionally (hooks miss that use),
    and has an ``nn.MultiheadAttention`` whose ``out_proj`` Linear never runs its forward."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 8)
        self.proj = nn.Linear(8, 8)
        self.attention = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, VOCAB)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.embed(idx)
        x = self.proj(x) + F.linear(torch.tanh(x), self.proj.weight)
        mask = nn.Transformer.generate_square_subsequent_mask(idx.shape[1], dtype=x.dtype)
        x = x + self.attention(x, x, x, attn_mask=mask, need_weights=False)[0]
        return self.head(x)


def test_coverage_check_excludes_weights_used_outside_their_layer() -> None:
    torch.manual_seed(0)
    model = FunctionalReuse().double()
    with pytest.warns(UncoveredParametersWarning, match="MultiheadAttention"):
        attributor = InRunAttributor(model)
    with pytest.warns(UncoveredParametersWarning, match="do not see their whole gradient") as record:
        attributor.refresh_probe_gradients(probes())
    message = str(record[0].message)
    assert "proj.weight" in message and "attention.out_proj.weight" in message
    assert set(attributor.excluded_parameters) == {
        "proj.weight", "attention.out_proj.weight", "attention.out_proj.bias"}
    assert "proj.bias" in attributor.covered_parameters  # the bias has only the layer's use
    # What remains covered is still exact.
    batch = padded_batch(3, 7, 2)
    expected = brute_force_scores(model, batch, probes(), attributor.covered_parameters)
    assert relative_error(attributor.score(batch, accumulate_grad=False), expected) <= 1e-4


def test_misuse_fails_loudly() -> None:
    model = EmbedMLP().double()
    attributor = InRunAttributor(model)
    batch = padded_batch(2, 5, 1)
    with pytest.raises(RuntimeError, match="refresh_probe_gradients"):
        attributor.begin(batch)
    attributor.refresh_probe_gradients(probes())
    attributor.begin(batch)
    with pytest.raises(RuntimeError, match="twice"):
        attributor.begin(batch)
    with pytest.raises(RuntimeError, match="in flight"):
        attributor.refresh_probe_gradients(probes())
    model(batch["input_ids"]).sum()  # a forward, but no backward
    with pytest.raises(RuntimeError, match="before backward"):
        attributor.finish()
    with pytest.raises(RuntimeError, match="without begin"):
        attributor.finish()
    # cancel() disarms; a backward that arrives afterwards is ignored.
    attributor.begin(batch)
    loss = model(batch["input_ids"]).sum()
    attributor.cancel()
    loss.backward()
    assert not attributor.armed
    with pytest.raises(ValueError, match="mode"):
        from curriculum.attribution import AttributionConfig

        AttributionConfig(mode="fast")


def test_forward_hooks_are_registered_only_while_armed() -> None:
    """Unscored steps run the plain forward: no hook stays on the model between scored steps."""
    model = EmbedMLP().double()
    attributor = InRunAttributor(model)
    attributor.refresh_probe_gradients(probes())
    assert all(not m._forward_hooks for m in model.modules())
    batch = padded_batch(3, 7, 2)
    attributor.begin(batch)
    assert any(m._forward_hooks for m in model.modules())
    from curriculum.attribution import per_example_token_loss

    per_example_token_loss(model, batch).sum().backward()
    attributor.finish()
    assert all(not m._forward_hooks for m in model.modules())
    attributor.begin(batch)
    attributor.cancel()
    assert all(not m._forward_hooks for m in model.modules())


def test_close_removes_hooks() -> None:
    model = EmbedMLP().double()
    attributor = InRunAttributor(model)
    attributor.close()
    assert all(not m._forward_hooks for m in model.modules())


def test_shared_position_lookup_is_split_per_example_or_excluded_when_not_expanded() -> None:
    from curriculum.attribution import AttributionConfig

    model = EmbedMLP().double()  # positions looked up with ids (T,): shared by the batch
    batch = padded_batch(3, 7, 2)
    expanded = InRunAttributor(model)
    expanded.refresh_probe_gradients(probes())
    assert "positions.weight" in expanded.covered_parameters
    expected = brute_force_scores(model, batch, probes(), expanded.covered_parameters)
    assert relative_error(expanded.score(batch, accumulate_grad=False), expected) <= 1e-4
    expanded.close()
    kept = InRunAttributor(model, AttributionConfig(expand_shared_lookups=False))
    with pytest.warns(UncoveredParametersWarning, match="positions.weight"):
        kept.refresh_probe_gradients(probes())
    assert "positions.weight" not in kept.covered_parameters
    expected = brute_force_scores(model, batch, probes(), kept.covered_parameters)
    assert relative_error(kept.score(batch, accumulate_grad=False), expected) <= 1e-4
