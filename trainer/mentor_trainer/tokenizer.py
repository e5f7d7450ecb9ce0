"""Tokenizers for models trained from scratch on raw text: bytes or characters.

They are saved beside the model (mentor_tokenizer.json), so a later job that starts `from` that
output reads text exactly as training did. Each has an end-of-text id of its own, after the real
bytes or characters: it separates documents in training and ends a sample, and never stands for
a character (a newline, say) that the text really has.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from mentor.api.training import TrainerConfig

FILE = "mentor_tokenizer.json"


class Tokenizer(Protocol):
    vocab_size: int
    eos_id: int | None
    bos_id: int | None  # put before each document, for models that expect it (Llama)

    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: list[int]) -> str: ...
    def save(self, directory: Path) -> None: ...


class ByteTokenizer:
    """UTF-8 bytes: 256 tokens and end-of-text, nothing to learn, any text."""

    eos_id: int | None = 256
    bos_id: int | None = None
    vocab_size = 257

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")

    def save(self, directory: Path) -> None:
        (directory / FILE).write_text(json.dumps({"type": "byte"}))


class CharTokenizer:
    """One token per distinct character of the training text (as nanoGPT's char model)."""

    def __init__(self, chars: list[str], eos: bool = True) -> None:
        self.chars = chars
        self.index = {c: i for i, c in enumerate(chars)}
        # Outputs saved before end-of-text existed have none (eos=False): their vocab stays.
        self.eos_id: int | None = len(chars) if eos else None
        self.bos_id: int | None = None
        self.vocab_size = len(chars) + (1 if eos else 0)

    @classmethod
    def fit(cls, text: str) -> CharTokenizer:
        return cls(sorted(set(text)))

    def encode(self, text: str) -> list[int]:
        unknown = 0
        return [self.index.get(c, unknown) for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i] for i in ids if i < len(self.chars))

    def save(self, directory: Path) -> None:
        (directory / FILE).write_text(json.dumps(
            {"type": "char", "chars": self.chars, "eos": self.eos_id is not None}))


class HFTokenizer:
    """A pre-trained model's own tokenizer, through transformers."""

    def __init__(self, source: str) -> None:
        from transformers import AutoTokenizer

        self.inner = AutoTokenizer.from_pretrained(source)
        self.vocab_size = len(self.inner)
        self.eos_id: int | None = self.inner.eos_token_id
        # Llama's tokenizers begin every text with <s>; GPT-2's do not (its BOS is its EOS).
        # Asked of the tokenizer itself: does it put its BOS first when it adds special tokens?
        bos = self.inner.bos_token_id
        first = self.inner("a", add_special_tokens=True)["input_ids"][:1]
        self.bos_id: int | None = bos if bos is not None and bos != self.eos_id \
            and first == [bos] else None

    def encode(self, text: str) -> list[int]:
        ids: list[int] = self.inner(text, add_special_tokens=False)["input_ids"]
        return ids

    @property
    def chat(self) -> Any:
        """Renders a conversation through the tokenizer's chat template (None without one)."""
        if not getattr(self.inner, "chat_template", None):
            return None
        return lambda messages: str(self.inner.apply_chat_template(messages, tokenize=False))

    def decode(self, ids: list[int]) -> str:
        return str(self.inner.decode(ids))

    def save(self, directory: Path) -> None:
        self.inner.save_pretrained(directory)


def load_saved(directory: Path) -> Tokenizer | None:
    """The tokenizer a Mentor run saved in `directory`, if it saved one of its own."""
    path = directory / FILE
    if not path.exists():
        return None
    saved = json.loads(path.read_text())
    if saved["type"] == "byte":
        return ByteTokenizer()
    return CharTokenizer(saved["chars"], eos=saved.get("eos", False))


def known_tokenizer(config: TrainerConfig) -> Tokenizer | None:
    """A job's tokenizer, unless it is a char tokenizer still to be fitted on the data (None):
    the one saved with the model it starts from, a Hugging Face one, or bytes."""
    model = config.model
    if model.from_:
        saved = load_saved(Path(model.from_)) if "://" not in model.from_ else None
        if saved is not None:
            return saved
        if model.tokenizer in (None, "pretrained"):
            from mentor_trainer.models import resolve

            return HFTokenizer(resolve(model.from_))
    elif model.tokenizer_from:
        from mentor_trainer.models import resolve

        return HFTokenizer(resolve(model.tokenizer_from))
    if model.tokenizer == "char":
        return None
    return ByteTokenizer()
