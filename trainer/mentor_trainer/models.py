"""Models: Hugging Face architectures, new from a size preset or loaded pre-trained."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from mentor.api.training import Architecture, ModelSpec, Precision, Size
from mentor_trainer.errors import BadConfig, ModelNotFound

# layers, heads, width. tiny is for tests; small is nanoGPT's Shakespeare model; medium and large
# are GPT-2 small and medium; xlarge is about 0.7B parameters as Llama.
PRESETS: dict[Size, tuple[int, int, int]] = {
    Size.TINY: (2, 4, 128),
    Size.SMALL: (6, 6, 384),
    Size.MEDIUM: (12, 12, 768),
    Size.LARGE: (24, 16, 1024),
    Size.XLARGE: (24, 16, 1536),
}


def dimensions(spec: ModelSpec) -> tuple[int, int, int, int, int | None]:
    """layers, heads, kv heads, width and MLP width (None: the architecture's default)."""
    if spec.shape is not None:
        shape = spec.shape
        return shape.layers, shape.heads, shape.kv_heads or shape.heads, shape.width, \
            shape.mlp_width
    assert spec.size is not None
    layers, heads, width = PRESETS[spec.size]
    return layers, heads, heads, width, None


def new_config(spec: ModelSpec, vocab_size: int, seq_len: int, eos_id: int | None,
               bos_id: int | None = None) -> Any:
    """A new model's config; its begin/end-of-text ids are the tokenizer's."""
    layers, heads, kv_heads, width, mlp = dimensions(spec)
    bos = bos_id if bos_id is not None else eos_id
    if spec.architecture == Architecture.GPT2:
        from transformers import GPT2Config

        return GPT2Config(vocab_size=vocab_size, n_positions=seq_len, n_embd=width,
                          n_layer=layers, n_head=heads, n_inner=mlp, resid_pdrop=0.0,
                          embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=bos,
                          eos_token_id=eos_id, use_cache=False)
    from transformers import LlamaConfig

    intermediate = mlp or 64 * round(width * 8 / 3 / 64)
    return LlamaConfig(vocab_size=vocab_size, hidden_size=width, intermediate_size=intermediate,
                       num_hidden_layers=layers, num_attention_heads=heads,
                       num_key_value_heads=kv_heads, max_position_embeddings=seq_len,
                       tie_word_embeddings=True, bos_token_id=bos, eos_token_id=eos_id,
                       use_cache=False)


def max_positions(model: torch.nn.Module) -> int | None:
    """The longest sequence a model's position embeddings cover, if it says."""
    config = getattr(model, "config", None)
    for name in ("n_positions", "max_position_embeddings"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


def new_model(spec: ModelSpec, vocab_size: int, seq_len: int, seed: int,
              eos_id: int | None = None, bos_id: int | None = None) -> torch.nn.Module:
    """A freshly initialised model; the seed makes every rank (and every rerun) start equal."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    config = new_config(spec, vocab_size, seq_len, eos_id, bos_id)
    model: torch.nn.Module = AutoModelForCausalLM.from_config(  # type: ignore[no-untyped-call]
        config, attn_implementation="sdpa")
    return model


def resolve(uri: str) -> str:
    """A local directory (or a hub id) that from_pretrained can read.

    hf://<id> honours HF_HUB_OFFLINE (transformers reads it); s3:// and other fsspec URIs are
    copied to a local directory first.
    """
    if uri.startswith("hf://"):
        return uri.removeprefix("hf://")
    if "://" in uri:
        import fsspec

        local = tempfile.mkdtemp(prefix="mentor-model-")
        fs, root = fsspec.core.url_to_fs(uri)
        fs.get(root.rstrip("/") + "/", local, recursive=True)
        return local
    if not Path(uri).exists():
        raise ModelNotFound(f"no model at {uri}")
    return uri


def frozen_dtype(device: torch.device, precision: Precision) -> torch.dtype:
    """The dtype of weights that are never trained (a LoRA base, DPO's reference): bf16 where
    the steps compute in bf16 (a GPU with precision bf16), which halves their memory and feeds
    the matmuls without a cast; float32 elsewhere. Trained weights and optimizer state stay
    float32 either way."""
    return torch.bfloat16 if device.type == "cuda" and precision == Precision.BF16 \
        else torch.float32


def load_pretrained(uri: str, dtype: torch.dtype = torch.float32, quantize: str = "none",
                    device: torch.device | None = None) -> torch.nn.Module:
    """A pre-trained model; `quantize` nf4 packs its linear layers' weights in 4 bits with
    bitsandbytes, already on `device`, computing in bf16."""
    from transformers import AutoModelForCausalLM

    source = resolve(uri)
    options: dict[str, Any] = {}
    if quantize != "none":
        options = {"quantization_config": _quantization(quantize),
                   "device_map": {"": device or torch.device("cpu")}}
    try:
        model: torch.nn.Module = AutoModelForCausalLM.from_pretrained(
            source, dtype=dtype, attn_implementation="sdpa", **options)
    except OSError as e:
        raise ModelNotFound(f"cannot load a model from {uri}: {e}".splitlines()[0]) from e
    for module in model.modules():
        # bitsandbytes 0.50 repacks a 4-bit layer for CPU inference at its first forward in
        # eval mode, and a repacked layer cannot train: the trainer evaluates between steps.
        if hasattr(module, "support_avx512bf16_for_cpu"):
            setattr(module, "support_avx512bf16_for_cpu", False)  # noqa: B010
    return model


def _quantization(quantize: str) -> Any:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as e:
        raise BadConfig(f"lora.quantize {quantize} needs bitsandbytes in the trainer image "
                        "(pip install bitsandbytes)") from e
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(  # type: ignore[no-untyped-call]
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16,
        bnb_4bit_use_double_quant=True)


def block_classes(model: torch.nn.Module) -> tuple[type[torch.nn.Module], ...]:
    """The transformer blocks, the unit that FSDP shards and wraps."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    classes = {type(m) for m in model.modules() if type(m).__name__ in names}
    if not classes:
        raise BadConfig(f"do not know how to shard {type(model).__name__} with FSDP")
    return tuple(classes)


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
