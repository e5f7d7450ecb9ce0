"""Exit codes, the trainer's contract with the operator (and the README's table).

Codes below 128 are permanent: retrying the same config cannot help. 128 and above are retried:
signals (128 + N, as the shell reports them) and unexpected crashes.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_BAD_CONFIG = 2
EXIT_DATA_NOT_FOUND = 3
EXIT_NON_FINITE_LOSS = 4
EXIT_MODEL_NOT_FOUND = 5
EXIT_OUT_OF_MEMORY = 6
EXIT_CRASH = 128  # an unexpected exception: worth a retry from the latest checkpoint
EXIT_SIGTERM = 143  # stopped by SIGTERM after a checkpoint: resume will continue


class TrainerError(Exception):
    """A failure with a documented exit code and a one-line reason."""

    exit_code = EXIT_CRASH


class BadConfig(TrainerError):
    exit_code = EXIT_BAD_CONFIG


class DataNotFound(TrainerError):
    exit_code = EXIT_DATA_NOT_FOUND


class NonFiniteLoss(TrainerError):
    exit_code = EXIT_NON_FINITE_LOSS


class ModelNotFound(DataNotFound):
    """The model to start from (model.from) is missing or cannot be loaded: a TuningJob tells
    this apart from a bad trial, since no trial of it can succeed."""

    exit_code = EXIT_MODEL_NOT_FOUND


class OutOfMemory(TrainerError):
    """The accelerator ran out of memory: the same config would again, so it is not retried."""

    exit_code = EXIT_OUT_OF_MEMORY


def out_of_memory(error: BaseException, micro_batch: int | None) -> OutOfMemory:
    first = str(error).splitlines()[0] if str(error) else type(error).__name__
    batch = f"optimization.microBatchSize ({micro_batch})" if micro_batch else \
        "optimization.microBatchSize"
    return OutOfMemory(f"out of GPU memory ({first}); lower {batch} (globalBatchSize stays, "
                       "with more accumulation), or turn on "
                       "optimization.activationCheckpointing, or use parallelism.strategy fsdp")
