"""The manifests the operator creates, checked without a cluster."""

from __future__ import annotations

import json
from typing import Any

from mentor.api.training import TrainerConfig, TrainingJobSpec
from mentor.builders.names import JobRef
from mentor.builders.pods import (
    build_pod,
    build_pods,
    build_report_secret,
    build_service,
    build_trainer_config,
    trainer_config_text,
)
from mentor.controller.settings import Settings

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
    pod = build_pod(JOB, spec(), rank=1, attempt=3, settings=Settings.from_env())
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
    pod = build_pod(JOB, spec(), 0, 1, Settings.from_env())
    container = pod["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"
    shm = next(v for v in pod["spec"]["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"]["medium"] == "Memory"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]


def test_pod_is_acceptable_to_the_restricted_pod_security_profile() -> None:
    pod = build_pod(JOB, spec(), 0, 1, Settings.from_env())
    pod_sc = pod["spec"]["securityContext"]
    sc = pod["spec"]["containers"][0]["securityContext"]
    assert pod_sc["runAsNonRoot"] is True
    assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert all("hostPath" not in v for v in pod["spec"]["volumes"])
    assert pod_sc["fsGroupChangePolicy"] == "OnRootMismatch", "no chown of a big dataset"
    assert (pod_sc["runAsUser"], pod_sc["fsGroup"]) == (1000, 1000)


def test_trainer_uid_and_pull_secrets_come_from_the_operator(monkeypatch: Any) -> None:
    monkeypatch.setenv("MENTOR_TRAINER_RUN_AS_USER", "")  # OpenShift: the platform's UID
    monkeypatch.setenv("MENTOR_TRAINER_IMAGE_PULL_SECRETS", "regcred, mirror")
    pod = build_pod(JOB, spec(template={"imagePullSecrets": ["regcred"]}), 0, 1,
                    Settings.from_env())
    assert "runAsUser" not in pod["spec"]["securityContext"]
    assert "fsGroup" not in pod["spec"]["securityContext"]
    assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}, {"name": "mirror"}]


def test_pvc_uris_become_mounts_and_local_paths() -> None:
    pod = build_pod(JOB, spec(), 0, 1, Settings.from_env())
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"]
              if "persistentVolumeClaim" in v}
    assert claims == {"datasets", "models"}
    config = TrainerConfig.model_validate_json(trainer_config_text(spec().trainer_config()))
    assert config.data.source == "pvc://datasets/text/shakespeare.txt"
    local = build_trainer_config(spec())
    assert local.data.source == "/mnt/pvc/datasets/text/shakespeare.txt"
    assert local.output.uri == "/mnt/pvc/models/llm"


def test_a_tokenizer_on_a_claim_is_mounted_for_a_new_model() -> None:
    s = spec(model={"size": "tiny", "tokenizer": "pretrained",
                    "tokenizerFrom": "pvc://tokenizers/bpe-32k"})
    pod = build_pod(JOB, s, 0, 1, Settings.from_env())
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"]
              if "persistentVolumeClaim" in v}
    assert "tokenizers" in claims
    assert build_trainer_config(s).model.tokenizer_from == "/mnt/pvc/tokenizers/bpe-32k"


def test_scheduling_and_template_pass_through() -> None:
    s = spec(
        scheduling={"nodeSelector": {"nvidia.com/gpu.product": "H100"},
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
                    "priorityClassName": "high", "queueName": "team-a"},
        template={"image": "example.com/trainer:1", "env": [{"name": "HF_HUB_OFFLINE",
                                                            "value": "1"}],
                  "serviceAccountName": "trainer", "imagePullSecrets": ["regcred"]},
    )
    pod = build_pod(JOB, s, 0, 1, Settings.from_env())
    assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "H100"}
    assert pod["spec"]["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists"}]
    assert pod["spec"]["priorityClassName"] == "high"
    assert pod["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    # every rank of an attempt is one Kueue pod group of `nodes` pods; a restart is a new group
    again = build_pod(JOB, s, 1, 2, Settings.from_env())
    assert pod["metadata"]["labels"]["kueue.x-k8s.io/pod-group-name"] == "llm-u-1-1"
    assert again["metadata"]["labels"]["kueue.x-k8s.io/pod-group-name"] == "llm-u-1-2"
    assert pod["metadata"]["annotations"]["kueue.x-k8s.io/pod-group-total-count"] == str(
        s.parallelism.nodes)
    assert pod["metadata"]["annotations"]["kueue.x-k8s.io/retriable-in-group"] == "false", \
        "a failed group is finished, not refilled: Mentor starts a new one"
    assert pod["metadata"]["finalizers"] == ["mentor.dev/gpu-accounting"]
    assert pod["spec"]["containers"][0]["image"] == "example.com/trainer:1"
    assert env_of(pod)["HF_HUB_OFFLINE"] == "1"
    assert pod["spec"]["serviceAccountName"] == "trainer"
    assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]


