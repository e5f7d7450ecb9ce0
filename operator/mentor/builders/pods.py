"""Pure builders: a job spec in, Kubernetes manifests out. No I/O, so they are unit-tested alone.

A pod is one replica of the job's TorchX AppDef (mentor.builders.launch), turned into a pod by
TorchX's `role_to_pod`; what TorchX does not know of (names, labels, the headless Service's
hostname, owner references, volumes, secrets, the security context) is added here.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Protocol

import orjson
from kubernetes.client import ApiClient
from kubernetes.utils.quantity import parse_quantity
from torchx import specs
from torchx.schedulers.kubernetes_scheduler import role_to_pod

from mentor.api.labels import (
    ATTEMPT,
    CONFIG,
    GPU_FINALIZER,
    JOB_NAME,
    NODE_RANK,
    POD_GROUP_NAME,
    POD_GROUP_RETRIABLE,
    POD_GROUP_TOTAL,
    QUEUE_NAME,
    REPORT_SECRET,
    TRAINER_CONTAINER,
    TRAINER_POLICY,
)
from mentor.api.tracking import credential_env, resolved
from mentor.api.training import CODE_DIR_ENV, TrainingJobSpec, TrainingSections
from mentor.builders.launch import (
    CODE_MOUNT,
    TERMINATION_LOG,
    TRAINER_METRICS_PORT,
    code_dir,
    program,
    replica,
    replica_command_and_env,
    trainer_app,
    user_env,
)
from mentor.builders.names import CONFIG_FILE, CONFIG_MOUNT, JobRef
from mentor.builders.storage import PVC_ROOT, Mounts, localize, resolve_pvc

# On the objects Mentor makes once a namespace, which no job owns.
MANAGED = {"app.kubernetes.io/name": "mentor", "app.kubernetes.io/managed-by": "mentor"}


class Settings(Protocol):
    """What the builders read of the operator's settings (mentor.controller.settings): a
    protocol, so that the builders depend on no part of the operator's runtime."""

    @property
    def trainer_image(self) -> str: ...
    @property
    def rendezvous_port(self) -> int: ...
    @property
    def trainer_cpu(self) -> str: ...
    @property
    def trainer_memory(self) -> str: ...
    @property
    def trainer_uid(self) -> int | None: ...
    @property
    def trainer_pull_secrets(self) -> tuple[str, ...]: ...
    @property
    def shm_size(self) -> str: ...
    @property
    def report_url(self) -> str: ...
    @property
    def metrics_namespaces(self) -> tuple[str, ...]: ...
    @property
    def tracking_uri(self) -> str: ...
    @property
    def tracking_experiment(self) -> str: ...


def trainer_config_text(config: TrainingSections) -> str:
    """The config as the pod's annotation carries it (and its volume gives it to torchrun)."""
    return json.dumps(config.wire(), sort_keys=True, separators=(",", ":"))


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


def build_network_policy(namespace: str, settings: Settings) -> dict[str, Any]:
    """Who may reach a namespace's trainer pods: each other, on any port (the c10d rendezvous,
    NCCL and gloo pick theirs), and the Prometheus namespaces on the metrics port; nothing
    else. Their own traffic out (data, checkpoints, the operator) is left alone.

    One policy a namespace, not one a job: a namespace is a tenant, and its jobs' pods reaching
    each other is no more than its users could do by creating pods; per job, it was one more
    object to create for each job, on the path from apply to pods."""
    trainers = {"matchExpressions": [{"key": JOB_NAME, "operator": "Exists"}]}
    sources: list[dict[str, Any]] = [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": name}}} for name in settings.metrics_namespaces]
    rules: list[dict[str, Any]] = [{"from": [{"podSelector": trainers}]}]
    if sources:
        rules.append({"from": sources,
                      "ports": [{"protocol": "TCP", "port": TRAINER_METRICS_PORT}]})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": TRAINER_POLICY, "namespace": namespace, "labels": MANAGED},
        "spec": {"podSelector": trainers, "policyTypes": ["Ingress"], "ingress": rules},
    }


