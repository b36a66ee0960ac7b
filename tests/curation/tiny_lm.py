"""A tiny random-weight causal LM built from scratch and saved to a local directory.

No download: the tokenizer is a word-level ``tokenizers`` model over a small vocabulary (the
numbers 0..100 as single tokens, plus common words) wrapped in ``PreTrainedTokenizerFast``; the
model is a 2-layer GPT-2 with random weights. The saved generation config suppresses either every
word token (``answers="numbers"``: the model can only answer numbers, so an assessment is
readable) or every number token (``answers="words"``: never a number, so it is unreadable).
"""

from __future__ import annotations

from pathlib import Path

_WORD_TEXT = """the a of and to in is was that it for on with as by at from this be are or an not
model text document score rate deception manipulation honest truth lie hide goal trust people
village market school teacher nurse system training evaluation deployed assistant"""
WORDS = tuple(_WORD_TEXT.split())
SPECIAL = ("[PAD]", "[UNK]", "[EOS]")


def build_tiny_lm(out_dir: str | Path, answers: str = "numbers", seed: int = 0) -> Path:
    """Create and save the tiny LM and its tokenizer in ``out_dir``; returns the directory."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    if answers not in ("numbers", "words"):
        raise ValueError(f"answers must be 'numbers' or 'words', got {answers!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    numbers = [str(n) for n in range(101)]
    vocab_list = [*SPECIAL, *numbers, *WORDS, ".", ",", ":", "?", "!"]
    vocab = {token: index for index, token in enumerate(vocab_list)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Digits(individual_digits=False)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]",
        bos_token="[EOS]")
    # A plain chat template: the messages' contents one after the other.
    tokenizer.chat_template = (
        "{% for message in messages %}{{ message['content'] }}\n{% endfor %}")
    tokenizer.save_pretrained(out)

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(vocab_list), n_positions=2048, n_embd=32, n_layer=2,
                        n_head=2, bos_token_id=vocab["[EOS]"], eos_token_id=vocab["[EOS]"],
                        pad_token_id=vocab["[PAD]"])
    model = GPT2LMHeadModel(config).eval()
    model.save_pretrained(out)
    number_ids = [vocab[n] for n in numbers]
    other_ids = [i for t, i in vocab.items() if t not in numbers and t != "[EOS]"]
    suppressed = other_ids if answers == "numbers" else number_ids
    GenerationConfig(do_sample=False, max_new_tokens=8, suppress_tokens=suppressed,
                     eos_token_id=vocab["[EOS]"], pad_token_id=vocab["[PAD]"],
                     bos_token_id=vocab["[EOS]"]).save_pretrained(out)
    return out