def test_default_image_comes_from_the_operator_settings(monkeypatch: Any) -> None:
    monkeypatch.setenv("MENTOR_TRAINER_IMAGE", "registry.local/mentor-trainer:dev")
    pod = build_pod(JOB, spec(), 0, 1, Settings.from_env())
    assert pod["spec"]["containers"][0]["image"] == "registry.local/mentor-trainer:dev"


def test_service_is_headless_and_publishes_unready_ranks() -> None:
    svc = build_service(JOB, Settings.from_env())
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["publishNotReadyAddresses"] is True
    assert svc["spec"]["selector"] == {"mentor.dev/job-name": "llm",
                                       "mentor.dev/job-kind": "TrainingJob"}


def test_each_pod_carries_its_trainer_config_and_reads_it_as_a_file() -> None:
    """No ConfigMap a job: the pod's annotation holds the config, its downward API volume
    gives it to torchrun at the path the command names."""
    pod = build_pod(JOB, spec(), 0, 1, Settings.from_env())
    parsed = json.loads(pod["metadata"]["annotations"]["mentor.dev/config"])
    assert parsed["optimization"]["steps"] == 100
    assert parsed["data"]["source"] == "/mnt/pvc/datasets/text/shakespeare.txt", "as mounted"
    assert "runPolicy" not in parsed, "only what the trainer needs"
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "config")
    assert volume["downwardAPI"]["items"] == [{"path": "config.json", "fieldRef": {
        "fieldPath": "metadata.annotations['mentor.dev/config']"}}]
    mount = next(m for m in pod["spec"]["containers"][0]["volumeMounts"]
                 if m["name"] == "config")
    assert f"{mount['mountPath']}/config.json" in pod["spec"]["containers"][0]["command"]
    edited = build_pod(JOB, spec(optimization={"steps": 7}), 0, 2, Settings.from_env())
    assert json.loads(edited["metadata"]["annotations"]["mentor.dev/config"])[
        "optimization"]["steps"] == 7, "a pod of a later attempt runs the spec as edited"


def test_the_pod_runs_the_launcher_that_keeps_exit_codes() -> None:
    """Not plain torchrun, which exits 1 for every failure: the image's `mentor-torchrun`."""
    container = build_pod(JOB, spec(), 0, 1, Settings.from_env())["spec"]["containers"][0]
    assert container["command"] == ["mentor-torchrun", "-m", "mentor_trainer", "--config",
                                    "/etc/mentor/config.json"]
    assert "args" not in container
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert env_of(build_pod(JOB, spec(), 0, 1, Settings.from_env()))["MENTOR_TERMINATION_LOG"] == \
        "/dev/termination-log"


def test_pods_and_mentor_run_launch_the_same_torchx_appdef(tmp_path: Any) -> None:
    """One description of the launch: a pod is a replica of the AppDef that `mentor run` hands to
    TorchX's local scheduler; only the node layout and the paths differ."""
    from mentor.api.validation import validate
    from mentor.builders.launch import ROLE, command, replica
    from mentor.builders.pods import build_app
    from mentor.local.training import app_for

    s = spec(parallelism={"nodes": 1, "procsPerNode": 2})
    cluster = build_app(JOB, s, 1, Settings.from_env())
    local = app_for(validate({"apiVersion": "mentor.dev/v1alpha1", "kind": "TrainingJob",
                              "metadata": {"name": "llm"},
                              "spec": s.model_dump(by_alias=True, exclude_none=True)}),
                    tmp_path / "config.json")
    pod = build_pod(JOB, s, 0, 1, Settings.from_env())
    assert pod["spec"]["containers"][0]["command"] == command(replica(cluster, 0))
    assert [r.name for r in cluster.roles] == [r.name for r in local.roles] == [ROLE]
    assert command(replica(local, 0)) == [*command(replica(cluster, 0))[:-1],
                                          str(tmp_path / "config.json")]
    for app in (cluster, local):
        assert set(app.roles[0].env) >= {"PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK",
                                         "PET_MASTER_ADDR", "PET_MASTER_PORT"}


