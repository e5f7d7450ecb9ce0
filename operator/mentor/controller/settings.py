"""Operator settings, each from a `MENTOR_*` environment variable (the Helm chart sets them).

One class, one place: every setting says what it changes and why its default is what it is.
`Settings.from_env()` reads and checks them all once, at start-up, so a bad value is one line
naming the variable (`MENTOR_WORKERS='eight': Input should be a valid integer`), never a
traceback mid-run. `Settings()` alone is the defaults, for tests and tools.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from mentor.api.labels import DEFAULT_GPU_WEIGHTS
from mentor.controller.kube import own_namespace

PREFIX = "MENTOR_"
EMPTY_MEANS_NONE = frozenset({"trainer_run_as_user"})


class SettingsError(ValueError):
    """A `MENTOR_*` variable that cannot be used; the message names it and says why."""


def _names(value: Any) -> Any:
    """A comma-separated list, blanks dropped."""
    if isinstance(value, str):
        return tuple(n.strip() for n in value.split(",") if n.strip())
    return value


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _optional(value: Any) -> Any:
    return None if value == "" else value


Names = Annotated[tuple[str, ...], BeforeValidator(_names)]


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="forbid")

    # MENTOR_TRAINER_IMAGE: the image of the trainer pods when a job does not name one. One image
    # serves every job, so it is set once per install.
    trainer_image: str = Field("ghcr.io/mentor-dev/mentor-trainer:0.1.0", min_length=1)
    # MENTOR_NAMESPACES: comma-separated namespaces to watch; empty watches the whole cluster.
    namespaces: Names = ()
    # MENTOR_RENDEZVOUS_PORT: torchrun's c10d rendezvous port on rank 0's pod.
    rendezvous_port: int = Field(29500, ge=1, le=65535)
    # MENTOR_TRAINER_CPU / MENTOR_TRAINER_MEMORY: the requests of a trainer pod whose job does
    # not set them in template.resources, so no pod runs BestEffort (first to be evicted, with
    # no memory to its name). GPU jobs should set their own, sized to the node.
    trainer_cpu: str = "1"
    trainer_memory: str = "4Gi"
    # MENTOR_TRAINER_RUN_AS_USER: the UID, GID and fsGroup of trainer pods (the image's user,
    # 1000); empty leaves them to the image and the platform (OpenShift assigns its own).
    trainer_uid: Annotated[int | None, BeforeValidator(_optional)] = Field(
        1000, ge=0, validation_alias="trainer_run_as_user")
    # MENTOR_TRAINER_IMAGE_PULL_SECRETS: comma-separated Secrets for pulling the trainer image,
    # added to every job's own.
    trainer_pull_secrets: Names = Field((), validation_alias="trainer_image_pull_secrets")
    # MENTOR_SHM_SIZE: the size limit of the in-memory /dev/shm that data loaders and NCCL use.
    # Empty: half the pod's memory (its limit, else its request), since /dev/shm is charged to
    # the container's memory.
    shm_size: str = ""
    # MENTOR_RESYNC_SECONDS: how often a job that holds pods is reconciled without an event, to
    # bring its GPU-hours and cost up to date, while few do (see status_writes_per_second).
    # Deadlines, budgets and TTLs are not waited for this way: a job is queued for the moment
    # they fall due.
    resync_seconds: float = Field(30.0, gt=0)
    # MENTOR_SAFETY_RESYNC_SECONDS: how often every job is listed (page by page), in case a
    # watch event was ever missed: a job at a version never seen is queued at once, any other
    # as upkeep if nothing is planned for it.
    safety_resync_seconds: float = Field(300.0, gt=0)
    # MENTOR_WORKERS: reconciles run at once (each job is only ever in one of them).
    workers: int = Field(8, ge=1, le=256)
    # MENTOR_REPORT_URL: the operator's progress endpoint as the pods reach it (the chart's
    # Service). Empty disables progress reports; training never depends on them.
    report_url: str = ""
    # MENTOR_HTTP_HOST / MENTOR_HTTP_PORT: where /metrics and the progress endpoint listen.
    http_host: str = "0.0.0.0"
    http_port: int = Field(8080, ge=0, le=65535)
    # MENTOR_METRICS_PORT: where /metrics listens, apart from the reports (on MENTOR_HTTP_HOST),
    # so that a NetworkPolicy can open the reports to every trainer and /metrics to Prometheus
    # alone. 0: /metrics beside the reports.
    metrics_port: int = Field(0, ge=0, le=65535)
    # MENTOR_REPORT_KEY: the secret from which each namespace's report token is derived (HMAC
    # of the namespace's name). Unset, and with no MENTOR_REPORT_KEY_SECRET, a random key lives
    # as long as the process, and jobs that outlive an operator restart stop reporting progress.
    report_key: bytes = Field(default_factory=lambda: secrets.token_bytes(32), min_length=1)
    # MENTOR_REPORT_KEY_SECRET: with no MENTOR_REPORT_KEY, the Secret (in MENTOR_POD_NAMESPACE)
    # where the operator keeps the key, creating it on first start: the chart's default.
    report_key_secret: str = ""
    # MENTOR_PROGRESS_INTERVAL: the shortest time between two progress patches of one job.
    progress_interval: float = Field(2.0, ge=0)
    # MENTOR_STATUS_WRITES_PER_SECOND: the most status patches a second that time alone causes,
    # all jobs together: progress (reports beyond it are merged, the newest wins, and written in
    # turn, the longest-waiting job first) and the GPU-hours refresh of jobs that hold pods
    # (each refreshed every max(resync, holding jobs / rate) seconds). The API server's load
    # from them is bounded by this, not by the number of jobs (mentor.controller.budget).
    status_writes_per_second: float = Field(50.0, gt=0)
    # MENTOR_TRACKING_URI: the MLflow server that jobs record to when they name none (the
    # chart's tracking.mlflow.uri); empty records to MLflow only the jobs that name a server.
    tracking_uri: str = Field("", pattern=r"^(https?://[^/\s]+(/\S*)?)?$")
    # MENTOR_TRACKING_EXPERIMENT: their experiment when they name none (default: namespace).
    tracking_experiment: str = Field("", max_length=500)
    # MENTOR_GPU_PRICES: JSON map of nvidia.com/gpu.product to a price per GPU-hour, for
    # status.costEstimate. Empty means no estimate.
    gpu_prices: Annotated[dict[str, Annotated[float, Field(ge=0)]],
                          BeforeValidator(_json)] = Field(default_factory=dict)
    # MENTOR_NETWORK_POLICY: give each namespace with jobs a NetworkPolicy: its trainer pods
    # reach each other (c10d, NCCL), the MENTOR_METRICS_NAMESPACES reach their metrics port,
    # and nothing else does.
    network_policy: bool = True
    # MENTOR_METRICS_NAMESPACES: comma-separated namespaces whose Prometheus scrapes trainers.
    metrics_namespaces: Names = ()
    # MENTOR_GPU_RESOURCES: JSON map of the resources charged as GPUs to their weight in GPUs
    # (GPU-hours, maxGPUHours, cost). Default: nvidia.com/gpu and amd.com/gpu, 1 each. MIG
    # slices as a fraction: {"nvidia.com/gpu": 1, "nvidia.com/mig-1g.10gb": 0.142857}.
    gpu_resources: Annotated[dict[str, Annotated[float, Field(gt=0, le=64)]],
                             BeforeValidator(_json)] = Field(
        default_factory=lambda: dict(DEFAULT_GPU_WEIGHTS), min_length=1)

    # MENTOR_LEADER_ELECTION: "false" only for a single replica that must start at once (local
    # runs). With it on, replicas share the Lease MENTOR_LEASE_NAME in MENTOR_POD_NAMESPACE (the
    # chart sets it from the downward API) and one works; MENTOR_LEASE_SECONDS is how long a
    # silent leader's Lease lasts before a standby takes over.
    leader_election: bool = True
    lease_name: str = Field("mentor-operator", min_length=1)
    lease_namespace: str = Field(default_factory=own_namespace, min_length=1,
                                 validation_alias="pod_namespace")
    lease_seconds: float = Field(15.0, gt=0)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Every `MENTOR_*` variable this class knows, checked; a bad one is a SettingsError."""
        environ = os.environ if environ is None else environ
        names = {(f.validation_alias if isinstance(f.validation_alias, str) else name)
                 for name, f in cls.model_fields.items()}
        # An empty variable is an unset one, except where empty has a meaning of its own.
        values = {name: environ[PREFIX + name.upper()] for name in names
                  if environ.get(PREFIX + name.upper(), "") != ""
                  or (name in EMPTY_MEANS_NONE and PREFIX + name.upper() in environ)}
        try:
            return cls.model_validate(values)
        except ValidationError as e:
            raise SettingsError("; ".join(
                f"{PREFIX}{str(err['loc'][0]).upper()}={err['input']!r}: {err['msg']}"
                for err in e.errors())) from None
