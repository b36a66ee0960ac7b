"""The LightningModule: a causal LM whose loss honours the batch's ``loss_weight``."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from curriculum.batch import IGNORE_INDEX
from train.config import ModelConfig, OptimConfig
from train.model import GPT
from train.probes import ProbeBatches, mean_token_loss


class HFCausalLM(nn.Module):
    """A Hugging Face causal LM from a local directory, returning logits like :class:`GPT`."""

    def __init__(self, path: str) -> None:
        super().__init__()
        try:
            from transformers import AutoModelForCausalLM
        except ImportError as error:
            raise ImportError("a Hugging Face model needs transformers: "
                              "pip install 'curriculum-loader[hf]'") from error
        self.model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, vocab)."""
        return self.model(input_ids=idx).logits


def build_model(config: ModelConfig) -> nn.Module:
    """The reference GPT, or a local Hugging Face model when ``hf_path`` is set."""
    return HFCausalLM(config.hf_path) if config.hf_path else GPT(config.gpt)


def weighted_token_loss(logits: torch.Tensor, labels: torch.Tensor,
                        loss_weight: torch.Tensor) -> torch.Tensor:
    """``sum(w * CE) / number of labelled tokens``: weights scale documents, not the batch size."""
    per_token = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(),
                                ignore_index=IGNORE_INDEX, reduction="none")
    valid = (labels.flatten() != IGNORE_INDEX).float()
    return (per_token * loss_weight.flatten() * valid).sum() / valid.sum().clamp_min(1.0)


class CurriculumLM(L.LightningModule):
    """Trains a causal LM on packed batches and reports probe losses per behavior."""

    def __init__(self, model: ModelConfig | None = None, optim: OptimConfig | None = None,
                 max_steps: int = 300) -> None:
        super().__init__()
        self.model_config = model or ModelConfig()
        self.optim_config = optim or OptimConfig()
        self.max_steps = max_steps
        self.model = build_model(self.model_config)
        self.probe_batches: ProbeBatches = {}
        self.tokens_seen = 0

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Logits of the wrapped model."""
        return self.model(input_ids)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Weighted next-token loss of one packed batch."""
        logits = self(batch["input_ids"])
        loss = weighted_token_loss(logits, batch["labels"], batch["loss_weight"])
        self.tokens_seen += int(batch["input_ids"].numel())
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["input_ids"].shape[0])
        self.log("train/tokens", float(self.tokens_seen), reduce_fx="max")
        if "skipped_rows" in batch:
            self.log("data/skipped_rows", batch["skipped_rows"].float(), reduce_fx="sum")
        return loss

    @torch.no_grad()
    def probe_losses(self) -> dict[str, float]:
        """Mean token loss on each probe set (eval mode, no gradient)."""
        was_training = self.training
        self.eval()
        losses = {}
        for behavior, batch in self.probe_batches.items():
            logits = self(batch["input_ids"].to(self.device))
            losses[behavior] = float(mean_token_loss(logits, batch["labels"].to(self.device)))
        self.train(was_training)
        return losses

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW (no decay on biases, norms and embeddings) with warmup and cosine decay."""
        config = self.optim_config
        decay, no_decay, seen = [], [], set()
        for module in self.model.modules():
            for name, parameter in module.named_parameters(recurse=False):
                # Tied weights (GPT-2's wte and lm_head) are one parameter: put it in one group.
                if not parameter.requires_grad or id(parameter) in seen:
                    continue
                seen.add(id(parameter))
                is_matrix = parameter.dim() >= 2 and not isinstance(module, nn.Embedding)
                (decay if is_matrix and name == "weight" else no_decay).append(parameter)
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": config.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=config.lr, betas=(config.beta1, config.beta2), eps=config.eps,
        )
        decay_steps = config.decay_steps or self.max_steps

        def schedule(step: int) -> float:
            if step < config.warmup_steps:
                return (step + 1) / config.warmup_steps
            progress = min(1.0, (step - config.warmup_steps) / max(1, decay_steps - config.warmup_steps))
            cosine = 0.5 * (1 + math.cos(math.pi * progress))
            return config.min_lr_ratio + (1 - config.min_lr_ratio) * cosine

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the token count with the weights."""
        checkpoint["tokens_seen"] = self.tokens_seen

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the token count."""
        self.tokens_seen = int(checkpoint.get("tokens_seen", 0))
