"""Checkpoints with torch.distributed.checkpoint: one code path for DDP and FSDP.

A checkpoint is written to a hidden `.step-N.partial` directory and renamed to `step-N` by rank 0
only after every rank finished writing: a directory named `step-N` is always complete, so resume
never reads half a checkpoint. The oldest are pruned to keep the last K.

With several nodes the checkpoint directory must be shared (a ReadWriteMany volume or object
storage mounted at the same path), since each rank writes its own shards.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_state_dict,
    set_state_dict,
)
from torch.distributed.checkpoint.state_dict_loader import load as dcp_load
from torch.distributed.checkpoint.state_dict_saver import save as dcp_save

from mentor_trainer.dist import World, barrier

STEP_DIR = re.compile(r"^step-(\d{8})$")


def complete(directory: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first."""
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir()
             if (m := STEP_DIR.match(p.name)) and (p / ".metadata").exists()]
    return sorted(found)


def latest(directory: Path) -> tuple[int, Path] | None:
    found = complete(directory)
    return found[-1] if found else None


def _options(frozen: bool) -> StateDictOptions:
    """Frozen parameters (a LoRA run's base model) are left out: they never change, and the
    run loads them from the model it started from (so a load may lack them: not strict)."""
    return StateDictOptions(ignore_frozen_params=not frozen, strict=frozen)


def save(directory: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
         world: World, keep: int, info: dict[str, Any], frozen: bool = True) -> Path:
    """Write a checkpoint and wait for it (the SIGTERM path, and runs without async saves)."""
    partial = _start(directory, step, world)
    model_state, optim_state = get_state_dict(model, optimizer, options=_options(frozen))
    dcp_save({"model": model_state, "optim": optim_state}, checkpoint_id=str(partial))
    return _finish(directory, step, world, keep, info)


def _start(directory: Path, step: int, world: World) -> Path:
    partial = directory / f".step-{step:08d}.partial"
    if world.is_main:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    barrier(world)
    return partial


def _finish(directory: Path, step: int, world: World, keep: int, info: dict[str, Any]) -> Path:
    """Every rank has written its shards: rank 0 names the checkpoint complete, and prunes."""
    final = directory / f"step-{step:08d}"
    partial = directory / f".step-{step:08d}.partial"
    barrier(world)
    if world.is_main:
        (partial / "trainer.json").write_text(json.dumps(
            {"step": step, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **info},
            indent=2))
        if final.exists():
            shutil.rmtree(final)
        partial.rename(final)
        for _, old in complete(directory)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        for stale in directory.glob(".step-*.partial"):  # a crash's unfinished writes
            shutil.rmtree(stale, ignore_errors=True)
    barrier(world)
    return final


@dataclass
class AsyncCheckpointer:
    """Checkpoints written in the background (dcp.async_save): training waits only while the
    state is copied to host memory, then goes on while a thread writes it. A checkpoint is
    named complete (step-N) only once every rank's write has finished, which is checked at the
    next checkpoint or at the end (`wait`); until then resume never sees it."""

    directory: Path
    world: World
    keep: int
    frozen: bool = True
    _pending: tuple[int, dict[str, Any], Any] | None = None
    _group: Any = None

    def save(self, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             info: dict[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict_saver import async_save

        self.wait()
        partial = _start(self.directory, step, self.world)
        model_state, optim_state = get_state_dict(model, optimizer,
                                                  options=_options(self.frozen))
        if self.world.size > 1 and self._group is None:
            import torch.distributed as td

            # The writer's collectives run beside training's: a group of their own (gloo,
            # on host memory), so neither waits for the other.
            self._group = td.new_group(backend="gloo")
        future = async_save({"model": model_state, "optim": optim_state},
                            checkpoint_id=str(partial), process_group=self._group,
                            no_dist=self.world.size == 1)
        self._pending = (step, info, future)

    def wait(self) -> Path | None:
        """Finish the checkpoint in flight, if any; its path."""
        if self._pending is None:
            return None
        step, info, future = self._pending
        self._pending = None
        getattr(future, "upload_completion", future).result()
        return _finish(self.directory, step, self.world, self.keep, info)


def info(path: Path) -> dict[str, Any]:
    """What the run that wrote a checkpoint recorded about itself (trainer.json)."""
    try:
        return dict(json.loads((path / "trainer.json").read_text()))
    except (OSError, ValueError):
        return {}


def load(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
         frozen: bool = True) -> None:
    options = _options(frozen)
    model_state, optim_state = get_state_dict(model, optimizer, options=options)
    state: dict[str, Any] = {"model": model_state, "optim": optim_state}
    dcp_load(state, checkpoint_id=str(path))
    set_state_dict(model, optimizer, model_state_dict=state["model"],
                   optim_state_dict=state["optim"], options=options)
