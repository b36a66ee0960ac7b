"""First-order In-Run Data Shapley for K behaviors at once, in the training step's own backward.

At step t the value of training example i for behavior k's probe set V_k is

    score_ik = -lr_t * <grad L_Vk(w_t), grad l_i(w_t)>            (Wang et al., ICLR 2025)

-- the first-order change of the probe loss that example i's gradient causes (negative: the
example lowers the probe loss, i.e. pushes behavior k). ``l_i`` and ``L_Vk`` are defined in
:mod:`curriculum.attribution.losses`; under Adam the probe gradient is preconditioned as in
:mod:`curriculum.attribution.probe`. The attributor computes the dot products from the layer
inputs and output gradients the normal backward produces (:mod:`~curriculum.attribution.hooks`,
:mod:`~curriculum.attribution.ghost`): the model's per-example gradients are never formed (the
``per_example`` form, chosen where it is cheaper, builds one layer's for a bounded chunk of
examples at a time and drops it), and the parameters' ``.grad`` is exactly what it is without
attribution.

Scores cover the parameters of covered layers only (``covered_parameters``); the others are
listed in a warning. A parameter shared by several layers (tied embeddings) is handled: its
probe gradient is the total over all uses, and each use's piece is dotted with that total, which
sums to the dot product with the shared parameter's full per-example gradient.

Scores are per batch *row*. With the loaders' ``pad`` packing a row is one document (a long
document split over several rows has one score per chunk; its score is their sum, as its
gradient is); with ``concat`` packing a row holds several documents that attention mixes.
``begin(batch, per_token=True)`` makes :meth:`InRunAttributor.finish` return the (B, T, K)
per-token terms whose sum over T is the row's score (each token position's layer inputs and
output gradients, see :mod:`~curriculum.attribution.ghost`), so a packed row's score can be
summed per document segment. Under Adam the probe gradients are divided, at :meth:`finish`,
by the second moment of the update the optimizer is about to make -- ``v_t`` including this
step's ``.grad`` (:func:`~curriculum.attribution.probe.adam_update_denominator`) -- so in that
mode the layer pieces are kept until :meth:`finish` (at most the memory the forward's
activations took). Probe gradients are those of the last
:meth:`InRunAttributor.refresh_probe_gradients` (a schedule such as ``probe_refresh_steps``
trades their staleness for cost); :meth:`InRunAttributor.refresh_preconditioner` re-reads Adam's
state without a probe pass. Memory: the probe gradients take K times the covered parameters
(twice that under preconditioning, to keep the raw ones for re-preconditioning).

What must hold for the scores to be per-example: the backpropagated loss is a sum of per-example
terms (true for the token losses here; false with batch norm, or when examples attend to each
other); with a ``GradScaler`` pass its scale as ``loss_scale``; activation checkpointing and
``torch.compile`` of the covered layers are not supported. Under DDP, pass the unwrapped module:
each rank scores its own examples against its local loss.
"""

from __future__ import annotations

import contextlib
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from curriculum.attribution.config import AttributionConfig
from curriculum.attribution.coverage import coverage_errors
from curriculum.attribution.ghost import GramFactors, choose_form, dot_products
from curriculum.attribution.hooks import (
    GradientPiece,
    LayerCapture,
    Sink,
    UncoveredParametersWarning,
    warn_uncovered_parameters,
)
from curriculum.attribution.losses import (
    Batch,
    PerExampleLoss,
    ProbeLoss,
    mean_token_probe_loss,
    per_example_token_loss,
)
from curriculum.attribution.probe import (
    adam_denominator,
    adam_update_denominator,
    batch_slices,
    compute_probe_gradients,
    is_adam,
    optimizer_steps,
    parameter_group,
    unwrap_optimizer,
)
from curriculum.attribution.sketch import (
    SketchedProbe,
    single_threaded,
    sketch_probe_gradients,
    sketch_saves_work,
    sketched_dot_products,
    with_bias,
)


@dataclass
class ScoreResult:
    """Filled when an :meth:`InRunAttributor.scoring` block exits normally."""

    scores: torch.Tensor | None = None
    """(B, K) scores of the block's batch."""


