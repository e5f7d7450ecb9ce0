"""The status every Mentor job reports: phase, conditions, progress, checkpoint and GPU-hours.

Conditions follow the Kubernetes conventions: a list keyed by `type`, each telling what is true
now, with `lastTransitionTime` moved only when `status` flips (see mentor.decide.conditions).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field

from mentor.api.base import ApiModel


class Phase(StrEnum):
    """The one-word summary of a job, for `kubectl get` (conditions carry the detail)."""

    PENDING = "Pending"
    RUNNING = "Running"
    RESTARTING = "Restarting"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"
    STOPPED = "Stopped"


class ConditionType(StrEnum):
    CREATED = "Created"
    RUNNING = "Running"
    RESTARTING = "Restarting"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"
    STOPPED = "Stopped"
    TRACKING = "Tracking"


class Reason(StrEnum):
    """Why a condition holds. CamelCase, as `kubectl describe` shows them."""

    CREATED = "JobCreated"
    PODS_PENDING = "PodsPending"
    UNSCHEDULABLE = "Unschedulable"
    QUEUED = "Queued"
    ALL_PODS_RUNNING = "AllPodsRunning"
    COMPLETED = "JobCompleted"
    EXIT_CODE = "ExitCode"
    NON_FINITE_LOSS = "NonFiniteLoss"
    OOM_KILLED = "OOMKilled"
    OUT_OF_MEMORY = "OutOfMemory"
    BACKOFF_LIMIT_EXCEEDED = "BackoffLimitExceeded"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    IMAGE_PULL_BACKOFF = "ImagePullBackOff"
    BUDGET_EXHAUSTED = "BudgetExhausted"
    POD_FAILED = "PodFailed"
    POD_DISRUPTED = "PodDisrupted"
    POD_DELETED = "PodDeleted"
    SUSPENDED = "JobSuspended"
    RESUMED = "JobResumed"
    CHILD_NAME_TAKEN = "ChildNameTaken"
    CREATE_REFUSED = "CreateRefused"
    CREATE_DELAYED = "CreateDelayed"
    STOP_REQUESTED = "StopRequested"
    # A TuningJob's
    PRUNED = "Pruned"
    TRACKING_UNAVAILABLE = "TrackingUnavailable"
    TRACKING = "Recording"
    WAITING_FOR_BASE_MODEL = "WaitingForBaseModel"
    BASE_MODEL_UNAVAILABLE = "BaseModelUnavailable"
    TRIALS_RUNNING = "TrialsRunning"
    SEARCH_COMPLETE = "SearchComplete"
    ALL_TRIALS_FAILED = "AllTrialsFailed"
    MAX_FAILED_TRIALS = "MaxFailedTrials"
    INVALID_TRIAL = "InvalidTrial"
    TRIAL_DELETED = "TrialDeleted"


ConditionStatus = Literal["True", "False", "Unknown"]
MAX_MESSAGE = 4096


def shorten(message: str, limit: int = MAX_MESSAGE) -> str:
    """A message that fits its field: its head and its tail, the middle cut. The kubelet and
    the API server write messages of any length (a pull error quotes the image, a log tail its
    lines); one over the schema's limit would make every status write of the job fail."""
    if not isinstance(message, str) or len(message) <= limit:
        return message
    cut = " … "
    head = (limit - len(cut)) // 2
    return message[:head] + cut + message[len(message) - (limit - len(cut) - head):]


Message = Annotated[str, BeforeValidator(shorten), Field(max_length=MAX_MESSAGE)]
Timestamp = Annotated[str, Field(max_length=64, description="An RFC 3339 time.",
                                 json_schema_extra={"format": "date-time"})]


class Condition(ApiModel):
    type: ConditionType = Field(
        description="type is the aspect of the job this condition describes.")
    status: ConditionStatus = Field(description="status is True, False or Unknown.")
    reason: str = Field(
        max_length=128, pattern=r"^[A-Za-z][A-Za-z0-9]*$",
        description="reason is a CamelCase word naming why the condition holds.",
    )
    message: Message = Field(default="",
                             description="message explains the condition to a person.")
    last_transition_time: Timestamp = Field(
        description="lastTransitionTime is when status last changed (not when the message did).")
    observed_generation: int | None = Field(
        default=None, ge=0, description="observedGeneration is the spec generation this reflects.")


