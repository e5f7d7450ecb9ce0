"""The trainer's exit codes: its contract with the operator, `mentor run` and the README's table.

Codes below 128 are permanent: retrying the same config cannot help. 128 and above are retried:
signals (128 + N, as the shell reports them) and unexpected crashes. mentor_trainer raises them,
the operator and the local runner read them; both import them from here.
"""

from __future__ import annotations

OK = 0
BAD_CONFIG = 2
DATA_NOT_FOUND = 3
NON_FINITE_LOSS = 4
MODEL_NOT_FOUND = 5
OUT_OF_MEMORY = 6
CRASH = 128  # an unexpected exception: worth a retry from the latest checkpoint
SIGTERM = 143  # stopped by SIGTERM after a checkpoint: resume will continue

MEANINGS = {
    BAD_CONFIG: "invalid trainer config",
    DATA_NOT_FOUND: "data not found",
    NON_FINITE_LOSS: "loss became NaN/Inf",
    MODEL_NOT_FOUND: "the model to start from cannot be loaded",
    OUT_OF_MEMORY: "out of GPU memory",
}


def permanent(code: int) -> bool:
    """A code the same config would give again: no retry can help (unless policy says so)."""
    return code < CRASH
