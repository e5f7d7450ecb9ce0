"""Bad configs end with their documented exit code and one line on stderr saying why."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import psutil
import pytest
from runner import config, launch, run

from mentor.api import exitcodes

pytestmark = pytest.mark.trainer


def reason(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("mentor_trainer: ")]
    assert len(lines) >= 1, output[-2000:]
    return lines[0]


def test_invalid_config_exits_2(tmp_path: Path) -> None:
    cfg = config(tmp_path / "out", optimization={"steps": 0}, parallelism={"procsPerNode": 1})
    out = run(cfg, tmp_path, expect=exitcodes.BAD_CONFIG)
    assert "BadConfig" in reason(out) and "optimization.steps" in reason(out)


def test_batch_that_does_not_divide_exits_2(tmp_path: Path) -> None:
    cfg = config(tmp_path / "out", optimization={"globalBatchSize": 12, "microBatchSize": 8})
    out = run(cfg, tmp_path, expect=exitcodes.BAD_CONFIG)
    assert "multiple of world size" in reason(out)


def test_missing_data_exits_3(tmp_path: Path) -> None:
    cfg = config(tmp_path / "out", data={"source": str(tmp_path / "nowhere.txt")},
                 parallelism={"procsPerNode": 1})
    out = run(cfg, tmp_path, expect=exitcodes.DATA_NOT_FOUND)
    assert "nowhere.txt" in reason(out)


def test_nan_loss_exits_4(tmp_path: Path) -> None:
    # Plain SGD at the largest learning rate the schema allows, with no clipping, diverges.
    cfg = config(tmp_path / "out", parallelism={"procsPerNode": 1},
                 optimization={"steps": 50, "learningRate": 10, "optimizer": "sgd",
                               "gradClip": None, "weightDecay": 0})
    out = run(cfg, tmp_path, expect=exitcodes.NON_FINITE_LOSS)
    assert "NonFiniteLoss" in reason(out)


def test_a_crashed_rank_is_reported_with_its_signal(tmp_path: Path) -> None:
    """torchrun alone would exit 1; mentor-torchrun keeps 128 + signal, which means retry."""
    out_dir = tmp_path / "out"
    proc = launch(config(out_dir, optimization={"steps": 100_000}), tmp_path)
    deadline = time.monotonic() + 300
    while not (out_dir / "metrics.jsonl").exists():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.1)
    workers = [c for c in psutil.Process(proc.pid).children(recursive=True)
               if "mentor_trainer" in " ".join(c.cmdline())]
    assert workers
    workers[-1].send_signal(signal.SIGKILL)
    proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGKILL


def test_a_failed_rendezvous_is_retriable_not_permanent(tmp_path: Path) -> None:
    """torchrun's own failures (here: rank 0 cannot listen on the rendezvous port) exit 128, so
    the operator retries them; Python's default 1 would have failed the job for good."""
    import json
    import os
    import socket
    import subprocess

    from runner import LAUNCHER

    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(config(tmp_path / "out", parallelism={"procsPerNode": 1})))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "PET_NNODES": "1", "PET_NPROC_PER_NODE": "1", "PET_NODE_RANK": "0",
               "PET_MASTER_ADDR": "127.0.0.1", "PET_MASTER_PORT": str(port)}
        result = subprocess.run([LAUNCHER, "-m", "mentor_trainer", "--config", str(cfg)],
                                env=env, capture_output=True, text=True, timeout=300,
                                check=False)
    assert result.returncode == 128, result.stderr[-2000:]
    assert "mentor-torchrun: exit code 128: torchrun failed: " in result.stderr


def test_out_of_memory_exits_6_naming_what_to_change(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    # No CPU can run out of CUDA memory: the allocator's own error is raised where a forward
    # would raise it, and the trainer's entry point decides what it means.
    import json

    import torch

    from mentor.api import exitcodes
    from mentor_trainer import __main__ as entry
    from mentor_trainer.trainer import Trainer

    def oom(self: Trainer, step: int) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(Trainer, "_step", oom)
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    cfg = config(tmp_path / "out", parallelism={"procsPerNode": 1},
                 optimization={"microBatchSize": 8})
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    assert entry.main(["--config", str(path)]) == exitcodes.OUT_OF_MEMORY
    line = reason(capsys.readouterr().err)
    assert "OutOfMemory: out of GPU memory (CUDA out of memory" in line
    assert "optimization.microBatchSize (8)" in line and "activationCheckpointing" in line
