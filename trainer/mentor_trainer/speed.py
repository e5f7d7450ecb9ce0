"""What makes the trainer fast on GPUs: the per-block order of activation checkpointing,
torch.compile and FSDP2 (torchtitan's), and MFU measured against the exact card.

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


def _blocks(model: torch.nn.Module, classes: tuple[type[torch.nn.Module], ...]
            ) -> list[tuple[torch.nn.Module, str]]:
    """(parent, attribute) of every transformer block, in order."""
    found = []
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, classes):
                found.append((parent, name))
    return found


def checkpoint_and_compile(model: torch.nn.Module, classes: tuple[type[torch.nn.Module], ...],
                           activation_checkpointing: str,
                           compile_blocks: bool) -> list[torch.nn.Module]:
    """Wrap each block, in place: activation checkpointing ("full": every block; "selective":
    every other block), then torch.compile per block (small graphs, compiled once and reused).
    Returns the blocks as they now are, the units FSDP shards."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    wrapped = []
    for i, (parent, name) in enumerate(_blocks(model, classes)):
        block = getattr(parent, name)
        if activation_checkpointing == "full" or (activation_checkpointing == "selective"
                                                  and i % 2 == 0):
            block = checkpoint_wrapper(block, preserve_rng_state=False)
        if compile_blocks:
            block = torch.compile(block)
        setattr(parent, name, block)
        wrapped.append(block)
    return wrapped


def shard(model: torch.nn.Module, blocks: list[torch.nn.Module], mesh: Any,
          mp_policy: Any) -> None:
    """FSDP2 per block (each gathered for its forward and freed after), then the root, whose
    parameters (embeddings, head) stay gathered after the forward: the backward needs them
    at once, so resharding them would only gather them again."""
    from torch.distributed.fsdp import fully_shard

    for block in blocks:
        fully_shard(block, mesh=mesh, mp_policy=mp_policy)
    fully_shard(model, mesh=mesh, mp_policy=mp_policy, reshard_after_forward=False)