MAX_EVALS_KEPT = 64


class EvalPoint(ApiModel):
    step: int = Field(ge=0, description="step is the optimizer step evaluated after.")
    loss: float = Field(description="loss is the validation loss there (or, in objectives, "
                                    "the objective metric's value).")


class TrackingStatus(ApiModel):
    """Where the run is recorded (spec.tracking), as rank 0 reports it."""

    state: Literal["Recording", "Unavailable"] = Field(
        description="state is Recording, or Unavailable while the tracking server cannot be "
                    "reached (the records wait in the output and go when it returns).")
    run_id: str | None = Field(default=None, max_length=64,
                               description="runId is the MLflow run's ID.")
    url: str | None = Field(default=None, max_length=2048,
                            description="url is the MLflow run's page.")
    message: Message = Field(default="", description="message says why it is unavailable.")


class Progress(ApiModel):
    """Training progress, as rank 0 of the trainer reports it."""

    step: int = Field(default=0, ge=0, description="step is the last completed optimizer step.")
    total_steps: int | None = Field(default=None, ge=0,
                                    description="totalSteps is the step the job ends at.")
    percent: float | None = Field(default=None, ge=0, le=100,
                                  description="percent is step / totalSteps × 100.")
    shown: str | None = Field(default=None, max_length=8,
                              description="shown is percent as kubectl get shows it (42%).")
    loss: float | None = Field(default=None, description="loss is the last training loss.")
    eval_loss: float | None = Field(default=None,
                                    description="evalLoss is the last validation loss.")
    tokens_per_second: float | None = Field(
        default=None, ge=0, description="tokensPerSecond is the training throughput.")
    eta_seconds: int | None = Field(default=None, ge=0,
                                    description="etaSeconds estimates the seconds left.")
    last_update_time: Timestamp | None = Field(
        default=None, description="lastUpdateTime is when the trainer last reported.")
    evals: list[EvalPoint] = Field(
        default_factory=list, max_length=MAX_EVALS_KEPT,
        description="evals are the last validation losses by step (at most 64): the "
                    "intermediate values a TuningJob's pruner compares.")
    objective: float | None = Field(
        default=None, description="objective is the last value of a trial's objective metric "
                                  "(a custom trainer's search over a metric of its own).")
    objectives: list[EvalPoint] = Field(
        default_factory=list, max_length=MAX_EVALS_KEPT,
        description="objectives are that metric's last values by step (at most 64), as evals "
                    "are the eval losses': what the pruner compares.")
    metrics: dict[str, float] = Field(
        default_factory=dict, max_length=16,
        description="metrics are the last values of the named metrics a custom trainer "
                    "reports (mentor_trainer.report(metrics=...)), at most 16.")
    tracking: TrackingStatus | None = Field(
        default=None, description="tracking: the MLflow run, and whether it is reachable.")


class CheckpointStatus(ApiModel):
    step: int = Field(ge=0, description="step is the optimizer step the checkpoint holds.")
    uri: str = Field(max_length=2048, description="uri is where the checkpoint is stored.")
    time: Timestamp = Field(description="time is when the checkpoint became complete.")


class RunResult(ApiModel):
    """What rank 0 said as the job succeeded (its pod's termination message)."""

    step: int = Field(ge=0, description="step is the last optimizer step trained.")
    eval_loss: float | None = Field(default=None,
                                    description="evalLoss is the final validation loss.")


class AttemptFailure(ApiModel):
    """Why one attempt ended: kept after its pods are gone (`mentor logs --attempt K`)."""

    attempt: int = Field(ge=1, description="attempt is the gang of pods that failed (1 first).")
    pod: str = Field(max_length=253, description="pod is the pod whose failure ended it.")
    exit_code: int | None = Field(default=None, description="exitCode is that pod's exit code.")
    reason: str = Field(max_length=128, description="reason is the CamelCase cause.")
    message: Message = Field(default="",
                             description="message is the pod's termination message: the "
                                         "launcher's root cause and the failed worker's last "
                                         "lines, or the log's tail.")
    time: Timestamp = Field(description="time is when Mentor saw the failure.")