def test_the_appdef_carries_gpus_and_ports_and_a_replica_per_node() -> None:
    from mentor.builders.launch import replica
    from mentor.builders.pods import build_app

    app = build_app(JOB, spec(), 1, Settings.from_env())
    role = app.roles[0]
    assert role.num_replicas == 2
    assert role.resource.gpu == 8 and role.resource.cpu == 0 and role.resource.memMB == 0
    assert role.port_map == {"c10d": 29500, "metrics": 9090}
    assert role.env["PET_NODE_RANK"] == "${replica_id}"
    assert replica(app, 1).env["PET_NODE_RANK"] == "1"


def test_template_resources_are_laid_over_the_gpu_request() -> None:
    s = spec(template={"resources": {"requests": {"cpu": "8", "memory": "64Gi"},
                                     "limits": {"memory": "64Gi"}}})
    resources = build_pod(JOB, s, 0, 1, Settings.from_env())["spec"]["containers"][0]["resources"]
    assert resources == {"requests": {"nvidia.com/gpu": "8", "cpu": "8", "memory": "64Gi"},
                         "limits": {"nvidia.com/gpu": "8", "memory": "64Gi"}}


def test_pods_get_default_requests_and_a_shm_of_half_their_memory() -> None:
    pod = build_pod(JOB, spec(parallelism={"nodes": 1, "procsPerNode": 2}), 0, 1,
                    Settings.from_env())
    container = pod["spec"]["containers"][0]
    assert container["resources"]["requests"] == {"cpu": "1", "memory": "4Gi"}, \
        "never BestEffort"
    shm = next(v for v in pod["spec"]["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"]["sizeLimit"] == "2048Mi"

    sized = spec(template={"resources": {"limits": {"memory": "64Gi"}}})
    container = build_pod(JOB, sized, 0, 1, Settings.from_env())["spec"]["containers"][0]
    assert "memory" not in container["resources"]["requests"], "a limit alone is the request"
    assert container["resources"]["requests"]["cpu"] == "1"
    shm = next(v for v in build_pod(JOB, sized, 0, 1, Settings.from_env())["spec"]["volumes"]
               if v["name"] == "dshm")
    assert shm["emptyDir"]["sizeLimit"] == "32768Mi"


def test_the_report_token_is_the_namespaces_and_each_report_names_its_jobs_uid() -> None:
    """One Secret a namespace (not one a job); the pod's MENTOR_JOB_UID is what keeps a
    deleted job's pods from reporting into a new job of its name (the server checks it)."""
    again = JobRef(kind="TrainingJob", name="llm", namespace="team", uid="u-2-other")
    pod = build_pod(again, spec(), 0, 1, Settings(report_url="http://op"))
    env = pod["spec"]["containers"][0]["env"]
    token = next(e for e in env if e["name"] == "MENTOR_REPORT_TOKEN")
    assert token["valueFrom"]["secretKeyRef"]["name"] == "mentor-report"
    assert env_of(pod)["MENTOR_JOB_UID"] == "u-2-other"
    secret = build_report_secret("team", "t0ken")
    assert secret["metadata"]["name"] == "mentor-report"
    assert "ownerReferences" not in secret["metadata"], "no job's: the next job uses it"


def test_mentor_run_shares_the_cores_among_the_ranks(tmp_path: Any, monkeypatch: Any) -> None:
    import os

    from mentor.api.validation import validate
    from mentor.local.training import app_for

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    for procs, threads in ((1, "8"), (2, "4"), (16, "1")):
        s = spec(parallelism={"nodes": 1, "procsPerNode": procs},
                 optimization={"steps": 10, "globalBatchSize": 16 * procs, "microBatchSize": 1})
        job = validate({"apiVersion": "mentor.dev/v1alpha1", "kind": "TrainingJob",
                        "metadata": {"name": "llm"},
                        "spec": s.model_dump(by_alias=True, exclude_none=True)})
        assert app_for(job, tmp_path / "c.json").roles[0].env["OMP_NUM_THREADS"] == threads


def test_trainer_pods_mount_no_service_account_token_unless_one_was_named() -> None:
    plain = build_pod(JOB, spec(), 0, 1, Settings.from_env())
    assert plain["spec"]["automountServiceAccountToken"] is False
    named = build_pod(JOB, spec(template={"serviceAccountName": "s3-reader"}), 0, 1,
                      Settings.from_env())
    assert named["spec"]["serviceAccountName"] == "s3-reader"
    assert named["spec"]["automountServiceAccountToken"] is True


def test_trainer_pods_are_reached_by_each_other_and_by_prometheus_only() -> None:
    from mentor.builders.pods import build_network_policy

    policy = build_network_policy("team", Settings.from_env({
        "MENTOR_METRICS_NAMESPACES": "monitoring"}))
    assert policy["kind"] == "NetworkPolicy" and policy["spec"]["policyTypes"] == ["Ingress"]
    trainers = policy["spec"]["podSelector"]
    assert trainers == {"matchExpressions": [{"key": "mentor.dev/job-name",
                                              "operator": "Exists"}]}
    peers, scrape = policy["spec"]["ingress"]
    assert peers == {"from": [{"podSelector": trainers}]}, "any port: c10d, NCCL"
    assert scrape["ports"] == [{"protocol": "TCP", "port": 9090}]
    assert scrape["from"] == [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "monitoring"}}}]
    assert policy["metadata"]["namespace"] == "team" and "ownerReferences" not in policy[
        "metadata"], "the namespace's, made once: no job's"
    alone = build_network_policy("team", Settings.from_env({}))
    assert len(alone["spec"]["ingress"]) == 1, "no Prometheus named: none scrapes"


