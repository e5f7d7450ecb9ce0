"""The calls a custom trainer makes: report progress, find its checkpoints, stop when asked, fail
with a reason. They need nothing else of Mentor, and each is safe outside it (no operator, no
torchrun): a script that uses them runs anywhere.

    import mentor_trainer as mentor

    start = load(mentor.checkpoint_dir())           # the latest checkpoint, if any
    for step in range(start, steps):
        loss = train_one_step()
        mentor.report(step=step + 1, total_steps=steps, loss=loss, metrics={"accuracy": acc})
        if mentor.should_stop():                    # SIGTERM: preemption, deletion, suspend
            save(mentor.checkpoint_dir(), step + 1)
            break                                   # exits 143: the gang restarts and resumes

Reports go from rank 0 (others' are ignored) to the job's status, Prometheus and
`<output>/metrics.jsonl`, through the same token as the built-in trainer's.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

from mentor.api import exitcodes
from mentor.api.training import OBJECTIVE_ENV

_state: dict[str, Any] = {}


def _config() -> dict[str, Any]:
    """The job's config file (MENTOR_CONFIG), as the operator mounts it; {} outside Mentor."""
    if "config" not in _state:
        path = os.environ.get("MENTOR_CONFIG")
        _state["config"] = json.loads(Path(path).read_text()) if path and \
            Path(path).is_file() else {}
    config: dict[str, Any] = _state["config"]
    return config


def output_dir() -> Path:
    """Where the job's output goes (spec.output.uri, as this pod sees it)."""
    return Path(_config().get("output", {}).get("uri") or os.environ.get("MENTOR_OUTPUT_DIR")
                or "output")


def checkpoint_dir() -> Path:
    """Where checkpoints go and are resumed from (spec.checkpointing.uri, else
    <output>/checkpoints); it exists once asked for."""
    uri = _config().get("checkpointing", {}).get("uri")
    path = Path(uri) if uri else output_dir() / "checkpoints"
    path.mkdir(parents=True, exist_ok=True)
    _watch()
    return path


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _reporter() -> Any:
    if "reporter" not in _state:
        from mentor_trainer.reporting import Reporter

        _state["reporter"] = Reporter(output_dir(), enabled=_rank() == 0, config=_config())
        atexit.register(_state["reporter"].close)
    return _state["reporter"]


def report(step: int, loss: float | None = None, total_steps: int | None = None,
           metrics: dict[str, float] | None = None) -> None:
    """Rank 0's progress: `step` of `total_steps`, the training loss, and any named metrics
    (accuracy, eval_loss, ...: at most 16, numbers only). Other ranks' calls do nothing."""
    _watch()
    record: dict[str, Any] = {"step": int(step)}
    if loss is not None:
        record["loss"] = float(loss)
    if total_steps is not None:
        record["total_steps"] = int(total_steps)
    if metrics:
        values = {str(k): float(v) for k, v in metrics.items()}
        if "eval_loss" in values:  # the name a TuningJob's pruner and the status know
            record["eval_loss"] = values.pop("eval_loss")
        objective = os.environ.get(OBJECTIVE_ENV)  # set on a TuningJob's trials
        if objective and objective in values:
            record["objective"] = values[objective]
        if values:
            record["metrics"] = values
    _reporter().record(record)


def _on_sigterm(signum: int, frame: Any) -> None:
    _state["stop"] = True


def _watch() -> None:
    """From the first call on, SIGTERM asks the script to stop (should_stop) rather than
    killing it: torchrun passes it on at preemption, deletion and suspend."""
    if "watching" not in _state:
        _state["watching"] = True
        signal.signal(signal.SIGTERM, _on_sigterm)
        atexit.register(_exit_as_stopped)


def should_stop() -> bool:
    """Whether SIGTERM arrived: save a checkpoint now and return; the process then exits 143,
    which Mentor reads as stopped (a gang restart resumes it, a suspend keeps it). Under
    torch.distributed the ranks agree (a collective): call it at the same point on each."""
    _watch()
    stop = bool(_state.get("stop"))
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        import torch

        flag = torch.tensor([1.0 if stop else 0.0])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        stop = bool(flag.item())
        _state["stop"] = stop or _state.get("stop", False)
    return stop


def _exit_as_stopped() -> None:
    if _state.get("stop"):
        sys.stdout.flush()
        os._exit(exitcodes.SIGTERM)


def fail(reason: str, message: str, exit_code: int = exitcodes.BAD_CONFIG) -> NoReturn:
    """End the run: `reason` (one word, as BadData) and `message` become the job's condition,
    as the built-in trainer's do. Codes below 128 are permanent (no retry); 128 and above are
    retried from the latest checkpoint."""
    from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

    error = type(reason, (Exception,), {})(message)
    print(f"mentor_trainer: {reason}: {message}", file=sys.stderr, flush=True)
    with contextlib.suppress(OSError):  # the launcher reads the root cause from here
        ErrorHandler().record_exception(error)
    sys.exit(exit_code)