MAX_FAILURES_KEPT = 5
MAX_SETTLED_KEPT = 10_000  # pods ended but not gone yet: at most about two gangs


class Ledger(ApiModel):
    """Mentor's own bookkeeping, not a figure to read: gpuHours and costEstimate are the totals."""

    retired_gpu_seconds: float = Field(
        default=0, ge=0, alias="retiredGPUSeconds",
        description="retiredGPUSeconds is the GPU time of the job's pods that have ended, "
                    "settled once each (see settledPods); live pods are added to it in gpuHours.")
    retired_cost: float = Field(default=0, ge=0,
                                description="retiredCost is the cost of the settled pods.")
    settled_pods: list[str] = Field(
        default_factory=list, max_length=MAX_SETTLED_KEPT,
        description="settledPods are the UIDs of ended pods whose time is in retiredGPUSeconds "
                    "and that still exist: a pod's tracking finalizer is removed only after its "
                    "UID is written here, so a pod is charged exactly once, whoever deletes it "
                    "and whenever the operator stops.")
    active_seconds: float = Field(
        default=0, ge=0,
        description="activeSeconds is the time the job ran before its last suspension: "
                    "activeDeadlineSeconds counts active time only.")
    active_since: Timestamp | None = Field(
        default=None, description="activeSince is when the job last started running (unset "
                                  "while it is suspended, pending its first run, or finished).")


class JobStatus(ApiModel):
    """The observed state of a TrainingJob or TuningJob."""

    phase: Phase | None = Field(default=None, description="phase summarises the conditions.")
    reason: str | None = Field(
        default=None, max_length=128,
        description="reason is why the job is in its phase: the reason of the condition that "
                    "explains it (Queued, Unschedulable, ExitCode, BudgetExhausted, ...).")
    conditions: list[Condition] = Field(
        default_factory=list, max_length=16,
        description="conditions tell what is true of the job now, one per type.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    start_time: Timestamp | None = Field(default=None,
                                         description="startTime is when all pods first ran.")
    completion_time: Timestamp | None = Field(
        default=None, description="completionTime is when the job succeeded or failed.")
    restarts: int = Field(default=0, ge=0,
                          description="restarts counts gang restarts charged to backoffLimit.")
    progress: Progress | None = Field(default=None, description="progress of the training loop.")
    result: RunResult | None = Field(
        default=None, description="result is the final step and eval loss, as the trainer said "
                                  "in its termination message: durable where a progress report "
                                  "may be lost.")
    checkpoint: CheckpointStatus | None = Field(
        default=None, description="checkpoint is the latest complete checkpoint.")
    gpu_hours: float = Field(
        default=0, ge=0,
        description="gpuHours is GPUs requested × hours held, over all attempts.")
    cost_estimate: float | None = Field(
        default=None, ge=0,
        description="costEstimate is the GPU time priced by the operator's GPU price table "
                    "(by the nodes' nvidia.com/gpu.product), in the table's currency.")
    failures: list[AttemptFailure] = Field(
        default_factory=list, max_length=MAX_FAILURES_KEPT,
        description="failures are the last attempts that failed (at most 5), newest last, with "
                    "their pods' last words: what is kept once the pods are gone.")
    ledger: Ledger = Field(
        default_factory=Ledger,
        description="ledger is the operator's bookkeeping of the GPU time and cost of pods it has "
                    "already removed, kept so that an operator restart loses none of it. Read "
                    "gpuHours and costEstimate instead.")
    attempts: int = Field(default=0, ge=0,
                          description="attempts counts the gangs of pods started, restarts "
                                      "that do not count toward backoffLimit included.")
    output: str | None = Field(default=None, max_length=2048,
                               description="output is the URI of the trained model.")
    observed_generation: int | None = Field(
        default=None, ge=0, description="observedGeneration is the last spec generation acted on.")
