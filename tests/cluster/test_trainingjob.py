"""The TrainingJob operator on the real control plane, with kwok GPU nodes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from harness import Kube, training_job

from invalid_specs import INVALID, with_changes

pytestmark = pytest.mark.cluster


def reasons(kube: Kube, job: str) -> list[str]:
    return [e["reason"] for e in kube.events(job)]


def test_pods_and_service_have_the_contracted_shape(kube: Kube) -> None:
    kube.apply(training_job("shape"))
    kube.wait("trainingjob/shape", "jsonpath={.status.phase}=Running")
    pods = kube.pods("shape")
    assert [p["metadata"]["name"] for p in pods] == ["shape-0", "shape-1"]
    job = kube.get("trainingjob", "shape")
    for rank, pod in enumerate(pods):
        meta, spec = pod["metadata"], pod["spec"]
        assert meta["labels"]["mentor.dev/node-rank"] == str(rank)
        assert meta["ownerReferences"][0]["uid"] == job["metadata"]["uid"]
        assert spec["hostname"] == f"shape-{rank}" and spec["subdomain"] == "shape"
        container = spec["containers"][0]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["PET_NNODES"] == "2" and env["PET_NODE_RANK"] == str(rank)
        assert env["PET_MASTER_ADDR"] == "shape-0.shape"
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "4"
        assert any(v.get("emptyDir", {}).get("medium") == "Memory" for v in spec["volumes"])
    service = kube.get("service", "shape")
    assert service["spec"]["clusterIP"] == "None"
    config = json.loads(pods[0]["metadata"]["annotations"]["mentor.dev/config"])
    assert config["data"]["source"] == "/data/shakespeare.txt"
    assert job["status"]["startTime"]
    created = kube.condition("shape", "Created")
    assert created["status"] == "True"


def test_success_and_kubectl_wait(kube: Kube) -> None:
    kube.apply(training_job("ok"))
    kube.wait("trainingjob/ok", "condition=Running")
    kube.end_pods("ok", "succeed")
    kube.wait("trainingjob/ok", "condition=Succeeded")
    job = kube.get("trainingjob", "ok")
    assert job["status"]["phase"] == "Succeeded"
    assert job["status"]["completionTime"]
    assert {"JobCreated", "AllPodsRunning", "JobCompleted"} <= set(reasons(kube, "ok"))


def test_permanent_failure_names_its_exit_code(kube: Kube) -> None:
    kube.apply(training_job("bad"))
    kube.wait("trainingjob/bad", "condition=Running")
    kube.end_pods("bad", "fail", exit_code=2, count=1)
    kube.wait("trainingjob/bad", "condition=Failed")
    failed = kube.condition("bad", "Failed")
    assert failed["reason"] == "ExitCode"
    assert "exited with code 2 (invalid trainer config)" in failed["message"]
    kube.wait("pod/bad-1", "delete")  # the surviving rank does not hold its GPUs
    assert kube.get("trainingjob", "bad")["status"]["restarts"] == 0


def test_oom_killed_is_named(kube: Kube) -> None:
    kube.apply(training_job("oom"))
    kube.wait("trainingjob/oom", "condition=Running")
    kube.end_pods("oom", "fail", exit_code=137, reason="OOMKilled", count=1)
    kube.wait("trainingjob/oom", "condition=Failed")
    assert kube.condition("oom", "Failed")["reason"] == "OOMKilled"


def test_retry_then_success_is_a_gang_restart(kube: Kube) -> None:
    kube.apply(training_job("retry"))
    kube.wait("trainingjob/retry", "condition=Running")
    first = {p["metadata"]["uid"] for p in kube.pods("retry")}
    kube.end_pods("retry", "fail", exit_code=137, count=1)
    kube.wait("trainingjob/retry", "jsonpath={.status.restarts}=1")
    kube.wait("trainingjob/retry", "condition=Running")
    pods = kube.pods("retry")
    assert len(pods) == 2 and not first & {p["metadata"]["uid"] for p in pods}, \
        "every pod of the attempt was replaced"
    assert all(p["metadata"]["annotations"]["mentor.dev/attempt"] == "2" for p in pods)
    kube.end_pods("retry", "succeed")
    kube.wait("trainingjob/retry", "condition=Succeeded")
    assert "ExitCode" in reasons(kube, "retry")


def test_backoff_limit_exhausted(kube: Kube) -> None:
    kube.apply(training_job("flaky", runPolicy={"backoffLimit": 1}))
    for restarts in (1, 2):
        kube.wait("trainingjob/flaky", "condition=Running")
        kube.end_pods("flaky", "fail", exit_code=139, count=1)
        if restarts == 1:
            kube.wait("trainingjob/flaky", "jsonpath={.status.restarts}=1")
    kube.wait("trainingjob/flaky", "condition=Failed")
    failed = kube.condition("flaky", "Failed")
    assert failed["reason"] == "BackoffLimitExceeded"
    assert "code 139" in failed["message"]


def test_suspend_and_resume(kube: Kube) -> None:
    kube.apply(training_job("pause"))
    kube.wait("trainingjob/pause", "condition=Running")
    kube("patch", "trainingjob", "pause", "--type=merge", "-p",
         '{"spec":{"runPolicy":{"suspend":true}}}')
    kube.wait("trainingjob/pause", "condition=Suspended")
    kube.wait("pod/pause-0", "delete")
    assert kube.get("trainingjob", "pause")["status"]["phase"] == "Suspended"
    kube("patch", "trainingjob", "pause", "--type=merge", "-p",
         '{"spec":{"runPolicy":{"suspend":false}}}')
    kube.wait("trainingjob/pause", "condition=Running")
    assert kube.condition("pause", "Suspended")["status"] == "False"
    assert kube.get("trainingjob", "pause")["status"]["restarts"] == 0


def test_deadline_fails_and_removes_pods(kube: Kube) -> None:
    kube.apply(training_job("late", runPolicy={"activeDeadlineSeconds": 2}))
    kube.wait("trainingjob/late", "condition=Failed")
    assert kube.condition("late", "Failed")["reason"] == "DeadlineExceeded"
    kube.wait("pod/late-0", "delete")


def test_budget_exhausted_stops_the_job(kube: Kube) -> None:
    kube.apply(training_job("thrifty", runPolicy={"maxGPUHours": 0.002}))  # 8 GPUs: ~1 s
    kube.wait("trainingjob/thrifty", "condition=Failed")
    failed = kube.condition("thrifty", "Failed")
    assert failed["reason"] == "BudgetExhausted"
    assert "maxGPUHours=0.002" in failed["message"]
    kube.wait("pod/thrifty-0", "delete")
    assert kube.get("trainingjob", "thrifty")["status"]["gpuHours"] >= 0.002


def test_ttl_deletes_the_finished_job(kube: Kube) -> None:
    kube.apply(training_job("brief", runPolicy={"ttlSecondsAfterFinished": 1}))
    kube.wait("trainingjob/brief", "condition=Running")
    kube.end_pods("brief", "succeed")
    kube.wait("trainingjob/brief", "delete")


def test_deleting_the_job_collects_its_children_and_leaves_the_namespaces(kube: Kube) -> None:
    """A job's children are its pods and its Service; the report token's Secret and the
    trainers' NetworkPolicy are made once in the namespace and serve the next job too."""
    kube.apply(training_job("gone"))
    kube.wait("trainingjob/gone", "condition=Running")
    # Trainer pods are reached by each other only (no CNI enforces it here; the API server
    # takes it)
    policy = kube.get("networkpolicy", "mentor-trainers")
    assert policy["spec"]["podSelector"]["matchExpressions"][0]["key"] == "mentor.dev/job-name"
    assert "ownerReferences" not in policy["metadata"]
    assert kube("get", "secret", "mentor-report", "-o", "name").strip() == "secret/mentor-report"
    kube("delete", "trainingjob", "gone")
    kube.wait("pod/gone-0", "delete")
    kube.wait("service/gone", "delete")
    assert kube("get", "configmaps", "-l", "mentor.dev/job-name", "-o", "name").strip() == ""
    kube.apply(training_job("next"))
    kube.wait("trainingjob/next", "condition=Running")
    assert kube.get("networkpolicy", "mentor-trainers")["metadata"]["uid"] == \
        policy["metadata"]["uid"], "one a namespace, kept"


