"""The memory table's arithmetic (mentor.report.memory) against the bytes torch really holds
after an AdamW step: a tiny GPT-2 tuned fully and with LoRA, its frozen base in float32 as on
CPU."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import GPT2Config, GPT2LMHeadModel

from mentor.report.memory import state_bytes

pytestmark = pytest.mark.trainer


def _held(model: torch.nn.Module) -> tuple[int, int, int]:
    """(parameters, trained parameters, bytes of weights, gradients and optimizer state) after
    one AdamW step."""
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=1e-3)
    model(input_ids=torch.randint(0, 64, (2, 16)), labels=torch.randint(0, 64, (2, 16))
          ).loss.backward()
    optimizer.step()
    tensors = [*model.parameters(), *(p.grad for p in trained if p.grad is not None),
               *(t for s in optimizer.state.values() for t in s.values() if t.dim() > 0)]
    return (sum(p.numel() for p in model.parameters()), sum(p.numel() for p in trained),
            sum(t.numel() * t.element_size() for t in tensors))


def _tiny() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=16, n_embd=64, n_layer=2,
                                      n_head=2))


def test_full_tuning_holds_16_bytes_a_parameter() -> None:
    params, trained, held = _held(_tiny())
    assert trained == params
    assert held == state_bytes(params, "full", frozen="fp32")


def test_lora_holds_the_frozen_base_and_16_bytes_an_adapter_parameter() -> None:
    model = get_peft_model(_tiny(), LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"],
                                                fan_in_fan_out=True))
    params, trained, held = _held(model)
    base = params - trained
    assert held == pytest.approx(state_bytes(base, "lora", adapter_fraction=trained / base,
                                             frozen="fp32"))
