"""Probe gradients per behavior, and Adam's preconditioner read from the optimizer state.

Probe gradients are computed with ``torch.autograd.grad`` -- never ``.backward()`` -- so they
cannot leak into the ``.grad`` the optimizer applies; in eval mode (no dropout, no batch-norm
statistics) and inside ``torch.random.fork_rng``, so the training run's random stream is the
same with and without attribution.

Adam preconditioning. ``torch.optim.Adam``/``AdamW`` update a parameter by

    m_t = b1 m_{t-1} + (1 - b1) g_t          v_t = b2 v_{t-1} + (1 - b2) g_t^2
    w  <- w - lr * (m_t / (1 - b1^t)) / (sqrt(v_t / (1 - b2^t)) + eps)

(AMSGrad uses the running maximum of v_t). Example i's gradient g_i enters m with weight
``(1 - b1)`` and keeps acting through momentum on later steps with weights ``(1 - b1) b1^s`` that
sum to 1; with v and lr treated as constant over those steps, the update it causes in total is
``-lr * g_i / (sqrt(v_hat) + eps)``. So the preconditioned score is

    score_ik = -lr * < g_i , G_k / (sqrt(v_hat) + eps) >,   v_hat = v / (1 - b2^t)

where ``v_hat`` is the bias-corrected second moment of *the update the example takes part in*:
``v_t = b2 v_{t-1} + (1 - b2) g_t^2`` with this step's batch gradient ``g_t`` (the parameter's
``.grad`` after the backward, before the optimizer step: :func:`adam_update_denominator`), over
``1 - b2^t`` with the step count after the increment -- exactly the denominator torch's
Adam/AdamW divide this step's update by. Using the state *before* the step instead
(:func:`adam_denominator`, the right thing only when no step follows) would give every parameter
whose ``v`` is still zero -- the embedding rows of tokens not seen before this batch -- a factor
``1/eps`` and let them dominate every score.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from curriculum.attribution.hooks import LayerCapture, Sink
from curriculum.attribution.losses import Batch, ProbeLoss, count_labelled_tokens


@dataclass
class ProbeGradients:
    """Gradients of each behavior's probe loss at the current weights."""

    behaviors: tuple[str, ...]
    """Probe sets in column order of the scores."""
    gradients: dict[str, torch.Tensor]
    """Parameter name -> (K, *parameter.shape), unpreconditioned."""
    losses: dict[str, float]
    """Behavior -> mean token loss on its probe set."""
    num_tokens: dict[str, int]
    """Behavior -> labelled tokens in its probe set."""


@contextlib.contextmanager
def probe_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode, gradients on, and the random state restored afterwards."""
    training = {module: module.training for module in model.modules()}
    devices = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    try:
        with torch.random.fork_rng(devices=devices), torch.enable_grad():
            model.eval()
            yield
    finally:
        for module, mode in training.items():
            module.training = mode


def batch_slices(batch: Batch, size: int, device: torch.device) -> Iterator[dict[str, torch.Tensor]]:
    """Consecutive row slices of ``batch`` of at most ``size`` rows, on ``device``."""
    rows = int(batch["input_ids"].shape[0])
    for start in range(0, rows, size):
        yield {
            key: value[start : start + size].to(device)
            for key, value in batch.items()
            if isinstance(value, torch.Tensor) and value.ndim >= 1 and value.shape[0] == rows
        }


def compute_probe_gradients(
    model: nn.Module,
    parameters: Mapping[str, nn.Parameter],
    probe_batches: Mapping[str, Batch],
    probe_loss_fn: ProbeLoss,
    micro_batch_size: int,
    capture: LayerCapture | None = None,
    sink_for: Callable[[int], Sink] | None = None,
    capture_parameters: set[str] | None = None,
) -> ProbeGradients:
    """Gradient of ``L_Vk`` (mean token loss over probe set k) for each k, micro-batched.

    With ``capture`` and ``sink_for``, the layer pieces of probe set k's backward passes go to
    ``sink_for(k)`` (the Gram form needs the probe tokens' own rows and cols).
    """
    names = list(parameters)
    tensors = [parameters[name] for name in names]
    if not tensors:
        raise ValueError("no parameter to compute probe gradients for")
    device = tensors[0].device
    behaviors = tuple(probe_batches)
    gradients = {
        name: torch.zeros((len(behaviors), *p.shape), dtype=p.dtype, device=p.device)
        for name, p in zip(names, tensors, strict=True)
    }
    losses: dict[str, float] = {}
    num_tokens: dict[str, int] = {}
    with probe_mode(model):
        for k, behavior in enumerate(behaviors):
            batch = probe_batches[behavior]
            total = count_labelled_tokens(batch)
            if total == 0:
                raise ValueError(f"probe set {behavior!r} has no labelled token")
            loss_sum = 0.0
            for chunk in batch_slices(batch, micro_batch_size, device):
                if capture is not None and sink_for is not None:
                    capture.arm(chunk["input_ids"].shape, sink_for(k), capture_parameters)
                try:
                    loss = probe_loss_fn(model, chunk, total)
                    parts = torch.autograd.grad(loss, tensors, allow_unused=True)
                finally:
                    if capture is not None:
                        capture.disarm()
                for name, part in zip(names, parts, strict=True):
                    if part is not None:
                        gradients[name][k] += part
                loss_sum += float(loss.detach())
            losses[behavior] = loss_sum
            num_tokens[behavior] = total
    return ProbeGradients(behaviors, gradients, losses, num_tokens)


def unwrap_optimizer(optimizer: object) -> torch.optim.Optimizer:
    """The torch optimizer inside a Lightning ``LightningOptimizer`` (or the argument itself)."""
    inner = getattr(optimizer, "_optimizer", optimizer)
    if not isinstance(inner, torch.optim.Optimizer):
        raise TypeError(f"expected a torch optimizer, got {type(optimizer).__name__}")
    return inner


def is_adam(optimizer: object) -> bool:
    """Adam or AdamW (the optimizers whose second moment the scores can use)."""
    return isinstance(unwrap_optimizer(optimizer), (torch.optim.Adam, torch.optim.AdamW))


def adam_denominator(optimizer: object, parameter: nn.Parameter,
                     group: Mapping[str, object] | None = None) -> torch.Tensor | None:
    """``sqrt(v / (1 - b2^t)) + eps`` for ``parameter``, exactly torch's Adam denominator (see the
    module docs), as a fresh tensor; None when the optimizer holds no state for it yet (before
    its first step). ``group``: the parameter's group, when the caller has already found it."""
    inner = unwrap_optimizer(optimizer)
    if group is None:
        group = parameter_group(inner, parameter)
    if group.get("maximize", False):
        raise ValueError("Adam with maximize=True is not supported by preconditioned scores")
    state = inner.state.get(parameter, {})
    if "exp_avg_sq" not in state:
        return None
    step = float(state["step"])
    if step <= 0:
        return None
    beta2 = float(group["betas"][1])
    eps = float(group["eps"])
    second_moment = state["max_exp_avg_sq"] if group.get("amsgrad", False) else state["exp_avg_sq"]
    # The same arithmetic as torch.optim.Adam's denominator, in place on one fresh tensor.
    bias_correction_sqrt = (1.0 - beta2**step) ** 0.5
    return second_moment.sqrt().div_(bias_correction_sqrt).add_(eps)


