"""Operator settings, each read from a `MENTOR_*` environment variable (the Helm chart sets them).

One class, one place: every setting says what it changes and why its default is what it is.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field


def _env(name: str, default: str) -> str:
    return os.environ.get(f"MENTOR_{name}", default)


@dataclass(frozen=True)
class Settings:
    # MENTOR_TRAINER_IMAGE: the image of the trainer pods when a job does not name one. One image
    # serves every job, so it is set once per install.
    trainer_image: str = field(
        default_factory=lambda: _env("TRAINER_IMAGE", "ghcr.io/mentor-dev/mentor-trainer:0.1.0"))
    # MENTOR_NAMESPACES: comma-separated namespaces to watch; empty watches the whole cluster.
    namespaces: tuple[str, ...] = field(default_factory=lambda: tuple(
        n.strip() for n in _env("NAMESPACES", "").split(",") if n.strip()))
    # MENTOR_RENDEZVOUS_PORT: torchrun's c10d rendezvous port on rank 0's pod.
    rendezvous_port: int = field(default_factory=lambda: int(_env("RENDEZVOUS_PORT", "29500")))
    # MENTOR_TRAINER_CPU / MENTOR_TRAINER_MEMORY: the requests of a trainer pod whose job does
    # not set them in template.resources, so no pod runs BestEffort (first to be evicted, with
    # no memory to its name). GPU jobs should set their own, sized to the node.
    trainer_cpu: str = field(default_factory=lambda: _env("TRAINER_CPU", "1"))
    trainer_memory: str = field(default_factory=lambda: _env("TRAINER_MEMORY", "4Gi"))
    # MENTOR_TRAINER_RUN_AS_USER: the UID, GID and fsGroup of trainer pods (the image's user,
    # 1000); empty leaves them to the image and the platform (OpenShift assigns its own).
    trainer_uid: int | None = field(default_factory=lambda: (
        int(_env("TRAINER_RUN_AS_USER", "1000")) if _env("TRAINER_RUN_AS_USER", "1000") else None))
    # MENTOR_TRAINER_IMAGE_PULL_SECRETS: comma-separated Secrets for pulling the trainer image,
    # added to every job's own.
    trainer_pull_secrets: tuple[str, ...] = field(default_factory=lambda: tuple(
        n.strip() for n in _env("TRAINER_IMAGE_PULL_SECRETS", "").split(",") if n.strip()))
    # MENTOR_SHM_SIZE: the size limit of the in-memory /dev/shm that data loaders and NCCL use.
    # Empty: half the pod's memory (its limit, else its request), since /dev/shm is charged to
    # the container's memory.
    shm_size: str = field(default_factory=lambda: _env("SHM_SIZE", ""))
    # MENTOR_RESYNC_SECONDS: how often a job that holds pods is reconciled without an event, to
    # bring its GPU-hours and cost up to date and check its budget. Deadlines and TTLs are not
    # waited for this way: a job is queued for the moment they fall due.
    resync_seconds: float = field(default_factory=lambda: float(_env("RESYNC_SECONDS", "30")))
    # MENTOR_SAFETY_RESYNC_SECONDS: how often every job is listed (page by page) and queued, in
    # case a watch event was ever missed.
    safety_resync_seconds: float = field(
        default_factory=lambda: float(_env("SAFETY_RESYNC_SECONDS", "300")))
    # MENTOR_WORKERS: reconciles run at once (each job is only ever in one of them).
    workers: int = field(default_factory=lambda: int(_env("WORKERS", "8")))
    # MENTOR_REPORT_URL: the operator's progress endpoint as the pods reach it (the chart's
    # Service). Empty disables progress reports; training never depends on them.
    report_url: str = field(default_factory=lambda: _env("REPORT_URL", ""))
    # MENTOR_HTTP_HOST / MENTOR_HTTP_PORT: where /metrics and the progress endpoint listen.
    http_host: str = field(default_factory=lambda: _env("HTTP_HOST", "0.0.0.0"))
    http_port: int = field(default_factory=lambda: int(_env("HTTP_PORT", "8080")))
    # MENTOR_REPORT_KEY: the secret from which each job's report token is derived (HMAC of the
    # job's UID). Unset, and with no MENTOR_REPORT_KEY_SECRET, a random key lives as long as the
    # process, and jobs that outlive an operator restart stop reporting progress.
    report_key: bytes = field(default_factory=lambda: (
        _env("REPORT_KEY", "").encode() or secrets.token_bytes(32)))
    # MENTOR_REPORT_KEY_SECRET: with no MENTOR_REPORT_KEY, the Secret (in MENTOR_POD_NAMESPACE)
    # where the operator keeps the key, creating it on first start: the chart's default.
    report_key_secret: str = field(default_factory=lambda: _env("REPORT_KEY_SECRET", ""))
    # MENTOR_PROGRESS_INTERVAL: the shortest time between two progress patches of one job.
    progress_interval: float = field(
        default_factory=lambda: float(_env("PROGRESS_INTERVAL", "2")))
    # MENTOR_GPU_PRICES: JSON map of nvidia.com/gpu.product to a price per GPU-hour, for
    # status.costEstimate. Empty means no estimate.
    gpu_prices: dict[str, float] = field(
        default_factory=lambda: json.loads(_env("GPU_PRICES", "{}")))

    # MENTOR_LEADER_ELECTION: "false" only for a single replica that must start at once (local
    # runs). With it on, replicas share the Lease MENTOR_LEASE_NAME in MENTOR_POD_NAMESPACE (the
    # chart sets it from the downward API) and one works; MENTOR_LEASE_SECONDS is how long a
    # silent leader's Lease lasts before a standby takes over.
    leader_election: bool = field(
        default_factory=lambda: _env("LEADER_ELECTION", "true").lower() != "false")
    lease_name: str = field(default_factory=lambda: _env("LEASE_NAME", "mentor-operator"))
    lease_namespace: str = field(
        default_factory=lambda: _env("POD_NAMESPACE", "") or _own_namespace())
    lease_seconds: float = field(default_factory=lambda: float(_env("LEASE_SECONDS", "15")))


def _own_namespace() -> str:
    """The namespace of the pod this runs in, from its service account; "default" outside."""
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as f:
            return f.read().strip() or "default"
    except OSError:
        return "default"


def settings() -> Settings:
    return Settings()
