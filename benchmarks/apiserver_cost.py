"""What each of a job's writes costs the API server, Mentor's beside Kubeflow's training-operator.

In `operator_scale.py` the API server is the shared bottleneck, and it spends more CPU per job
beside Mentor than beside the peer although Mentor makes fewer writes. This measures the
writes one kind at a time on an idle local control plane (etcd, kube-apiserver, controller-
manager, scheduler, kwok), N of each from 8 threads, as the API server's own CPU seconds per
write:

- a pod as each operator builds it: Mentor's (`build_pods` for the scale benchmark's job) and the
  peer's (the master pod training-operator v1.9.4 made for the scale benchmark's PyTorchJob,
  read back from the API server), created with a scheduler that does not exist, so nothing else
  writes them; then a status patch of each, as kwok's;
- the job itself: a TrainingJob and a PyTorchJob created; then their status written as each
  operator writes it (Mentor: a merge patch of the status subresource; the peer: a PUT), on a
  job whose status says it is active, so that the TrainingJob's root-level CEL transition rule
  (spec fields frozen while a job is active) is evaluated; and once more with that rule removed
  from the CRD, to price it.

    .venv/bin/python benchmarks/apiserver_cost.py            # about 2 minutes
    .venv/bin/python benchmarks/apiserver_cost.py --writes 2000

It prints one JSON line per measurement and a table. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "tests" / "cluster")]
from controlplane import ControlPlane, build_binaries  # noqa: E402
from operator_scale import Identity, mentor_job, peer_job, start_peer  # noqa: E402

NO_SCHEDULER = "no-such-scheduler"  # pods no scheduler binds: nothing writes them but us
ACTIVE = {"phase": "Running", "conditions": [{
    "type": "Running", "status": "True", "reason": "AllPodsRunning",
    "message": "all 2 pod(s) are running", "lastTransitionTime": "2026-12-07T00:00:00Z"}],
    "startTime": "2026-12-07T00:00:00Z", "observedGeneration": 1,
    "ledger": {"activeSince": "2026-12-07T00:00:00Z"}}


class Meter:
    def __init__(self, cp: ControlPlane, writes: int) -> None:
        self.writes = writes
        self.apiserver = next(psutil.Process(p.pid) for name, p in cp.procs.items()
                              if name == "kube-apiserver")
        self.rows: list[tuple[str, float]] = []

    def cpu(self) -> float:
        return sum(self.apiserver.cpu_times()[:2])

    def measure(self, what: str, write: Callable[[int], Any]) -> None:
        time.sleep(2)  # what came before settles (watch caches, controllers)
        before, start = self.cpu(), time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(write, range(self.writes)))
        ms = 1000 * (self.cpu() - before) / self.writes
        print(json.dumps({"write": what, "apiserver_cpu_ms": round(ms, 2),
                          "writes": self.writes,
                          "wall_s": round(time.monotonic() - start, 1)}), flush=True)
        self.rows.append((what, ms))


def peer_pod(cp: ControlPlane, work: Path) -> dict[str, Any]:
    """The master pod training-operator makes for the scale benchmark's PyTorchJob, as a
    manifest to create again (what the server added removed)."""
    identity = Identity(cp, "bench-peer", work)
    peer = start_peer(cp, identity, work)
    try:
        cp.kubectl("create", "namespace", "sample")
        cp.kubectl("apply", "-n", "sample", "-f", "-", input=json.dumps(peer_job("sample")))
        deadline = time.monotonic() + 120
        while True:
            found = json.loads(cp.kubectl("get", "pods", "-n", "sample", "-o", "json"))["items"]
            master = [p for p in found if p["metadata"]["name"].endswith("master-0")]
            if master:
                break
            assert time.monotonic() < deadline, "the peer made no pod"
            time.sleep(0.5)
    finally:
        peer.stop()
    pod = master[0]
    meta, spec = pod["metadata"], dict(pod["spec"])
    # What admission added is added again on create: the service account's token volume (a
    # second one otherwise) and the priority (refused if given).
    token = [v["name"] for v in spec.get("volumes", []) if v["name"].startswith("kube-api-access")]
    spec["volumes"] = [v for v in spec.get("volumes", []) if v["name"] not in token]
    for container in spec["containers"]:
        container["volumeMounts"] = [m for m in container.get("volumeMounts", [])
                                     if m["name"] not in token]
    for added in ("nodeName", "priority"):
        spec.pop(added, None)
    kept = {k: meta[k] for k in ("labels", "annotations", "ownerReferences") if k in meta}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": kept, "spec": spec}


def mentor_pod() -> dict[str, Any]:
    from mentor.api.training import TrainingJobSpec
    from mentor.builders.names import JobRef
    from mentor.builders.pods import build_pods
    from mentor.controller.settings import Settings

    spec = TrainingJobSpec.model_validate(mentor_job("sample")["spec"])
    job = JobRef(kind="TrainingJob", name="sample", namespace="sample",
                 uid="00000000-0000-0000-0000-000000000000")
    return build_pods(job, spec, [0], 1, Settings())[0]


def named(template: dict[str, Any], namespace: str, name: str) -> dict[str, Any]:
    pod = copy.deepcopy(template)
    pod["metadata"].update(name=name, namespace=namespace)
    pod["metadata"].pop("ownerReferences", None)  # no owner: the garbage collector keeps out
    pod["spec"]["schedulerName"] = NO_SCHEDULER
    pod["spec"].pop("hostname", None)
    return pod


def crd_without_root_rule() -> dict[str, Any]:
    crd = yaml.safe_load((ROOT / "crds" / "trainingjobs.mentor.dev.yaml").read_text())
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].pop("x-kubernetes-validations")
    return dict(crd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--writes", type=int, default=1000, help="writes of each kind")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mentor-apicost-"))
    with ControlPlane(build_binaries(), work_dir=work / "k8s", gpu_nodes=1) as cp:
        os.environ["KUBECONFIG"] = str(cp.kubeconfig)
        from mentor.controller import kube

        cp.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        cp.wait_established("trainingjobs.mentor.dev")
        templates = {"Mentor": mentor_pod(), "training-operator": peer_pod(cp, work)}
        meter = Meter(cp, args.writes)
        for who, template in templates.items():
            ns = f"pods-{who.lower()}"
            cp.kubectl("create", "namespace", ns)
            print(json.dumps({"pod": who, "bytes": len(json.dumps(template))}), flush=True)
            meter.measure(f"create a pod ({who}'s)", lambda i, t=template, n=ns: kube.create(
                n, named(t, n, f"p{i}"), answer=False))
            meter.measure(f"patch a pod's status, as kwok ({who}'s)", lambda i, n=ns: kube.request(
                "PATCH", f"/api/v1/namespaces/{n}/pods/p{i}/status",
                {"status": {"phase": "Running"}}, "application/merge-patch+json", answer=False))

        def create_jobs(kind: str, make: Callable[[str], dict[str, Any]], ns: str) -> None:
            cp.kubectl("create", "namespace", ns)

            def create(i: int) -> None:
                job = {**make(f"j{i}"), "metadata": {"name": f"j{i}", "namespace": ns}}
                plural = f"{kind.lower()}s"
                kube.request("POST", f"/apis/{job['apiVersion']}/namespaces/{ns}/{plural}", job,
                             answer=False)

            meter.measure(f"create a {kind}", create)

        def patch_status(ns: str, gpu_hours: float) -> Callable[[int], Any]:
            return lambda i: kube.request(
                "PATCH", kube.status_path("trainingjobs", ns, f"j{i}"),
                {"status": {**ACTIVE, "gpuHours": gpu_hours}}, "application/merge-patch+json",
                answer=False)

        create_jobs("TrainingJob", mentor_job, "mentor-jobs")
        meter.measure("patch a TrainingJob's status (the first)", patch_status("mentor-jobs", 0.1))
        meter.measure("patch an active TrainingJob's status", patch_status("mentor-jobs", 0.2))
        cp.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-",
                   input=json.dumps(crd_without_root_rule()))
        time.sleep(5)  # the API server takes up the new schema
        meter.measure("the same, without the root transition rule",
                      patch_status("mentor-jobs", 0.3))

        create_jobs("PyTorchJob", peer_job, "peer-jobs")
        path = "/apis/kubeflow.org/v1/namespaces/peer-jobs/pytorchjobs"
        # The peer reads from its informer's cache, not the server: read before the meter runs.
        bodies = {i: kube.request("GET", f"{path}/j{i}") for i in range(args.writes)}

        def put_status(i: int) -> None:
            body = bodies[i]
            body["status"] = {"conditions": [{
                "type": "Running", "status": "True", "reason": "PyTorchJobRunning",
                "message": f"PyTorchJob j{i} is running.",
                "lastUpdateTime": "2026-12-07T00:00:00Z",
                "lastTransitionTime": "2026-12-07T00:00:00Z"}],
                "replicaStatuses": {"Master": {"active": 1}, "Worker": {"active": 1}},
                "startTime": "2026-12-07T00:00:00Z"}
            kube.request("PUT", f"{path}/j{i}/status", body, answer=False)

        meter.measure("put a PyTorchJob's status (the peer's way)", put_status)
    width = max(len(what) for what, _ in meter.rows)
    print(f"\n{'write':{width}}  API server CPU, ms each")
    for what, ms in meter.rows:
        print(f"{what:{width}}  {ms:6.2f}")


if __name__ == "__main__":
    main()
