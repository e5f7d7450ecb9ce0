"""Kueue, for real: a job's pods are one gang, admitted whole within the ClusterQueue's quota.

Kueue (built from its Go module) runs beside the session's control plane and operator; its pod
webhook acts only in namespaces labelled for it (tests/cluster/kueue.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from controlplane import ControlPlane
from harness import Kube, Operator, training_job
from kueue import MANAGED, Kueue

pytestmark = pytest.mark.cluster
GATE = "kueue.x-k8s.io/admission"


@pytest.fixture(scope="module")
def kueue(control_plane: ControlPlane, operator: Operator,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kueue]:
    k = Kueue(control_plane, tmp_path_factory.mktemp("kueue"))
    k.start()
    control_plane.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                                "items": [
        {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
         "metadata": {"name": "mentor-low"}, "value": 10},
        {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
         "metadata": {"name": "mentor-high"}, "value": 1000},
        {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor",
         "metadata": {"name": "gpu"}},
    ]}))
    yield k
    k.stop()


@pytest.fixture
def queued(control_plane: ControlPlane, kueue: Kueue, namespace: str) -> Kube:
    """A namespace Kueue manages, with a LocalQueue `team` over a ClusterQueue of 8 GPUs that
    preempts lower priorities."""
    control_plane.kubectl("label", "namespace", namespace,
                          *[f"{k}={v}" for k, v in MANAGED.items()])
    kube = Kube(control_plane, namespace)
    cq = f"cq-{namespace}"
    control_plane.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ClusterQueue",
        "metadata": {"name": cq},
        "spec": {"namespaceSelector": {"matchLabels": {
                     "kubernetes.io/metadata.name": namespace}},
                 "preemption": {"withinClusterQueue": "LowerPriority"},
                 "resourceGroups": [{
                     "coveredResources": ["cpu", "memory", "nvidia.com/gpu"],
                     "flavors": [{"name": "gpu", "resources": [
                         {"name": "cpu", "nominalQuota": 100},
                         {"name": "memory", "nominalQuota": "1000Gi"},
                         {"name": "nvidia.com/gpu", "nominalQuota": 8}]}]}]}}))
    kube.apply({"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue",
                "metadata": {"name": "team"}, "spec": {"clusterQueue": cq}})
    return kube


def queued_job(name: str, queue: str | None = "team", priority: str | None = None,
               **spec: Any) -> dict[str, Any]:
    scheduling: dict[str, Any] = {}
    if queue:
        scheduling["queueName"] = queue
    if priority:
        scheduling["priorityClassName"] = priority
    return training_job(name, parallelism={"nodes": 2, "gpusPerNode": 4},
                        scheduling=scheduling, **spec)


def until(condition: Any, timeout: float, what: Any) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what()}")
        time.sleep(0.3)


def gated(pod: dict[str, Any]) -> bool:
    return any(g["name"] == GATE for g in pod["spec"].get("schedulingGates") or [])


def status(kube: Kube, job: str) -> dict[str, Any]:
    return dict(kube.get("trainingjob", job).get("status") or {})


def test_a_gang_that_does_not_fit_waits_whole_and_holds_no_gpu(queued: Kube) -> None:
    kube = queued
    kube.apply(queued_job("first"))
    kube.wait("trainingjob/first", "condition=Running")
    first = kube.pods("first")
    assert {p["metadata"]["labels"]["kueue.x-k8s.io/pod-group-name"] for p in first} == \
        {f"first-{kube.get('trainingjob', 'first')['metadata']['uid'][:5]}-1"}
    assert all(p["metadata"]["annotations"]["kueue.x-k8s.io/pod-group-total-count"] == "2"
               for p in first)

    kube.apply(queued_job("second"))  # 8 more GPUs: over the quota while `first` runs
    until(lambda: len(kube.pods("second")) == 2, 30, lambda: kube.pods("second"))
    until(lambda: (kube.condition("second", "Running").get("reason") == "Queued"), 30,
          lambda: status(kube, "second"))
    time.sleep(3)  # and it stays so: no rank runs alone
    waiting = kube.pods("second")
    assert all(gated(p) and not p["spec"].get("nodeName") for p in waiting), \
        "no pod of a gang that does not fit is scheduled"
    assert "waits for admission by its queue (team" in \
        kube.condition("second", "Running")["message"]
    assert status(kube, "second").get("gpuHours", 0) == 0, "gated time is never charged"

    kube.end_pods("first", "succeed")
    kube.wait("trainingjob/first", "condition=Succeeded")
    kube.wait("trainingjob/second", "condition=Running", timeout=60)  # admitted whole
    assert len({p["spec"]["nodeName"] for p in kube.pods("second")}) >= 1
    assert status(kube, "second")["attempts"] == 1


def test_a_kueue_preemption_is_a_restart_not_counted_against_backoff(queued: Kube) -> None:
    kube = queued
    low = queued_job("low", priority="mentor-low",
                     runPolicy={"backoffLimit": 0})  # a counted restart would fail it
    kube.apply(low)
    kube.wait("trainingjob/low", "condition=Running")
    kube.apply(queued_job("high", priority="mentor-high"))
    # Kueue evicts `low` (TerminationTarget, then deletes its pods); Mentor restarts the gang,
    # whose new attempt waits in the queue.
    until(lambda: status(kube, "low").get("attempts") == 2, 60, lambda: status(kube, "low"))
    kube.wait("trainingjob/high", "condition=Running", timeout=60)
    low_status = status(kube, "low")
    assert low_status["restarts"] == 0 and low_status["phase"] in ("Restarting", "Pending")
    restarting = kube.condition("low", "Restarting")
    assert restarting["reason"] == "PodDisrupted", restarting
    kube.end_pods("high", "succeed")
    kube.wait("trainingjob/low", "condition=Running", timeout=60)  # readmitted, resumed
    assert status(kube, "low")["restarts"] == 0


def test_without_a_queue_name_a_managed_namespace_queues_the_gang_in_default(
        queued: Kube, control_plane: ControlPlane) -> None:
    """manageJobsWithoutQueueName: Kueue queues pods that name no queue too. Mentor's pods
    still form one group, so the gang is admitted whole through the namespace's `default`
    LocalQueue; without one, the job waits, saying so. Kueue gives a pod its default queue
    when the pod is created: pods that waited for a queue created later need a new attempt
    (suspend, resume)."""
    kube = queued
    kube.apply(queued_job("unnamed", queue=None))
    until(lambda: kube.condition("unnamed", "Running").get("reason") == "Queued", 30,
          lambda: status(kube, "unnamed"))
    assert "none named" in kube.condition("unnamed", "Running")["message"]
    assert all(gated(p) for p in kube.pods("unnamed"))
    cq = f"cq-{kube.ns}"
    kube.apply({"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue",
                "metadata": {"name": "default"}, "spec": {"clusterQueue": cq}})
    kube("patch", "trainingjob", "unnamed", "--type=merge",
         "-p", '{"spec": {"runPolicy": {"suspend": true}}}')
    kube.wait("trainingjob/unnamed", "condition=Suspended")
    kube("patch", "trainingjob", "unnamed", "--type=merge",
         "-p", '{"spec": {"runPolicy": {"suspend": false}}}')
    kube.wait("trainingjob/unnamed", "condition=Running", timeout=90)
    pods = kube.pods("unnamed")
    assert {p["metadata"]["labels"].get("kueue.x-k8s.io/queue-name") for p in pods} == \
        {"default"}, "Kueue gave the new attempt the namespace's default queue"
    assert status(kube, "unnamed")["restarts"] == 0, "a suspension is not a failure"
