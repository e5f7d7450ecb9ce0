"""Model FLOPs utilisation, measured against the exact card.

MFU = (6 × non-embedding parameters + 12 × layers × width × sequence) × tokens/s ÷ peak, the
PaLM appendix's count of a causal transformer's training FLOPs per token, with the attention term
that 6N alone leaves out; the peak is the card's dense bf16 figure, by its exact name (an H100
PCIe is not an H100 SXM).
"""

from __future__ import annotations

from typing import Any

import torch

# Dense bf16 peaks (no sparsity), FLOP/s, from the vendors' data sheets. Looked up by the
# longest name contained in torch.cuda.get_device_name(), so "H100 PCIe" wins over "H100".
PEAK_BF16 = {
    "H200": 989e12,
    "H100 80GB HBM3": 989e12,  # SXM5
    "H100 PCIe": 756e12,
    "H100 NVL": 835e12,
    "H100": 989e12,
    "GH200": 989e12,
    "B200": 2250e12,
    "A100": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A10G": 70e12,
}


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    found = [k for k in PEAK_BF16 if k in name]
    return PEAK_BF16[max(found, key=len)] if found else None


def non_embedding_parameters(model: torch.nn.Module) -> int:
    embeddings = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding)
                  for p in m.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in embeddings)


def flops_per_token(model: torch.nn.Module, layers: int, width: int, seq_len: int) -> float:
    return 6 * non_embedding_parameters(model) + 12 * layers * width * seq_len


def dimensions(model: torch.nn.Module) -> tuple[int, int]:
    """Layers and width from a Hugging Face config (0, 0 if it has none)."""
    config: Any = getattr(model, "config", None)
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", 0)
    width = getattr(config, "hidden_size", None) or getattr(config, "n_embd", 0)
    return int(layers or 0), int(width or 0)