def test_a_custom_trainer_runs_its_command_under_the_launcher_where_its_code_is() -> None:
    settings = Settings.from_env()
    mine = spec(model=None, data=None, optimization=None, trainer={
        "type": "custom", "command": ["train.py"], "args": ["--lr", "0.1"],
        "code": {"configMap": {"name": "scripts", "key": "train.py"}},
        "env": [{"name": "WANDB_MODE", "value": "offline"}]})
    pod = build_pod(JOB, mine, 0, 1, settings)
    container = pod["spec"]["containers"][0]
    command = container["command"] + container.get("args", [])
    assert command[0] == "mentor-torchrun" and "mentor_trainer" not in command
    assert command[-3:] == ["train.py", "--lr", "0.1"]
    env = env_of(pod)
    assert env["MENTOR_CODE_DIR"] == "/mentor/code" and env["WANDB_MODE"] == "offline"
    assert env["PET_NNODES"] == "2", "the same torchrun contract"
    code = next(v for v in pod["spec"]["volumes"] if v["name"] == "code")
    assert code["configMap"] == {"name": "scripts",
                                 "items": [{"key": "train.py", "path": "train.py"}]}
    config = json.loads(pod["metadata"]["annotations"]["mentor.dev/config"])
    assert config["output"]["uri"] == "/mnt/pvc/models/llm" and "model" not in config


def test_every_rank_is_the_pod_torchx_would_build() -> None:
    """build_pods copies the first rank's pod for the others: each copy equals the pod built
    for its rank through TorchX, also where a replica's macro reaches the author's command
    and variables."""
    settings = Settings.from_env({"MENTOR_REPORT_URL": "http://mentor:8080"})
    macro = "${replica_id}"  # TorchX's: substituted per replica, wherever it is
    cases = [
        spec(parallelism={"nodes": 4, "gpusPerNode": 8},
             template={"env": [{"name": "SHARD", "value": f"part-{macro}"},
                               {"name": "TOKEN", "valueFrom": {"secretKeyRef": {
                                   "name": "hub", "key": "token"}}}]}),
        spec(model=None, data=None, optimization=None,
             parallelism={"nodes": 3, "gpusPerNode": 1}, trainer={
                 "type": "custom", "command": ["train.py"], "args": ["--node", macro],
                 "env": [{"name": "WANDB_MODE", "value": "offline"}]}),
    ]
    for s in cases:
        ranks = list(range(s.parallelism.nodes))
        built = build_pods(JOB, s, ranks, 2, settings)
        assert built == [build_pod(JOB, s, rank, 2, settings) for rank in ranks]
        assert built[1] != built[2], "each rank its own pod"
    assert build_pods(JOB, cases[0], [], 2, settings) == []

    on_claim = spec(model=None, data=None, optimization=None, trainer={
        "type": "custom", "command": ["-m", "proj.train"], "code": {"path": "pvc://code/proj"}})
    pod = build_pod(JOB, on_claim, 0, 1, settings)
    assert env_of(pod)["MENTOR_CODE_DIR"] == "/mnt/pvc/code/proj"
    assert any(v.get("persistentVolumeClaim", {}).get("claimName") == "code"
               for v in pod["spec"]["volumes"])

