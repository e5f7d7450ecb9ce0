"""What a trainer says as it ends well, in its pod's termination message: the final step and
eval loss. The kubelet keeps that message with the pod, so the operator reads the result from a
durable record, where a progress report may be lost (dropped on the way, or held in the memory
of a leader that failed over); a TuningJob's objective is taken from it.

Both sides import this module: mentor_trainer writes the line, the operator parses it.
"""

from __future__ import annotations

import math
import re

_LINE = re.compile(r"^succeeded at step (\d+)(?:: eval loss (\S+))?$")


def format_result(step: int, eval_loss: float | None) -> str:
    line = f"succeeded at step {step}"
    if eval_loss is not None and math.isfinite(eval_loss):
        line += f": eval loss {eval_loss!r}"  # repr: the exact float, read back as it was
    return line


def parse_result(message: str | None) -> tuple[int, float | None] | None:
    """(step, eval loss) from a termination message, or None if it holds no result."""
    found = _LINE.match((message or "").strip())
    if not found:
        return None
    try:
        loss = float(found.group(2)) if found.group(2) else None
    except ValueError:
        return None
    return int(found.group(1)), loss if loss is None or math.isfinite(loss) else None