def adam_update_denominator(optimizer: object, parameter: nn.Parameter, gradient: torch.Tensor,
                            group: Mapping[str, object] | None = None) -> torch.Tensor:
    """``sqrt(v_t / (1 - b2^t)) + eps`` of the optimizer step about to apply ``gradient`` to
    ``parameter``: ``v_t = b2 v_{t-1} + (1 - b2) gradient^2`` from the state (``v_0 = 0`` before
    the first step), ``t`` one more than the steps taken, the running maximum under AMSGrad and
    the L2 term of coupled weight decay (``Adam(weight_decay=...)``) included -- the denominator
    torch divides this step's update by. The state is not modified."""
    inner = unwrap_optimizer(optimizer)
    if group is None:
        group = parameter_group(inner, parameter)
    if group.get("maximize", False):
        raise ValueError("Adam with maximize=True is not supported by preconditioned scores")
    state = inner.state.get(parameter, {})
    beta2 = float(group["betas"][1])
    eps = float(group["eps"])
    decay = float(group.get("weight_decay", 0.0) or 0.0)
    decoupled = isinstance(inner, torch.optim.AdamW) or group.get("decoupled_weight_decay", False)
    if decay and not decoupled:
        gradient = gradient + decay * parameter.detach()
    step = float(state["step"]) + 1.0 if "step" in state else 1.0
    second_moment = gradient.square().mul_(1.0 - beta2)
    if "exp_avg_sq" in state:
        second_moment.add_(state["exp_avg_sq"], alpha=beta2)
    if group.get("amsgrad", False) and "max_exp_avg_sq" in state:
        second_moment = torch.maximum(state["max_exp_avg_sq"], second_moment)
    bias_correction_sqrt = (1.0 - beta2**step) ** 0.5
    return second_moment.sqrt_().div_(bias_correction_sqrt).add_(eps)


def adam_preconditioner(optimizer: object, parameter: nn.Parameter) -> torch.Tensor | None:
    """``1 / (sqrt(v / (1 - b2^t)) + eps)`` for ``parameter`` (see the module docs), or None
    when the optimizer holds no state for it yet (before its first step)."""
    denominator = adam_denominator(optimizer, parameter)
    return None if denominator is None else denominator.reciprocal_()


def parameter_group(optimizer: torch.optim.Optimizer, parameter: nn.Parameter) -> dict[str, object]:
    """The optimizer's parameter group holding ``parameter``."""
    for group in optimizer.param_groups:
        if any(p is parameter for p in group["params"]):
            return group
    raise ValueError("parameter is not in the optimizer's parameter groups")


def optimizer_steps(optimizer: object, parameter: nn.Parameter) -> int:
    """Steps the optimizer has taken on ``parameter`` (0 before its first step)."""
    state = unwrap_optimizer(optimizer).state.get(parameter, {})
    return int(float(state["step"])) if "step" in state else 0
