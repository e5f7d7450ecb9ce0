"""What a failed or lost pod means for its job, pure: the reason, the message, and whether another
attempt can help (and counts toward backoffLimit).

The trainer's exit codes (mentor.api.exitcodes) keep their meaning through the launcher, so a
bad config, missing data, a NaN loss or an OOM fail at once with the trainer's own words, and a
crash or a signal is retried from the latest checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

from mentor.api import exitcodes
from mentor.api.status import Reason
from mentor.api.training import TrainingJobSpec
from mentor.decide.podview import PodView

MESSAGE_TAIL = 2048  # of a pod's termination message, in a condition (which holds 4096)


@dataclass(frozen=True)
class Failure:
    reason: Reason
    message: str
    retriable: bool
    counted: bool = True


def classify(pod: PodView, spec: TrainingJobSpec) -> Failure:
    """Why a pod failed, and whether another attempt can help."""
    policy = spec.run_policy.exit_codes
    code = pod.exit_code
    if pod.disruption:
        return Failure(Reason.POD_DISRUPTED,
                       f"pod {pod.name} was disrupted ({pod.disruption}); retried without "
                       "counting toward backoffLimit", retriable=True, counted=False)
    if pod.terminated_reason == "OOMKilled" and code not in policy.retry:
        return Failure(Reason.OOM_KILLED,
                       f"pod {pod.name} was OOMKilled (exit code {code}); raise the memory "
                       "limit or lower microBatchSize", retriable=False)
    if code is None:
        return Failure(Reason.POD_FAILED, f"pod {pod.name} failed without an exit code",
                       retriable=True)
    meaning = exitcodes.MEANINGS.get(code)
    described = f"pod {pod.name} exited with code {code}" + (f" ({meaning})" if meaning else "")
    if pod.termination_message:  # the trainer's own words, through the launcher
        described += f": {pod.termination_message[-MESSAGE_TAIL:]}"
    if exitcodes.permanent(code):
        reason = {exitcodes.NON_FINITE_LOSS: Reason.NON_FINITE_LOSS,
                  exitcodes.OUT_OF_MEMORY: Reason.OUT_OF_MEMORY}.get(code, Reason.EXIT_CODE)
        return Failure(reason, described, retriable=code in policy.retry)
    return Failure(Reason.EXIT_CODE, described, retriable=code not in policy.fail)


def deleted(pod: PodView, spec: TrainingJobSpec) -> Failure:
    """A pod of the running attempt that someone else deleted: a disruption (eviction,
    preemption) is no fault of the job; a user's or a controller's delete is counted."""
    if pod.disruption:
        return classify(pod, spec)
    ended = f" and exited with code {pod.exit_code}" if pod.exit_code is not None else ""
    return Failure(Reason.POD_DELETED, f"pod {pod.name} was deleted{ended}", retriable=True)
