"""Proof that the control plane under the tests is real: schema, scheduler, GC, RBAC."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request

import pytest
from controlplane import GPU_PRODUCT, ControlPlane

pytestmark = pytest.mark.cluster

WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.test.mentor.dev"},
    "spec": {
        "group": "test.mentor.dev",
        "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
        "scope": "Namespaced",
        "versions": [{
            "name": "v1", "served": True, "storage": True,
            "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {"spec": {
                    "type": "object",
                    "required": ["size"],
                    "properties": {"size": {"type": "integer", "minimum": 1, "maximum": 8}},
                }},
            }},
        }],
    },
}


def gpu_pod(name: str, gpus: int, **metadata: object) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, **metadata},
        "spec": {
            "containers": [{
                "name": "main", "image": "registry.invalid/trainer:test",
                "resources": {"limits": {"nvidia.com/gpu": str(gpus)}},
            }],
        },
    }


def test_crd_is_served_and_its_schema_enforced(control_plane: ControlPlane, namespace: str) -> None:
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(WIDGET_CRD))
    control_plane.wait_established("widgets.test.mentor.dev")
    good = {"apiVersion": "test.mentor.dev/v1", "kind": "Widget",
            "metadata": {"name": "ok", "namespace": namespace}, "spec": {"size": 4}}
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(good))
    served = json.loads(control_plane.kubectl("get", "widget", "ok", "-n", namespace, "-o", "json"))
    assert served["spec"]["size"] == 4

    bad = {**good, "metadata": {"name": "bad", "namespace": namespace}, "spec": {"size": 99}}
    with pytest.raises(RuntimeError, match=r"spec\.size.*less than or equal to 8"):
        control_plane.kubectl("apply", "-f", "-", input=json.dumps(bad))


def test_gpu_pod_is_scheduled_on_a_fake_gpu_node_and_runs(
    control_plane: ControlPlane, namespace: str
) -> None:
    control_plane.kubectl("apply", "-n", namespace, "-f", "-",
                          input=json.dumps(gpu_pod("two-gpus", 2)))
    control_plane.kubectl("wait", "-n", namespace, "--for=jsonpath={.status.phase}=Running",
                          "--timeout=60s", "pod/two-gpus")
    pod = json.loads(control_plane.kubectl("get", "pod", "two-gpus", "-n", namespace, "-o", "json"))
    node = json.loads(control_plane.kubectl("get", "node", pod["spec"]["nodeName"], "-o", "json"))
    assert node["metadata"]["labels"]["nvidia.com/gpu.product"] == GPU_PRODUCT
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "8"


def test_pod_asking_for_more_gpus_than_exist_stays_pending(
    control_plane: ControlPlane, namespace: str
) -> None:
    control_plane.kubectl("apply", "-n", namespace, "-f", "-",
                          input=json.dumps(gpu_pod("greedy", 100)))
    control_plane.kubectl(
        "wait", "-n", namespace, "--timeout=60s", "pod/greedy",
        "--for=jsonpath={.status.conditions[?(@.type=='PodScheduled')].reason}=Unschedulable",
    )
    events = json.loads(control_plane.kubectl(
        "get", "events", "-n", namespace, "-o", "json",
        "--field-selector", "involvedObject.name=greedy,reason=FailedScheduling",
    ))["items"]
    assert events, "the scheduler records a FailedScheduling event"
    assert "Insufficient nvidia.com/gpu" in events[0]["message"]
    phase = control_plane.kubectl("get", "pod", "greedy", "-n", namespace,
                                  "-o", "jsonpath={.status.phase}")
    assert phase == "Pending"


def test_deleting_the_owner_garbage_collects_the_pod(
    control_plane: ControlPlane, namespace: str
) -> None:
    control_plane.kubectl("create", "configmap", "owner", "-n", namespace)
    uid = control_plane.kubectl("get", "configmap", "owner", "-n", namespace,
                                "-o", "jsonpath={.metadata.uid}")
    owned = gpu_pod("owned", 1, ownerReferences=[{
        "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid, "controller": True,
    }])
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(owned))
    control_plane.kubectl("delete", "configmap", "owner", "-n", namespace)
    control_plane.kubectl("wait", "-n", namespace, "--for=delete", "--timeout=60s", "pod/owned")
    left = control_plane.kubectl("get", "pods", "-n", namespace, "-o", "name")
    assert "pod/owned" not in left


def test_service_account_without_rights_is_forbidden(
    control_plane: ControlPlane, namespace: str
) -> None:
    control_plane.kubectl("create", "serviceaccount", "nobody", "-n", namespace)
    token = control_plane.kubectl("create", "token", "nobody", "-n", namespace).strip()
    request = urllib.request.Request(
        f"{control_plane.server}/api/v1/namespaces/{namespace}/pods",
        headers={"Authorization": f"Bearer {token}"},
    )
    context = ssl.create_default_context(cafile=str(control_plane.pki.ca_crt))
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(request, context=context, timeout=10)
    assert denied.value.code == 403
    body = json.loads(denied.value.read())
    assert body["reason"] == "Forbidden"
    assert f"system:serviceaccount:{namespace}:nobody" in body["message"]
