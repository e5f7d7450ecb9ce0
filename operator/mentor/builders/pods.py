"""Pure builders: a job spec in, Kubernetes manifests out. No I/O, so they are unit-tested alone.

The torchrun command and its environment come from `trainer_command` and `torchrun_env`, which
the local runner uses too, so a job runs the same way in a pod and on a laptop.
"""

from __future__ import annotations

import json
from typing import Any

from mentor.api.training import TrainerConfig, TrainingJobSpec
from mentor.builders.names import (
    ATTEMPT,
    CONFIG_FILE,
    CONFIG_MOUNT,
    NODE_RANK,
    QUEUE_NAME,
    TRAINER_CONTAINER,
    JobRef,
)
from mentor.builders.storage import Mounts, localize
from mentor.config import Settings

GPU_RESOURCE = "nvidia.com/gpu"
TRAINER_METRICS_PORT = 9090  # rank 0's own /metrics, for a PodMonitor
RUN_AS = 1000  # the trainer image's non-root user


def trainer_command(config_path: str) -> list[str]:
    """What every trainer process runs; torchrun reads its own settings from PET_* variables."""
    return ["torchrun", "-m", "mentor_trainer", "--config", config_path]


def torchrun_env(nnodes: int, nproc: int, node_rank: int, master_addr: str,
                 master_port: int) -> dict[str, str]:
    """The PET_* variables, named as Kubeflow names them, so existing trainer scripts work."""
    return {
        "PET_NNODES": str(nnodes),
        "PET_NPROC_PER_NODE": str(nproc),
        "PET_NODE_RANK": str(node_rank),
        "PET_MASTER_ADDR": master_addr,
        "PET_MASTER_PORT": str(master_port),
    }


def build_config_map(job: JobRef, config: TrainerConfig) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": job.metadata(job.config_map),
        "data": {CONFIG_FILE: json.dumps(config.wire(), indent=2, sort_keys=True)},
    }


def build_service(job: JobRef, settings: Settings) -> dict[str, Any]:
    """Headless, and publishing not-ready addresses: rank 0 must be resolvable before it is
    Ready, or the other ranks could not find the rendezvous."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": job.metadata(job.service),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": job.labels(),
            "ports": [{"name": "rendezvous", "port": settings.rendezvous_port}],
        },
    }


def build_report_secret(job: JobRef, token: str) -> dict[str, Any]:
    """The job's progress token, for rank 0 to authenticate its reports."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": job.metadata(job.secret),
        "type": "Opaque",
        "stringData": {"token": token},
    }


def _resources(spec: TrainingJobSpec) -> dict[str, Any]:
    resources: dict[str, Any] = json.loads(json.dumps(spec.template.resources or {}))
    gpus = spec.parallelism.gpus_per_node
    if gpus:
        for section in ("limits", "requests"):
            resources.setdefault(section, {})[GPU_RESOURCE] = str(gpus)
    return resources


def _env(job: JobRef, spec: TrainingJobSpec, rank: int, attempt: int,
         settings: Settings) -> list[dict[str, Any]]:
    master = f"{job.pod(0)}.{job.service}"
    env: list[dict[str, Any]] = [
        {"name": k, "value": v}
        for k, v in torchrun_env(spec.parallelism.nodes, spec.parallelism.procs, rank, master,
                                 settings.rendezvous_port).items()
    ]
    env += [
        {"name": "MENTOR_CONFIG", "value": f"{CONFIG_MOUNT}/{CONFIG_FILE}"},
        {"name": "MENTOR_JOB_NAME", "value": job.name},
        {"name": "MENTOR_JOB_NAMESPACE", "value": job.namespace},
        {"name": "MENTOR_JOB_KIND", "value": job.kind},
        {"name": "MENTOR_ATTEMPT", "value": str(attempt)},
        {"name": "MENTOR_METRICS_PORT", "value": str(TRAINER_METRICS_PORT)},
    ]
    if settings.report_url:
        env.append({"name": "MENTOR_REPORT_URL", "value": settings.report_url})
        env.append({"name": "MENTOR_REPORT_TOKEN", "valueFrom": {
            "secretKeyRef": {"name": job.secret, "key": "token", "optional": True}}})
    env += [e.model_dump(by_alias=True, exclude_none=True) for e in spec.template.env]
    return env


def build_pod(job: JobRef, spec: TrainingJobSpec, rank: int, attempt: int,
              settings: Settings) -> dict[str, Any]:
    """One torchrun node. Its name is deterministic per rank; the attempt is an annotation."""
    _, mounts = localize(spec.trainer_config())
    template, scheduling = spec.template, spec.scheduling
    labels = {NODE_RANK: str(rank)}
    if scheduling.queue_name:
        labels[QUEUE_NAME] = scheduling.queue_name
    metadata = job.metadata(job.pod(rank), **labels)
    metadata["annotations"] = {ATTEMPT: str(attempt)}

    container: dict[str, Any] = {
        "name": TRAINER_CONTAINER,
        "image": template.image or settings.trainer_image,
        "command": trainer_command(f"{CONFIG_MOUNT}/{CONFIG_FILE}"),
        "env": _env(job, spec, rank, attempt, settings),
        "resources": _resources(spec),
        "ports": [{"name": "rendezvous", "containerPort": settings.rendezvous_port},
                  {"name": "metrics", "containerPort": TRAINER_METRICS_PORT}],
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_MOUNT, "readOnly": True},
            {"name": "dshm", "mountPath": "/dev/shm"},
            {"name": "tmp", "mountPath": "/tmp"},
            *mounts.volume_mounts,
            *template.volume_mounts,
        ],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
            "readOnlyRootFilesystem": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if template.image_pull_policy:
        container["imagePullPolicy"] = template.image_pull_policy

    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "hostname": job.pod(rank),
        "subdomain": job.service,
        "containers": [container],
        "volumes": _volumes(job, mounts, settings) + list(template.volumes),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "enableServiceLinks": False,
    }
    optional = {
        "nodeSelector": scheduling.node_selector or None,
        "tolerations": [t.model_dump(by_alias=True, exclude_none=True)
                        for t in scheduling.tolerations] or None,
        "affinity": scheduling.affinity,
        "priorityClassName": scheduling.priority_class_name,
        "schedulerName": scheduling.scheduler_name,
        "serviceAccountName": template.service_account_name,
        "imagePullSecrets": [{"name": n} for n in template.image_pull_secrets] or None,
    }
    pod_spec.update({k: v for k, v in optional.items() if v is not None})
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": pod_spec}


def _volumes(job: JobRef, mounts: Mounts, settings: Settings) -> list[dict[str, Any]]:
    return [
        {"name": "config", "configMap": {"name": job.config_map}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": settings.shm_size}},
        {"name": "tmp", "emptyDir": {}},
        *mounts.volumes,
    ]


def build_trainer_config(spec: TrainingJobSpec) -> TrainerConfig:
    """The config the pods read: the spec's training sections with pvc:// mapped to mounts."""
    config, _ = localize(spec.trainer_config())
    return config