class InRunAttributor:
    """Per-example scores (B, K) for K behaviors, from the training step's own backward pass.

    Plain PyTorch::

        attributor = InRunAttributor(model, optimizer=optimizer)
        attributor.refresh_probe_gradients({"values": probe_a, "deception": probe_b})
        loss, scores = attributor.loss_and_scores(batch, lr=lr)   # runs loss.backward()
        optimizer.step()

    Where something else runs ``backward`` (Lightning), split the step in two::

        on_train_batch_start:  attributor.refresh_probe_gradients(probes)  # on its schedule
                               attributor.begin(batch)
        (training_step's forward; Lightning's loss.backward())
        on_after_backward:     scores = attributor.finish(lr=current_lr)   # before the step
        on_train_batch_end:    if attributor.armed: attributor.cancel()    # backward skipped

    or, around code that does both, ``with attributor.scoring(batch, lr) as result: ...``.
    """

    def __init__(
        self,
        model: nn.Module,
        config: AttributionConfig | None = None,
        *,
        optimizer: object | None = None,
        loss_fn: PerExampleLoss = per_example_token_loss,
        probe_loss_fn: ProbeLoss = mean_token_probe_loss,
    ) -> None:
        self.model = model
        self.config = config or AttributionConfig()
        self.loss_fn = loss_fn
        self.probe_loss_fn = probe_loss_fn
        self.optimizer = None if optimizer is None else unwrap_optimizer(optimizer)
        adam = self.optimizer is not None and is_adam(self.optimizer)
        if self.config.precondition and not adam:
            raise ValueError("precondition=True needs an Adam or AdamW optimizer")
        self.precondition: bool = adam if self.config.precondition is None else self.config.precondition
        """Whether probe gradients are divided by Adam's ``sqrt(v_hat) + eps``."""
        self.capture = LayerCapture(model, self.config.warn_uncovered,
                                    self.config.expand_shared_lookups)
        covered = set(self.capture.covered_parameters)
        self._parameters = {n: p for n, p in model.named_parameters() if n in covered}
        uses = Counter(
            name for layer in self.capture.layers for name in (layer.weight, layer.bias) if name
        )
        self._shared = {name for name, count in uses.items() if count > 1}
        self._dense_weights = {
            layer.weight
            for layer in self.capture.layers
            if layer.weight and layer.kind in ("linear", "conv1d")
        }
        self.excluded_parameters: dict[str, float] = {}
        """Parameters the coverage check moved out, with their gradient's relative error."""
        self.behaviors: tuple[str, ...] = ()
        """Probe sets, in the column order of the scores."""
        self.probe_losses: dict[str, float] = {}
        """Mean token loss of each probe set at the last refresh."""
        self.unpreconditioned_parameters: list[str] = []
        """Parameters without Adam state at the last refresh (scored without preconditioning)."""
        self.forms_used: Counter[tuple[str, str]] = Counter()
        """``(parameter, form)`` counts of the last scored batch (``aggregated``, ``per_example``,
        ``gram``, ``sketched``, ``lookup``, ``bias``)."""
        self._raw: dict[str, torch.Tensor] = {}
        self._effective: dict[str, torch.Tensor] = {}
        self._groups: dict[str, dict[str, object]] = {}
        self._preconditioned_at = 0
        self._gram: dict[str, GramFactors] = {}
        self._sketches: dict[str, SketchedProbe] = {}
        self._folded_biases: set[str] = set()
        self._coverage_checked = not self.config.check_coverage
        self._scores: torch.Tensor | None = None
        self._batch_size = 0
        self._tokens = 0
        self._per_token = False
        self._pending: list[GradientPiece] = []

    # -- what is covered ------------------------------------------------------------------------

    @property
    def covered_parameters(self) -> list[str]:
        """Names of the parameters the scores are gradient dot products over."""
        return list(self._parameters)

    @property
    def uncovered_parameters(self) -> list[str]:
        """Trainable parameters left out of the scores (uncovered layers, failed coverage)."""
        return self.capture.uncovered_parameters + list(self.excluded_parameters)

    @property
    def num_behaviors(self) -> int:
        """K."""
        return len(self.behaviors)

    @property
    def armed(self) -> bool:
        """True between :meth:`begin` and :meth:`finish` / :meth:`cancel`."""
        return self.capture.armed

    # -- probe side -----------------------------------------------------------------------------

    def refresh_probe_gradients(self, probe_batches: Mapping[str, Batch]) -> dict[str, float]:
        """Recompute every behavior's probe gradient at the current weights (and the Adam
        preconditioner, and the sketch); returns each probe set's mean token loss.

        ``probe_batches`` maps behavior -> batch (``input_ids``, ``labels``); its key order is
        the column order of the scores. ``.grad`` and the random state are left untouched.
        """
        if self.armed:
            raise RuntimeError("refresh_probe_gradients() while a scored step is in flight")
        if not probe_batches:
            raise ValueError("need at least one probe set")
        if not self._coverage_checked:
            self._check_coverage(next(iter(probe_batches.values())))
        gram_names = self._gram_candidates(probe_batches)
        collected: dict[str, list[tuple[torch.Tensor, torch.Tensor, int]]] = {
            name: [] for name in gram_names
        }

        def sink_for(k: int) -> Sink:
            def sink(pieces: list[GradientPiece]) -> None:
                for piece in pieces:
                    if piece.name in collected and piece.cols is not None and not piece.is_lookup:
                        rows, cols = piece.rows.flatten(0, 1), piece.cols.flatten(0, 1)
                        keep = (rows != 0).any(dim=1) & (cols != 0).any(dim=1)
                        collected[piece.name].append((rows[keep], cols[keep], k))

            return sink

        probe = compute_probe_gradients(
            self.model,
            self._parameters,
            probe_batches,
            self.probe_loss_fn,
            self.config.probe_micro_batch_size,
            self.capture if gram_names else None,
            sink_for if gram_names else None,
            gram_names,
        )
        self.behaviors = probe.behaviors
        self.probe_losses = dict(probe.losses)
        self._raw = probe.gradients
        self._gram = {
            name: _gram_factors(parts, len(self.behaviors), self._raw[name].dtype)
            for name, parts in collected.items()
            if parts
        }
        self.refresh_preconditioner()
        return dict(probe.losses)

    def refresh_preconditioner(self) -> None:
        """Re-read Adam's second moments (and re-sketch): cheap, no forward or backward.

        In exact mode :meth:`finish` divides by the second moment of the step about to happen
        (this step's ``.grad`` included), so scores always describe the update they are part of;
        this method then only matters for scores with no step pending. In sketched mode the
        sketch is built once per probe refresh, from the preconditioner of that moment
        (re-sketching costs QR factorizations); call this to rebuild it in between.
        """
        if not self._raw:
            raise RuntimeError("call refresh_probe_gradients() first")
        effective = self._preconditioned()
        self._effective = effective
        self._preconditioned_at = self._optimizer_steps()
        self._sketches, self._folded_biases = {}, set()
        if self.config.mode == "sketched":
            self._sketch(effective)

    def preconditioned_probe_gradient(self, name: str,
                                      gradient: torch.Tensor | None = None) -> torch.Tensor:
        """The (K, *shape) probe gradients of covered parameter ``name`` as exact scoring dots
        them: divided, when preconditioning, by the second moment of the step that applies
        ``gradient`` (None: the optimizer state's). For callers that form per-example gradients
        themselves (in-batch selection), one parameter at a time."""
        raw = self._raw[name]
        if not self.precondition:
            return raw
        parameter = self._parameters[name]
        group = self._groups.get(name)
        if group is None:
            group = self._groups[name] = parameter_group(self.optimizer, parameter)
        with torch.no_grad():
            if gradient is None:
                denominator = adam_denominator(self.optimizer, parameter, group)
            else:
                denominator = adam_update_denominator(self.optimizer, parameter, gradient, group)
            return raw if denominator is None else raw / denominator.to(raw.dtype)

    def _preconditioned(self, grad_divisor: float = 0.0) -> dict[str, torch.Tensor]:
        """Probe gradients over Adam's denominator: the state's (``grad_divisor`` 0), or the one
        of the step applying ``.grad / grad_divisor`` (where a parameter has a ``.grad``)."""
        self.unpreconditioned_parameters = []
        effective: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for name, raw in self._raw.items():
                parameter = self._parameters[name]
                denominator = None
                if self.precondition:
                    group = self._groups.get(name)
                    if group is None:
                        group = self._groups[name] = parameter_group(self.optimizer, parameter)
                    if grad_divisor and parameter.grad is not None:
                        gradient = parameter.grad.detach()
                        gradient = gradient / grad_divisor if grad_divisor != 1.0 else gradient
                        denominator = adam_update_denominator(self.optimizer, parameter,
                                                              gradient, group)
                    else:
                        denominator = adam_denominator(self.optimizer, parameter, group)
                    if denominator is None:
                        self.unpreconditioned_parameters.append(name)
                if denominator is None:
                    effective[name] = raw
                    continue
                # Reuse last time's buffer: this runs on every scored step.
                buffer = self._effective.get(name)
                if buffer is None or buffer is raw or buffer.shape != raw.shape:
                    buffer = torch.empty_like(raw)
                effective[name] = torch.div(raw, denominator.to(raw.dtype), out=buffer)
        return effective

    def _sketch(self, effective: dict[str, torch.Tensor]) -> None:
        generator = torch.Generator().manual_seed(self.config.seed)
        biases = {layer.weight: (layer.bias, "cols" if layer.kind == "linear" else "rows")
                  for layer in self.capture.layers
                  if layer.weight in self._dense_weights and layer.bias in effective
                  and not {layer.weight, layer.bias} & self._shared}
        on_cpu = next(iter(effective.values())).device.type == "cpu"
        with single_threaded() if on_cpu else contextlib.nullcontext():
            for name in sorted(self._dense_weights & set(effective)):
                probe = effective[name]
                if not sketch_saves_work(probe.shape[1], probe.shape[2], self.config.sketch_rank):
                    continue
                bias, side = biases.get(name, (None, None))
                if bias is not None:
                    probe = with_bias(probe, effective[bias], side)
                sketch = sketch_probe_gradients(
                    probe, self.config.sketch_rank, self.config.sketch_power_iterations, generator
                )
                sketch.bias, sketch.bias_side = bias, side
                self._sketches[name] = sketch
        self._folded_biases = {s.bias for s in self._sketches.values() if s.bias}

    def _optimizer_steps(self) -> int:
        if not self.precondition or not self._parameters:
            return 0
        return optimizer_steps(self.optimizer, next(iter(self._parameters.values())))

    # -- training side --------------------------------------------------------------------------

    @property
    def defers_scoring(self) -> bool:
        """Exact preconditioned scores wait for :meth:`finish`: the preconditioner needs this
        step's ``.grad``, complete only after the backward."""
        return self.precondition and self.config.mode == "exact"

    def begin(self, batch: Batch | torch.Tensor, per_token: bool = False) -> None:
        """Arm the hooks for the next forward and backward of ``batch`` (or its ``input_ids``);
        ``per_token``: :meth:`finish` returns (B, T, K) per-token terms instead of (B, K)."""
        if not self._effective:
            raise RuntimeError("call refresh_probe_gradients() before scoring")
        if self.armed:
            raise RuntimeError("begin() twice without finish() or cancel()")
        input_ids = batch if isinstance(batch, torch.Tensor) else batch["input_ids"]
        self._batch_size = int(input_ids.shape[0])
        self._tokens = int(input_ids.shape[1]) if input_ids.ndim > 1 else 1
        self._per_token = per_token
        self._pending = []
        self._scores = None
        self.forms_used = Counter()
        sink = self._pending.extend if self.defers_scoring else self._accumulate
        self.capture.arm(input_ids.shape, sink, set(self._parameters))

    def finish(self, lr: float | None = None, loss_scale: float = 1.0, grad_scale: float = 1.0,
               step_follows: bool = True) -> torch.Tensor:
        """The (B, K) scores of the batch since :meth:`begin` ((B, T, K) per-token terms when
        begun with ``per_token``); call after its backward, before the optimizer step.

        ``lr``: multiply by ``-lr`` (the In-Run Data Shapley value); None returns the plain dot
        products ``<P G_k, grad l_i>``. ``loss_scale``: a factor the backpropagated loss carried
        that is not part of the update (AMP ``GradScaler`` scale), divided out. ``grad_scale``:
        the factor the optimizer step will apply to ``.grad`` (gradient clipping's
        ``min(1, max_norm / norm)``): each example's gradient enters the update scaled by it.
        ``step_follows``: an optimizer step applies ``.grad`` next (exact preconditioned mode
        then divides by that step's second moment; False: by the state's, no step pending).
        """
        if not self.armed:
            raise RuntimeError("finish() without begin()")
        recorded, received = self.capture.calls_recorded, self.capture.calls_received
        unattributable = sorted(self.capture.unattributable)
        self.capture.disarm()
        if self._pending:
            pending, self._pending = self._pending, []
            self._effective = self._preconditioned(loss_scale / grad_scale if step_follows else 0.0)
            self._accumulate(pending)
        scores, self._scores = self._scores, None
        if recorded == 0:
            raise RuntimeError("no covered layer ran a forward between begin() and finish()")
        if received == 0:
            raise RuntimeError("finish() before backward: no gradient reached the hooks")
        if unattributable:
            warnings.warn(
                f"calls of {', '.join(unattributable)} did not fit the batch layout and are left "
                "out of this batch's scores",
                UncoveredParametersWarning,
                stacklevel=2,
            )
        if scores is None:
            dtype = next(iter(self._effective.values())).dtype
            shape = (self._batch_size, self._tokens) if self._per_token else (self._batch_size,)
            scores = torch.zeros(*shape, self.num_behaviors, dtype=dtype)
        if loss_scale != 1.0 or grad_scale != 1.0:
            scores = scores * (grad_scale / loss_scale)
        return scores if lr is None else scores * (-float(lr))

    def cancel(self) -> None:
        """Disarm without scores (a step whose backward did not happen)."""
        self.capture.disarm()
        self._scores = None
        self._pending = []

    @contextlib.contextmanager
    def scoring(
        self, batch: Batch | torch.Tensor, lr: float | None = None, loss_scale: float = 1.0
    ) -> Iterator[ScoreResult]:
        """``begin`` on entry, ``finish`` on normal exit (into ``result.scores``), ``cancel`` on
        an exception; run the forward and backward inside."""
        result = ScoreResult()
        self.begin(batch)
        try:
            yield result
        except BaseException:
            self.cancel()
            raise
        result.scores = self.finish(lr, loss_scale)

    def loss_and_scores(
        self, batch: Batch, lr: float | None = None, accumulate_grad: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward with ``loss_fn``, backward, and the (B, K) scores: ``(loss, scores)``.

        With ``accumulate_grad`` (a training step) the batch loss is backpropagated with
        ``loss.backward()`` into ``.grad`` exactly as without attribution; without it, ``.grad``
        is left alone (scoring documents that are not trained on).
        """
        device = next(iter(self._parameters.values())).device
        (batch,) = batch_slices(batch, int(batch["input_ids"].shape[0]), device)
        self.begin(batch)
        try:
            loss = self.loss_fn(self.model, batch).sum()
            if accumulate_grad:
                loss.backward()
            else:
                torch.autograd.grad(loss, list(self._parameters.values()), allow_unused=True)
        except BaseException:
            self.cancel()
            raise
        return loss.detach(), self.finish(lr, step_follows=accumulate_grad)

    def score(self, batch: Batch, lr: float | None = None, accumulate_grad: bool = True) -> torch.Tensor:
        """The (B, K) scores of ``batch`` (see :meth:`loss_and_scores`)."""
        return self.loss_and_scores(batch, lr, accumulate_grad)[1]

    def close(self) -> None:
        """Remove the hooks from the model."""
        self.capture.remove()

    def __enter__(self) -> InRunAttributor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------------

    def _accumulate(self, pieces: list[GradientPiece]) -> None:
        num_probes = self.num_behaviors
        for piece in pieces:
            probe = self._effective[piece.name]
            sketch = self._sketches.get(piece.name)
            if piece.cols is None and piece.name in self._folded_biases:
                # Sketched with its weight: the weight's piece, from the same call, scores it.
                self.forms_used[(piece.name, "sketched")] += 1
                continue
            per_token = self._per_token
            if piece.cols is None:
                form, dots = "bias", dot_products(piece, probe, per_token=per_token)
            elif piece.is_lookup:
                form = "lookup"
                dots = dot_products(piece, probe, max_chunk_bytes=self.config.max_chunk_bytes,
                                    per_token=per_token)
            elif sketch is not None:
                form, dots = "sketched", sketched_dot_products(piece, sketch, per_token)
            else:
                gram = self._gram.get(piece.name)
                form = choose_form(piece, num_probes, self.config.exact_forms, gram, per_token)
                dots = dot_products(piece, probe, form, gram, self.config.max_chunk_bytes,
                                    per_token)
            if per_token and dots.shape[1] != self._tokens:
                raise ValueError(f"{piece.name}: per-token scores need every covered call to see "
                                 f"the batch's {self._tokens} positions, got {dots.shape[1]}")
            self.forms_used[(piece.name, form)] += 1
            if self._scores is None:
                self._scores = dots
            else:
                self._scores += dots

    def _gram_candidates(self, probe_batches: Mapping[str, Batch]) -> set[str]:
        """Weights whose Gram form could beat the others: exact mode, no preconditioning, not
        shared, and few probe tokens (``M (m + n) < K m n``, or ``gram`` is the only form)."""
        if self.config.mode != "exact" or "gram" not in self.config.exact_forms or self.precondition:
            return set()
        probe_tokens = sum(int(b["input_ids"].numel()) for b in probe_batches.values())
        num_probes = len(probe_batches)
        names = set()
        for name in self._dense_weights - self._shared:
            if name not in self._parameters:
                continue
            m, n = self._parameters[name].shape
            only_gram = self.config.exact_forms == ("gram",)
            if only_gram or probe_tokens * (m + n + 1) < num_probes * m * n:
                names.add(name)
        return names

    def _check_coverage(self, batch: Batch) -> None:
        rows = self.config.coverage_check_rows
        sample = {k: v[:rows] for k, v in batch.items() if isinstance(v, torch.Tensor)}
        errors = coverage_errors(self.model, self.capture, self._parameters, sample, self.probe_loss_fn)
        first = next(iter(self._parameters.values()))
        if first.dtype == torch.float64:
            tolerance = 1e-8
        elif first.dtype in (torch.float16, torch.bfloat16) or torch.is_autocast_enabled(
            first.device.type
        ):
            tolerance = 5e-2  # half-precision GEMMs on either side
        else:
            tolerance = 1e-3
        failed = {name: error for name, error in errors.items() if error > tolerance}
        self._coverage_checked = True
        if not failed:
            return
        for name in failed:
            del self._parameters[name]
        self._dense_weights -= set(failed)
        self.excluded_parameters.update(failed)
        layers = {f"{name} (relative error {error:.2g})": [name] for name, error in failed.items()}
        warn_uncovered_parameters(
            self.model,
            list(failed),
            layers,
            reason=": the hooks do not see their whole gradient (used outside a covered layer's "
            "forward, or in a batch layout the hooks cannot split)",
        )


def _gram_factors(
    parts: list[tuple[torch.Tensor, torch.Tensor, int]], num_probes: int, dtype: torch.dtype
) -> GramFactors:
    rows = torch.cat([r for r, _, _ in parts]).to(dtype)
    cols = torch.cat([c for _, c, _ in parts]).to(dtype)
    membership = torch.zeros(rows.shape[0], num_probes, dtype=dtype, device=rows.device)
    start = 0
    for r, _, k in parts:
        membership[start : start + r.shape[0], k] = 1.0
        start += r.shape[0]
    return GramFactors(rows, cols, membership)
