"""The trainer's failures, each with its exit code (mentor.api.exitcodes, the contract with the
operator and the README's table) and a one-line reason."""

from __future__ import annotations

from mentor.api import exitcodes


class TrainerError(Exception):
    """A failure with a documented exit code and a one-line reason."""

    exit_code = exitcodes.CRASH


class BadConfig(TrainerError):
    exit_code = exitcodes.BAD_CONFIG


class DataNotFound(TrainerError):
    exit_code = exitcodes.DATA_NOT_FOUND


class NonFiniteLoss(TrainerError):
    exit_code = exitcodes.NON_FINITE_LOSS


class ModelNotFound(DataNotFound):
    """The model to start from (model.from) is missing or cannot be loaded: a TuningJob tells
    this apart from a bad trial, since no trial of it can succeed."""

    exit_code = exitcodes.MODEL_NOT_FOUND


class OutOfMemory(TrainerError):
    """The accelerator ran out of memory: the same config would again, so it is not retried."""

    exit_code = exitcodes.OUT_OF_MEMORY


def out_of_memory(error: BaseException, micro_batch: int | None) -> OutOfMemory:
    first = str(error).splitlines()[0] if str(error) else type(error).__name__
    batch = f"optimization.microBatchSize ({micro_batch})" if micro_batch else \
        "optimization.microBatchSize"
    return OutOfMemory(f"out of GPU memory ({first}); lower {batch} (globalBatchSize stays, "
                       "with more accumulation), or turn on "
                       "optimization.activationCheckpointing, or use parallelism.strategy fsdp")
