"""`mentor generate`'s sampling: the KV cache changes the cost of a token, never the token."""

from __future__ import annotations

import pytest
import torch

from mentor.api.training import ModelSpec
from mentor_trainer.generate import sample
from mentor_trainer.models import new_model

pytestmark = pytest.mark.trainer
WINDOW = 24


class Codes:
    """Token i is the character chr(i): decoding and encoding again gives the same tokens."""

    eos_id = bos_id = None
    vocab_size = 257

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(map(chr, ids))


def recomputed(model: torch.nn.Module, ids: list[int], tokens: int) -> list[int]:
    """Greedy tokens, each from the whole context computed afresh (no cache)."""
    ids = list(ids)
    for _ in range(tokens):
        logits = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0, -1]
        ids.append(int(logits.argmax()))
    return ids


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_cached_sampling_gives_the_tokens_of_a_full_recompute(architecture: str) -> None:
    tokenizer = Codes()
    spec = ModelSpec.model_validate({"architecture": architecture, "size": "tiny",
                                     "tokenizer": "byte"})
    model = new_model(spec, tokenizer.vocab_size, WINDOW, seed=3, eos_id=None).eval()
    model.config.use_cache = True
    prompt = "To be, or"
    with torch.no_grad():
        expected = recomputed(model, tokenizer.encode(prompt), WINDOW - len(prompt))
        text = sample(model, tokenizer, prompt, WINDOW - len(prompt), temperature=0)
        assert tokenizer.encode(prompt + text) == expected
        # Past the window it goes on from the window's newer half: as long as asked.
        longer = sample(model, tokenizer, prompt, 3 * WINDOW, temperature=0)
    assert len(tokenizer.encode(longer)) == 3 * WINDOW
