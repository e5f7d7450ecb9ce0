"""The manifests the operator creates, checked without a cluster."""

from __future__ import annotations

import json
from typing import Any

from mentor.api.training import TrainerConfig, TrainingJobSpec
from mentor.builders.names import JobRef
from mentor.builders.pods import (
    build_config_map,
    build_pod,
    build_service,
    build_trainer_config,
)
from mentor.config import Settings

JOB = JobRef(kind="TrainingJob", name="llm", namespace="team", uid="u-1")


def spec(**changes: Any) -> TrainingJobSpec:
    base: dict[str, Any] = {
        "model": {"size": "small"},
        "data": {"source": "pvc://datasets/text/shakespeare.txt"},
        "optimization": {"steps": 100},
        "output": {"uri": "pvc://models/llm"},
        "parallelism": {"nodes": 2, "gpusPerNode": 8},
    }
    base.update(changes)
    return TrainingJobSpec.model_validate(base)


def env_of(pod: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}


def test_pod_carries_the_torchrun_contract() -> None:
    pod = build_pod(JOB, spec(), rank=1, attempt=3, settings=Settings())
    env = env_of(pod)
    assert env["PET_NNODES"] == "2"
    assert env["PET_NPROC_PER_NODE"] == "8"
    assert env["PET_NODE_RANK"] == "1"
    assert env["PET_MASTER_ADDR"] == "llm-0.llm"
    assert env["PET_MASTER_PORT"] == "29500"
    assert env["MENTOR_ATTEMPT"] == "3"
    assert pod["metadata"]["name"] == "llm-1"
    assert pod["spec"]["hostname"] == "llm-1" and pod["spec"]["subdomain"] == "llm"
    assert pod["metadata"]["labels"]["mentor.dev/node-rank"] == "1"
    assert pod["metadata"]["labels"]["mentor.dev/job-name"] == "llm"
    assert pod["metadata"]["labels"]["mentor.dev/job-kind"] == "TrainingJob"
    owner = pod["metadata"]["ownerReferences"][0]
    assert owner["uid"] == "u-1" and owner["controller"] is True


def test_pod_requests_gpus_and_an_in_memory_shm() -> None:
    pod = build_pod(JOB, spec(), 0, 1, Settings())
    container = pod["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"
    shm = next(v for v in pod["spec"]["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"]["medium"] == "Memory"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]


def test_pod_is_acceptable_to_the_restricted_pod_security_profile() -> None:
    pod = build_pod(JOB, spec(), 0, 1, Settings())
    pod_sc = pod["spec"]["securityContext"]
    sc = pod["spec"]["containers"][0]["securityContext"]
    assert pod_sc["runAsNonRoot"] is True
    assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert all("hostPath" not in v for v in pod["spec"]["volumes"])


def test_pvc_uris_become_mounts_and_local_paths() -> None:
    pod = build_pod(JOB, spec(), 0, 1, Settings())
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"]
              if "persistentVolumeClaim" in v}
    assert claims == {"datasets", "models"}
    config = TrainerConfig.model_validate_json(
        build_config_map(JOB, spec().trainer_config())["data"]["config.json"])
    assert config.data.source == "pvc://datasets/text/shakespeare.txt"
    local = build_trainer_config(spec())
    assert local.data.source == "/mnt/pvc/datasets/text/shakespeare.txt"
    assert local.output.uri == "/mnt/pvc/models/llm"


def test_scheduling_and_template_pass_through() -> None:
    s = spec(
        scheduling={"nodeSelector": {"nvidia.com/gpu.product": "H100"},
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
                    "priorityClassName": "high", "queueName": "team-a"},
        template={"image": "example.com/trainer:1", "env": [{"name": "HF_HUB_OFFLINE",
                                                            "value": "1"}],
                  "serviceAccountName": "trainer", "imagePullSecrets": ["regcred"]},
    )
    pod = build_pod(JOB, s, 0, 1, Settings())
    assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "H100"}
    assert pod["spec"]["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists"}]
    assert pod["spec"]["priorityClassName"] == "high"
    assert pod["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert pod["spec"]["containers"][0]["image"] == "example.com/trainer:1"
    assert env_of(pod)["HF_HUB_OFFLINE"] == "1"
    assert pod["spec"]["serviceAccountName"] == "trainer"
    assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]


def test_default_image_comes_from_the_operator_settings(monkeypatch: Any) -> None:
    monkeypatch.setenv("MENTOR_TRAINER_IMAGE", "registry.local/mentor-trainer:dev")
    pod = build_pod(JOB, spec(), 0, 1, Settings())
    assert pod["spec"]["containers"][0]["image"] == "registry.local/mentor-trainer:dev"


def test_service_is_headless_and_publishes_unready_ranks() -> None:
    svc = build_service(JOB, Settings())
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["publishNotReadyAddresses"] is True
    assert svc["spec"]["selector"] == {"mentor.dev/job-name": "llm",
                                       "mentor.dev/job-kind": "TrainingJob"}


def test_config_map_holds_the_trainer_config_as_json() -> None:
    cm = build_config_map(JOB, spec().trainer_config())
    parsed = json.loads(cm["data"]["config.json"])
    assert parsed["optimization"]["steps"] == 100
    assert "runPolicy" not in parsed, "only what the trainer needs"
