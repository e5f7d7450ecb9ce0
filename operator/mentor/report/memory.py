"""What a tuning method needs of each GPU's memory for the model's state: the weights, the
gradients and AdamW's two moments (activations come on top, and depend on the batch).

The trainer keeps what it trains in float32 (weights, gradients and both moments: 16 bytes a
trained parameter) and what it never trains at the width it computes in: bf16 on a GPU (2
bytes), nf4 for QLoRA (half a byte plus one float32 scale per 64 weights). LoRA trains a small
adapter (`adapter_fraction` of the base's parameters: about 0.5 % at rank 16 on every
projection of a Llama); DPO with full weights adds a frozen copy of the base, its reference.
FSDP shards all of it over the GPUs; DDP and a single GPU hold it whole.
"""

from __future__ import annotations

from typing import Literal

Method = Literal["full", "lora", "qlora"]
TRAINED_BYTES = 4 + 4 + 8  # float32 weight, gradient, and AdamW's two moments
FROZEN_BYTES = {"bf16": 2.0, "fp32": 4.0, "nf4": 0.5 + 4 / 64}
GIB = 2**30


def state_bytes(params: float, method: Method, gpus: int = 1, adapter_fraction: float = 0.005,
                frozen: str = "bf16", reference: bool = False) -> float:
    """Bytes of model state on each of `gpus` GPUs (FSDP shards it evenly over them)."""
    if method == "full":
        total = params * TRAINED_BYTES + (params * FROZEN_BYTES[frozen] if reference else 0.0)
    else:
        base = FROZEN_BYTES["nf4" if method == "qlora" else frozen]
        total = params * base + params * adapter_fraction * TRAINED_BYTES
    return total / gpus


def table(sizes: tuple[float, ...] = (1e9, 8e9, 70e9), gpus: tuple[int, ...] = (1, 8)
          ) -> list[str]:
    """The README's table: GiB per GPU for each base size, method and GPU count."""
    rows = ["| base | LoRA | QLoRA | full | full DPO |", "|---|---|---|---|---|"]
    for size in sizes:
        for n in gpus:
            cells = [state_bytes(size, "lora", n), state_bytes(size, "qlora", n),
                     state_bytes(size, "full", n), state_bytes(size, "full", n, reference=True)]
            rows.append(f"| {size / 1e9:g}B on {n} GPU{'s' if n > 1 else ''} | " +
                        " | ".join(f"{c / GIB:,.1f}" for c in cells) + " |")
    return rows