def build_report_secret(namespace: str, token: str) -> dict[str, Any]:
    """The namespace's progress token, for rank 0 of each of its jobs to authenticate its
    reports (mentor.controller.tokens)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": REPORT_SECRET, "namespace": namespace, "labels": MANAGED},
        "type": "Opaque",
        "stringData": {"token": token},
    }


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`extra` laid over `base`, one level of dicts deep (resources: limits/requests)."""
    out = dict(base)
    for key, value in extra.items():
        out[key] = {**out.get(key, {}), **value} if isinstance(value, dict) else value
    return out


@functools.cache
def _serializer() -> ApiClient:
    """Turns kubernetes' model objects into wire JSON; builds no connection."""
    return ApiClient()


def _job_env(job: JobRef, attempt: int, settings: Settings) -> dict[str, str]:
    env = {
        "MENTOR_JOB_NAME": job.name,
        "MENTOR_JOB_NAMESPACE": job.namespace,
        "MENTOR_JOB_KIND": job.kind,
        "MENTOR_JOB_UID": job.uid,
        "MENTOR_ATTEMPT": str(attempt),
        "MENTOR_METRICS_PORT": str(TRAINER_METRICS_PORT),
    }
    if settings.report_url:
        env["MENTOR_REPORT_URL"] = settings.report_url
    return env


def build_app(job: JobRef, spec: TrainingJobSpec, attempt: int,
              settings: Settings) -> specs.AppDef:
    """The job's TorchX AppDef: every node of the attempt is one replica of its role."""
    template = spec.template
    code = code_dir(spec.trainer, lambda claim: f"{PVC_ROOT}/{claim}")
    return trainer_app(
        job.name, image=template.image or settings.trainer_image,
        config_path=f"{CONFIG_MOUNT}/{CONFIG_FILE}", nnodes=spec.parallelism.nodes,
        nproc=spec.parallelism.procs, gpus=spec.parallelism.gpus_per_node or 0,
        master_addr=f"{job.pod(0)}.{job.service}", master_port=settings.rendezvous_port,
        env={**_job_env(job, attempt, settings), **user_env(spec),
             "MENTOR_IMAGE": template.image or settings.trainer_image,
             **({CODE_DIR_ENV: code} if code else {})},
        program=program(spec),
    )


def _secret_env(job: JobRef, spec: TrainingJobSpec, settings: Settings) -> list[dict[str, Any]]:
    """Variables read from the cluster (the report token, the user's valueFrom): not part of
    what runs, so not in the AppDef."""
    env: list[dict[str, Any]] = []
    if settings.report_url:
        env.append({"name": "MENTOR_REPORT_TOKEN", "valueFrom": {
            "secretKeyRef": {"name": REPORT_SECRET, "key": "token", "optional": True}}})
    env += [e.model_dump(by_alias=True, exclude_none=True)
            for e in [*spec.template.env, *(spec.trainer.env or [])] if e.value is None]
    return env + credential_env(spec.tracking)


def build_pods(job: JobRef, spec: TrainingJobSpec, ranks: list[int], attempt: int,
               settings: Settings) -> list[dict[str, Any]]:
    """The pods of these ranks of one attempt. TorchX builds one pod from the job's role with
    its macros still in; each rank is a copy of it with its names and what the macros make of
    its rank (its command and environment: `replica_command_and_env`) put in. They differ in
    nothing else, and building every pod through TorchX's model objects was a sixth of the
    operator's CPU in a burst. `test_every_rank_is_the_pod_torchx_would_build` holds each to
    the pod TorchX builds for its rank (`build_pod`)."""
    if not ranks:
        return []
    app = build_app(job, spec, attempt, settings)
    template = _build_pod(job, spec, ranks[0], attempt, settings, app.roles[0])
    copies = [template, *(orjson.loads(orjson.dumps(template)) for _ in ranks[1:])]
    return [_as_rank(pod, app, job, rank) for pod, rank in zip(copies, ranks, strict=True)]


