"""The custom resource kinds: their names, their top-level rules and their printer columns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mentor.api.base import ApiModel, Rule
from mentor.api.status import JobStatus
from mentor.api.training import TrainingJobSpec
from mentor.api.tuning import TuningJobSpec, TuningStatus

GROUP = "mentor.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# A job's name becomes its Service's name and, with a rank suffix, its pods' hostnames: both are
# DNS-1035 labels of at most 63 characters. 52 leaves room for "-<rank>" and trial suffixes.
MAX_NAME_LENGTH = 52
TRIAL_SUFFIX_LENGTH = 5  # "-t999": a TuningJob's trials are TrainingJobs named <tuning>-t<n>
NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"


class ObjectMeta(BaseModel):
    """The part of metadata that the CRD constrains: the name, since it names the pods."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(
        max_length=MAX_NAME_LENGTH, pattern=NAME_PATTERN,
        description="name must be a DNS-1035 label (lower case letters, digits and '-', "
                    f"starting with a letter) of at most {MAX_NAME_LENGTH} characters.")


_RUNNING = "['Pending', 'Running', 'Restarting']"


def _same(*fields: str) -> str:
    """CEL: each spec field (possibly unset) is unchanged."""
    return " && ".join(
        f"(has(self.spec.{f}) == has(oldSelf.spec.{f}) && "
        f"(!has(self.spec.{f}) || self.spec.{f} == oldSelf.spec.{f}))" for f in fields)


_FIXED = ("model", "adaptation", "data", "optimization", "trainer")
IMMUTABLE_WHILE_ACTIVE = Rule(
    f"!has(oldSelf.status) || !has(oldSelf.status.phase) || !(oldSelf.status.phase in {_RUNNING})"
    " || (self.spec.parallelism == oldSelf.spec.parallelism"
    " && self.spec.output == oldSelf.spec.output"
    " && " + _same(*_FIXED) + ")",
    "spec.trainer, model, adaptation, data, optimization, parallelism and output cannot change "
    "while the job is active; suspend it first (spec.runPolicy.suspend: true)",
    reason="FieldValueForbidden",
)


@dataclass(frozen=True)
class Kind:
    """One custom resource kind and everything its CRD needs besides the schema."""

    kind: str
    plural: str
    short_names: tuple[str, ...]
    spec: type[BaseModel]
    rules: tuple[Rule, ...]
    columns: tuple[dict[str, Any], ...]
    status: type[BaseModel] = JobStatus
    max_name_length: int = MAX_NAME_LENGTH

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"


COMMON_COLUMNS: tuple[dict[str, Any], ...] = (
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase",
     "description": "The job's phase: Pending, Running, Restarting, Succeeded, Failed, Suspended."},
    {"name": "Nodes", "type": "integer", "jsonPath": ".spec.parallelism.nodes",
     "description": "Pods (torchrun nodes) per attempt."},
    {"name": "Reason", "type": "string", "jsonPath": ".status.reason",
     "description": "Why the job is in its phase."},
    {"name": "Restarts", "type": "integer", "jsonPath": ".status.restarts",
     "description": "Gang restarts charged to backoffLimit."},
    {"name": "Progress", "type": "string", "jsonPath": ".status.progress.shown",
     "description": "Percent of the training steps done."},
    {"name": "Loss", "type": "number", "jsonPath": ".status.progress.loss",
     "description": "The last training loss."},
    {"name": "GPU-Hours", "type": "number", "jsonPath": ".status.gpuHours",
     "description": "GPUs requested × hours held, over all attempts."},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp",
     "description": "Time since the job was created."},
    {"name": "ETA", "type": "integer", "jsonPath": ".status.progress.etaSeconds", "priority": 1,
     "description": "Seconds of training left, as the trainer estimates (kubectl get -o wide)."},
)

TRAINING_JOB = Kind(
    kind="TrainingJob",
    plural="trainingjobs",
    short_names=("mtj", "mtrain"),
    spec=TrainingJobSpec,
    rules=(IMMUTABLE_WHILE_ACTIVE,),
    columns=COMMON_COLUMNS,
)


_SEARCH_FIXED = ("algorithm", "parameters", "objective", "maxFailedTrials", "pruner", "seed")
TUNING_IMMUTABLE_WHILE_ACTIVE = Rule(
    f"!has(oldSelf.status) || !has(oldSelf.status.phase) || !(oldSelf.status.phase in {_RUNNING})"
    " || (" + _same("baseModel", "method", "data", "optimization", "parallelism",
                    "checkpointing", "output", "trialPolicy", "scheduling", "template")
    + " && has(self.spec.search) == has(oldSelf.spec.search) && (!has(self.spec.search) || ("
    + _same(*(f"search.{f}" for f in _SEARCH_FIXED)) + ")))",
    "only search.maxTrials, search.parallelTrials and budget can change while the TuningJob is "
    "active",
    reason="FieldValueForbidden",
)

TUNING_JOB = Kind(
    kind="TuningJob",
    plural="tuningjobs",
    short_names=("mtune", "tj"),
    spec=TuningJobSpec,
    status=TuningStatus,
    rules=(TUNING_IMMUTABLE_WHILE_ACTIVE,),
    max_name_length=MAX_NAME_LENGTH - TRIAL_SUFFIX_LENGTH,
    columns=(
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase",
         "description": "Pending, Running, Succeeded or Failed."},
        {"name": "Trials", "type": "string", "jsonPath": ".status.shown.trials",
         "description": "Trials finished / maxTrials."},
        {"name": "Best", "type": "number", "jsonPath": ".status.bestTrial.objective",
         "description": "The best trial's objective."},
        {"name": "GPU-Hours", "type": "string", "jsonPath": ".status.shown.gpuHours",
         "description": "GPU-hours used / maxGPUHours."},
        {"name": "Reason", "type": "string", "jsonPath": ".status.reason",
         "description": "Why the job is in its phase."},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp",
         "description": "Time since the job was created."},
        {"name": "Best-Trial", "type": "string", "jsonPath": ".status.bestTrial.name",
         "priority": 1, "description": "The best trial's TrainingJob."},
    ),
)
KINDS: tuple[Kind, ...] = (TRAINING_JOB, TUNING_JOB)


class _Object(ApiModel):
    """What every whole object shares, as `kubectl apply` sends it; the local runner reads it."""

    api_version: str = Field(default=API_VERSION, pattern=f"^{API_VERSION}$",
                             description="apiVersion is mentor.dev/v1alpha1.")
    metadata: ObjectMeta = Field(description="metadata is the object's metadata.")


class TrainingJob(_Object):
    """A whole TrainingJob object."""

    kind: str = Field(default="TrainingJob", pattern="^TrainingJob$",
                      description="kind is TrainingJob.")
    spec: TrainingJobSpec = Field(description="spec is the desired job.")
    status: JobStatus | None = Field(default=None, description="status is observed state.")


class TuningJob(_Object):
    """A whole TuningJob object."""

    kind: str = Field(default="TuningJob", pattern="^TuningJob$",
                      description="kind is TuningJob.")
    spec: TuningJobSpec = Field(description="spec is the desired search.")
    status: TuningStatus | None = Field(default=None, description="status is observed state.")
