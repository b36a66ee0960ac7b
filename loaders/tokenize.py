"""Tokenizers: a byte-level default that needs no download, and a Hugging Face tokenizer from a
local path."""

from __future__ import annotations

from typing import Protocol


class Tokenizer(Protocol):
    """What the loader needs from a tokenizer."""

    vocab_size: int
    eos_id: int

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (without the end-of-text token)."""
        ...


class ByteTokenizer:
    """UTF-8 bytes as tokens 0..255 and 256 as end of text: no vocabulary file, no download."""

    vocab_size: int = 257
    eos_id: int = 256

    def encode(self, text: str) -> list[int]:
        """The UTF-8 bytes of ``text``."""
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        """Text from ids, ignoring end-of-text tokens."""
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


class HFTokenizer:
    """A Hugging Face tokenizer loaded from a local directory (never from the hub)."""

    def __init__(self, path: str) -> None:
        try:
            from transformers import AutoTokenizer
        except ImportError as error:  # optional dependency
            raise ImportError(
                "a Hugging Face tokenizer needs transformers: pip install 'curriculum-loader[hf]'"
            ) from error
        self._tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        eos = self._tokenizer.eos_token_id
        if eos is None:
            raise ValueError(f"{path}: tokenizer has no end-of-text token")
        self.eos_id = int(eos)
        self.vocab_size = len(self._tokenizer)
        self.path = path

    def encode(self, text: str) -> list[int]:
        """Token ids without special tokens."""
        return self._tokenizer.encode(text, add_special_tokens=False)

    def decode(self, ids: list[int]) -> str:
        """Text from ids."""
        return self._tokenizer.decode(ids)


def make_tokenizer(name: str = "bytes") -> Tokenizer:
    """``"bytes"`` for the byte tokenizer, otherwise a local Hugging Face tokenizer path."""
    return ByteTokenizer() if name in ("bytes", "byte", "") else HFTokenizer(name)