def _as_rank(pod: dict[str, Any], app: specs.AppDef, job: JobRef, rank: int) -> dict[str, Any]:
    """The pod (changed in place) as the one of `rank`."""
    name = job.pod(rank)
    pod["metadata"]["name"] = pod["spec"]["hostname"] = name
    pod["metadata"]["labels"][NODE_RANK] = str(rank)
    container = pod["spec"]["containers"][0]
    container["command"], env = replica_command_and_env(app, rank)
    for var in container["env"]:
        if "value" in var and var["name"] in env:
            var["value"] = env[var["name"]]
    return pod


def build_pod(job: JobRef, spec: TrainingJobSpec, rank: int, attempt: int,
              settings: Settings) -> dict[str, Any]:
    """One torchrun node, all through TorchX (its macros substituted as a scheduler would).
    Its name is deterministic per rank; the attempt is an annotation."""
    app = build_app(job, spec, attempt, settings)
    return _build_pod(job, spec, rank, attempt, settings, replica(app, rank))


def _build_pod(job: JobRef, spec: TrainingJobSpec, rank: int, attempt: int,
               settings: Settings, role: specs.Role) -> dict[str, Any]:
    _, mounts = localize(spec.trainer_config())
    code = spec.trainer.code
    if code is not None and code.path:
        resolve_pvc(code.path, mounts.add_claim)  # its claim mounted like the data's
    template, scheduling = spec.template, spec.scheduling
    pod: dict[str, Any] = _serializer().sanitize_for_serialization(  # type: ignore[no-untyped-call]
        role_to_pod(TRAINER_CONTAINER, role, template.service_account_name,
                    reserved_millicpu=0, reserved_memmb=0))

    labels = {NODE_RANK: str(rank)}
    annotations = {**pod["metadata"].get("annotations", {}), ATTEMPT: str(attempt),
                   CONFIG: trainer_config_text(build_trainer_config(spec, settings))}
    # One Kueue pod group per attempt, admitted whole or not at all; also without a queue name,
    # for namespaces where Kueue's manageJobsWithoutQueueName queues every pod (inert elsewhere).
    labels[POD_GROUP_NAME] = job.pod_group(attempt)
    annotations[POD_GROUP_TOTAL] = str(spec.parallelism.nodes)
    annotations[POD_GROUP_RETRIABLE] = "false"
    if scheduling.queue_name:
        labels[QUEUE_NAME] = scheduling.queue_name
    metadata = job.metadata(job.pod(rank), **labels)
    metadata["annotations"] = annotations
    metadata["finalizers"] = [GPU_FINALIZER]
    pod["metadata"] = metadata

    container = pod["spec"]["containers"][0]
    container["env"] += _secret_env(job, spec, settings)
    container["resources"] = _with_defaults(
        _merge(container["resources"], template.resources.model_dump(
            by_alias=True, exclude_none=True, mode="json") if template.resources else {}),
        settings)
    container["volumeMounts"] = [
        {"name": "config", "mountPath": CONFIG_MOUNT, "readOnly": True},
        *container["volumeMounts"],  # TorchX's in-memory /dev/shm
        {"name": "tmp", "mountPath": "/tmp"},
        *mounts.volume_mounts,
        *([{"name": "code", "mountPath": CODE_MOUNT, "readOnly": True}]
          if code is not None and code.config_map else []),
        *template.volume_mounts,
    ]
    container["terminationMessagePath"] = TERMINATION_LOG
    # The launcher writes the root cause there; if it could not (killed), the log's tail.
    container["terminationMessagePolicy"] = "FallbackToLogsOnError"
    container["securityContext"] = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "readOnlyRootFilesystem": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if template.image_pull_policy:
        container["imagePullPolicy"] = template.image_pull_policy

    pod_spec = pod["spec"]
    pod_spec.update({
        "hostname": job.pod(rank),
        "subdomain": job.service,
        "volumes": _volumes(pod_spec["volumes"], mounts,
                            _shm_size(container["resources"], settings))
        + ([{"name": "code", "configMap": {"name": code.config_map.name, "items": [
            {"key": code.config_map.key, "path": code.config_map.key}]}}]
           if code is not None and code.config_map else [])
        + list(template.volumes),
        "securityContext": {
            "runAsNonRoot": True,
            **({"runAsUser": settings.trainer_uid, "runAsGroup": settings.trainer_uid,
                "fsGroup": settings.trainer_uid} if settings.trainer_uid is not None else {}),
            # chown a large dataset volume only when its root is not the pod's group already
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "enableServiceLinks": False,
        # The trainer never calls the API server: no token unless the template names a
        # ServiceAccount, whose identity its author wanted (and the admission policy let them).
        "automountServiceAccountToken": template.service_account_name is not None,
    })
    optional = {
        "nodeSelector": scheduling.node_selector or None,
        "tolerations": [t.model_dump(by_alias=True, exclude_none=True)
                        for t in scheduling.tolerations] or None,
        "affinity": scheduling.affinity,
        "priorityClassName": scheduling.priority_class_name,
        "schedulerName": scheduling.scheduler_name,
        "imagePullSecrets": [{"name": n} for n in dict.fromkeys(
            [*template.image_pull_secrets, *settings.trainer_pull_secrets])] or None,
    }
    for key, value in optional.items():
        if value is None:
            pod_spec.pop(key, None)
        else:
            pod_spec[key] = value
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": pod_spec}


def _with_defaults(resources: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """CPU and memory requests from the operator's defaults where the job names neither a
    request nor a limit (a limit alone makes Kubernetes request as much)."""
    requests = resources.setdefault("requests", {})
    limits = resources.get("limits", {})
    for name, default in (("cpu", settings.trainer_cpu), ("memory", settings.trainer_memory)):
        if default and name not in requests and name not in limits:
            requests[name] = default
    return resources


def _shm_size(resources: dict[str, Any], settings: Settings) -> str | None:
    """MENTOR_SHM_SIZE, or half the container's memory: /dev/shm counts as its memory."""
    if settings.shm_size:
        return settings.shm_size
    memory = resources.get("limits", {}).get("memory") or \
        resources.get("requests", {}).get("memory")
    if not memory:
        return None
    half = int(parse_quantity(memory)) // 2  # type: ignore[no-untyped-call]
    return f"{half // 2**20}Mi"


def _volumes(torchx_volumes: list[dict[str, Any]], mounts: Mounts,
             shm_size: str | None) -> list[dict[str, Any]]:
    """The config (from the pod's own annotation), TorchX's volumes (its /dev/shm, given a
    size limit) and the job's own."""
    for volume in torchx_volumes:
        if volume.get("emptyDir", {}).get("medium") == "Memory" and shm_size:
            volume["emptyDir"]["sizeLimit"] = shm_size
    return [
        {"name": "config", "downwardAPI": {"items": [{"path": CONFIG_FILE, "fieldRef": {
            "fieldPath": f"metadata.annotations['{CONFIG}']"}}]}},
        *torchx_volumes,
        {"name": "tmp", "emptyDir": {}},
        *mounts.volumes,
    ]


def build_trainer_config(spec: TrainingJobSpec,
                         settings: Settings | None = None) -> TrainingSections:
    """The config the pods read: the spec's training sections with pvc:// mapped to mounts,
    and the platform's tracking defaults filled in."""
    config, _ = localize(spec.trainer_config())
    uri, experiment = (settings.tracking_uri, settings.tracking_experiment) if settings \
        else ("", "")
    return config.model_copy(update={"tracking": resolved(spec.tracking, uri, experiment)})
