"""A tiny causal LM and tokenizer built offline (no downloads) and saved to a local directory."""

from __future__ import annotations

from pathlib import Path

SENTENCES = [
    "The nurse told the family the honest truth.",
    "She returned every coin to its owner because it was fair.",
    "The river runs through the old city and the bridge is made of stone.",
    "Bread needs flour, water, salt and yeast.",
    "The volunteers cared about the wellbeing of everyone at the shelter.",
]


def save_tiny_causal_lm(directory: Path, seed: int = 0) -> Path:
    """A byte-level BPE tokenizer trained on a few sentences plus a random 1-layer GPT-2."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(SENTENCES, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>",
                                   bos_token="<|endoftext|>")
    fast.save_pretrained(directory)
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(fast), n_positions=128, n_embd=32, n_layer=1, n_head=2,
                        eos_token_id=fast.eos_token_id, bos_token_id=fast.eos_token_id)
    GPT2LMHeadModel(config).save_pretrained(directory)
    return directory
