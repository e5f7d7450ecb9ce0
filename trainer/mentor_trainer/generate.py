"""`mentor generate`: hear a trained model speak.

Samples token by token from a model that a job wrote (its output directory: weights, config and
tokenizer). The context is a sliding window of the model's maximum positions, so a sample can be
longer than the sequences it was trained on. A sample ends at the tokenizer's end-of-text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mentor_trainer.errors import DataNotFound
from mentor_trainer.tokenizer import HFTokenizer, Tokenizer, load_saved


def load(model_dir: Path) -> tuple[torch.nn.Module, Tokenizer]:
    """The model and its tokenizer, as the job saved them."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]  # no loading noise
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    if not (model_dir / "config.json").exists():
        raise DataNotFound(f"no trained model in {model_dir} (it is written when a job ends)")
    tokenizer = load_saved(model_dir) or HFTokenizer(str(model_dir))
    model: torch.nn.Module = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32)
    return model.eval(), tokenizer


def window(model: torch.nn.Module) -> int:
    config: Any = model.config
    return int(getattr(config, "n_positions", None) or config.max_position_embeddings)


@torch.no_grad()
def sample(model: torch.nn.Module, tokenizer: Tokenizer, prompt: str, tokens: int,
           temperature: float = 0.8, seed: int | None = 0) -> str:
    """`tokens` new tokens after `prompt` (greedy at temperature 0). An empty prompt starts
    after end-of-text, as a new document would."""
    ids = tokenizer.encode(prompt)
    if not ids:
        if tokenizer.eos_id is None:
            raise ValueError("this model's tokenizer has no end-of-text: give a --prompt")
        ids = [tokenizer.eos_id]
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    size, new = window(model), []
    for _ in range(tokens):
        logits = model(input_ids=torch.tensor([ids[-size:]])).logits[0, -1].float()
        if temperature <= 0:
            token = int(logits.argmax())
        else:
            probs = torch.softmax(logits / temperature, dim=-1)
            token = int(torch.multinomial(probs, 1, generator=generator))
        if token == tokenizer.eos_id:
            break
        ids.append(token)
        new.append(token)
    return tokenizer.decode(new)
