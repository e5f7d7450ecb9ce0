"""`mentor generate`: hear a trained model speak.

Samples token by token from a model that a job wrote (its output directory: weights, config and
tokenizer), or from a LoRA adapter on the base model it was trained on. Each new token reuses the
keys and values of the ones before it (the KV cache), so a token costs one position's work, not
the whole window's. A sample can be longer than the model's positions: when the window is full,
sampling goes on from its newer half. A sample ends at the tokenizer's end-of-text.
"""

from __future__ import annotations

import json
import warnings
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
    if (model_dir / "config.json").exists():
        model: torch.nn.Module = AutoModelForCausalLM.from_pretrained(
            model_dir, dtype=torch.float32)
        source = model_dir
    elif (model_dir / ADAPTER).exists():
        model, source = _with_adapter(model_dir)
    else:
        raise DataNotFound(f"no trained model in {model_dir} (it is written when a job ends)")
    tokenizer = load_saved(model_dir) or load_saved(source) or HFTokenizer(str(source))
    config: Any = model.config
    config.use_cache = True  # training turns it off; sampling reuses past keys and values
    return model.eval(), tokenizer


ADAPTER = "adapter_config.json"


def _with_adapter(model_dir: Path) -> tuple[torch.nn.Module, Path]:
    """A LoRA adapter merged into the base model it was trained on (the adapter names it)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = Path(json.loads((model_dir / ADAPTER).read_text())["base_model_name_or_path"])
    if not (base / "config.json").exists():
        raise DataNotFound(f"{model_dir} holds a LoRA adapter of the base model at {base}, "
                           "which is not on this machine: put the base model there, or tune "
                           "with adaptation.merge: true for a model that stands alone")
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    with warnings.catch_warnings():  # PEFT's deprecation notices are not the user's concern
        warnings.simplefilter("ignore", FutureWarning)
        merged: torch.nn.Module = PeftModel.from_pretrained(model, model_dir).merge_and_unload()
    return merged, base


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
    context = ids[-size:]
    logits, past = _forward(model, context, None)
    for _ in range(tokens):
        if temperature <= 0:
            token = int(logits.argmax())
        else:
            probs = torch.softmax(logits / temperature, dim=-1)
            token = int(torch.multinomial(probs, 1, generator=generator))
        if token == tokenizer.eos_id:
            break
        ids.append(token)
        new.append(token)
        if len(context) < size:
            context.append(token)
            logits, past = _forward(model, [token], past)
        else:  # the window is full: go on from its newer half, computed afresh
            context = ids[-max(1, size // 2):]
            logits, past = _forward(model, context, None)
    return tokenizer.decode(new)


def _forward(model: torch.nn.Module, ids: list[int], past: Any) -> tuple[torch.Tensor, Any]:
    """The next token's logits after `ids`, which follow the cached `past`; and the cache."""
    out = model(input_ids=torch.tensor([ids]), cache=past, use_cache=True)
    return out.logits[0, -1].float(), out.cache
