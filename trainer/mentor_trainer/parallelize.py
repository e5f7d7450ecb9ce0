"""How the model is spread over the world and made fast, in torchtitan's order per transformer
block: activation checkpointing, then torch.compile, then FSDP2's fully_shard; DDP wraps the
whole model last (a single process is left as it is).
"""

from __future__ import annotations

from typing import Any

import torch

from mentor.api.training import Strategy, TrainerConfig
from mentor_trainer.dist import World
from mentor_trainer.models import block_classes


def parallelize(model: torch.nn.Module, config: TrainerConfig, world: World,
                bf16: bool) -> torch.nn.Module:
    """The model as the training loop uses it: wrapped per block, then sharded or replicated.
    `bf16`: FSDP2 gathers parameters in bf16 and reduces gradients in fp32."""
    opt, strategy = config.optimization, config.parallelism.strategy
    needs_blocks = strategy == Strategy.FSDP or opt.compile or \
        opt.activation_checkpointing != "none"
    blocks = checkpoint_and_compile(
        model, block_classes(model), opt.activation_checkpointing, opt.compile) \
        if needs_blocks else []
    if strategy == Strategy.FSDP:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy

        mesh = init_device_mesh(world.device.type, (world.size,))
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
            if bf16 else MixedPrecisionPolicy()
        shard(model, blocks, mesh, mp)
        return model
    if world.size > 1:
        from torch.nn.parallel import DistributedDataParallel

        ids = [world.local_rank] if world.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)
    return model


def shard_frozen(model: torch.nn.Module, config: TrainerConfig, world: World,
                 bf16: bool) -> torch.nn.Module:
    """A model that is only ever run forward (DPO's reference): sharded per block like the
    trained model under FSDP, so that it costs each rank its share; left whole otherwise (DDP
    has nothing to synchronise for it)."""
    if config.parallelism.strategy != Strategy.FSDP:
        return model
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(world.device.type, (world.size,))
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16) if bf16 else MixedPrecisionPolicy()
    for parent, name in _blocks(model, block_classes(model)):
        fully_shard(getattr(parent, name), mesh=mesh, mp_policy=mp)
    fully_shard(model, mesh=mesh, mp_policy=mp)
    return model


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