def test_too_few_gpus_stays_pending_and_says_why(kube: Kube) -> None:
    kube.apply(training_job("huge", parallelism={"nodes": 1, "gpusPerNode": 16}))
    kube.wait("trainingjob/huge", "jsonpath={.status.conditions[?(@.type=='Running')].reason}"
              "=Unschedulable")
    running = kube.condition("huge", "Running")
    assert "Insufficient nvidia.com/gpu" in running["message"]
    assert kube.get("trainingjob", "huge")["status"]["phase"] == "Pending"
    assert "Unschedulable" in reasons(kube, "huge")


def test_a_child_of_another_owner_is_never_adopted(kube: Kube) -> None:
    kube("create", "service", "clusterip", "squat", "--tcp=80:80")
    kube.apply(training_job("squat"))
    kube.wait("trainingjob/squat", "jsonpath={.status.phase}=Pending")
    service = kube.get("service", "squat")
    assert "ownerReferences" not in service["metadata"]
    assert service["spec"]["clusterIP"] != "None", "left as its owner made it"
    assert kube.pods("squat") == []
    created = kube.condition("squat", "Created")
    assert created["status"] == "False" and created["reason"] == "ChildNameTaken"
    assert "service/squat" in created["message"]


def test_immutable_fields_are_rejected_while_running_and_mutable_ones_apply(kube: Kube) -> None:
    kube.apply(training_job("fixed"))
    kube.wait("trainingjob/fixed", "condition=Running")
    out = kube("patch", "trainingjob", "fixed", "--type=merge", "-p",
               '{"spec":{"parallelism":{"nodes":3}}}', check=False)
    job = kube.get("trainingjob", "fixed")
    assert job["spec"]["parallelism"]["nodes"] == 2, out
    with pytest.raises(RuntimeError, match="cannot change while the job is active"):
        kube("patch", "trainingjob", "fixed", "--type=merge", "-p",
             '{"spec":{"parallelism":{"nodes":3}}}')
    kube("patch", "trainingjob", "fixed", "--type=merge", "-p",
         '{"spec":{"runPolicy":{"activeDeadlineSeconds":1}}}')
    kube.wait("trainingjob/fixed", "condition=Failed")
    assert kube.condition("fixed", "Failed")["reason"] == "DeadlineExceeded"


def test_kubectl_get_by_short_name_shows_the_columns(kube: Kube) -> None:
    kube.apply(training_job("cols"))
    kube.wait("trainingjob/cols", "condition=Running")
    table = kube("get", "mtj", "cols")
    header, row = table.splitlines()[:2]
    assert header.split() == ["NAME", "PHASE", "NODES", "REASON", "RESTARTS", "PROGRESS", "LOSS",
                              "GPU-HOURS", "AGE"]
    assert row.split()[:5] == ["cols", "Running", "2", "AllPodsRunning", "0"]
    assert "cols" in kube("get", "mentor")  # the category
    assert kube("get", "mtj", "cols", "-o", "wide").splitlines()[0].split()[-1] == "ETA"
    kube.end_pods("cols", "fail", exit_code=2)
    kube.wait("trainingjob/cols", "condition=Failed")
    failed = kube("get", "mtj", "cols").splitlines()[1].split()
    assert failed[1:4] == ["Failed", "2", "ExitCode"], "the table says why it failed"


def test_kubectl_explain_shows_field_descriptions(kube: Kube) -> None:
    out = kube("explain", "trainingjob.spec.optimization.globalBatchSize")
    assert "sequences per optimizer step over all" in out
    assert "ranks" in out


@pytest.mark.parametrize(("name", "changes", "path", "words"), INVALID,
                         ids=[case[0] for case in INVALID])
def test_invalid_specs_are_rejected_by_the_api_server_with_the_field_path(
    kube: Kube, name: str, changes: dict[str, Any], path: str, words: str
) -> None:
    obj = with_changes(changes)
    obj["metadata"] = {"name": name}
    with pytest.raises(RuntimeError) as rejected:
        kube.apply(obj)
    message = str(rejected.value)
    assert f"{path}:" in message, message
    assert words in message, message
    assert kube("get", "trainingjob", name, check=False) == ""


def test_a_bad_name_is_rejected_by_the_api_server(kube: Kube) -> None:
    obj = with_changes({})
    obj["metadata"] = {"name": "x" * 53}
    with pytest.raises(RuntimeError, match=r"metadata\.name: Too long"):
        kube.apply(obj)


def test_every_example_is_accepted_by_the_api_server(kube: Kube) -> None:
    from pathlib import Path

    examples = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))
    for path in examples:
        kube("apply", "-f", str(path))
    names = kube("get", "trainingjobs", "-o", "jsonpath={.items[*].metadata.name}").split()
    assert sorted(names) == ["custom-mlp", "finetune", "llama-fsdp", "quickstart"]


def test_a_pod_the_api_server_refuses_fails_the_job_with_its_words(kube: Kube) -> None:
    """Specs that pass the CRD but make every pod invalid (422) or forbidden by Pod Security
    (403) end Failed at once, with the API server's message: they never loop silently."""
    kube.apply(training_job("hostpath", template={
        "volumes": [{"name": "host", "hostPath": {"path": "/tmp"}}],
        "volumeMounts": [{"name": "host", "mountPath": "/host"}]}))
    kube.apply(training_job("negative", template={"resources": {"requests": {"cpu": "-1"}}}))
    for name, words in (("hostpath", "violates PodSecurity"), ("negative", "cpu")):
        kube.wait(f"trainingjob/{name}", "condition=Failed")
        failed = kube.condition(name, "Failed")
        assert failed["reason"] == "CreateRefused"
        assert words in failed["message"], failed["message"]
        assert not kube.pods(name)
        assert any(e["reason"] == "CreateRefused" for e in kube.events(name))


def test_a_pod_refused_for_now_waits_then_runs(kube: Kube) -> None:
    kube.apply({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-pods"},
                "spec": {"hard": {"pods": "0"}}})
    kube.apply(training_job("quota"))
    kube.wait("trainingjob/quota", "jsonpath={.status.conditions[?(@.type=='Running')]"
              ".reason}=CreateDelayed")
    running = kube.condition("quota", "Running")
    assert "exceeded quota" in running["message"]
    assert kube.get("trainingjob", "quota")["status"]["phase"] == "Pending"
    kube("delete", "resourcequota", "no-pods")
    kube.wait("trainingjob/quota", "condition=Running", timeout=90)
    assert len(kube.pods("quota")) == 2


def squatter(name: str, job: str) -> dict[str, Any]:
    """A pod that carries a job's labels but no owner: someone's own, or a copy-paste."""
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {
        "mentor.dev/job-name": job, "mentor.dev/job-kind": "TrainingJob"}},
        "spec": {"containers": [{"name": "c", "image": "busybox", "securityContext": {
            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True, "runAsUser": 1000,
            "seccompProfile": {"type": "RuntimeDefault"}}}]}}


def test_a_pod_with_the_jobs_labels_and_no_owner_neither_stalls_nor_joins_it(kube: Kube) -> None:
    """It once stalled the job for ever, polled every second with no phase and nothing said."""
    kube.apply(squatter("lookalike", "labelled"))
    kube.apply(training_job("labelled"))
    kube.wait("trainingjob/labelled", "condition=Running")
    assert [p["metadata"]["name"] for p in kube.pods("labelled")] == \
        ["labelled-0", "labelled-1", "lookalike"]
    assert "ownerReferences" not in kube.get("pod", "lookalike")["metadata"]
    # Holding a child's very name, it is the ChildNameTaken of any other object.
    kube.apply(squatter("named-0", "named"))
    kube.apply(training_job("named"))
    kube.wait("trainingjob/named", "jsonpath={.status.conditions[?(@.type=='Created')].reason}"
              "=ChildNameTaken")
    assert "pod/named-0" in kube.condition("named", "Created")["message"]
