"""Apply → pods: how fast Mentor turns TrainingJobs into pods, beside Kubeflow's training-operator.

On the local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok with 8-GPU
nodes, all on this machine's cores), it measures, for Mentor and then for the peer:

- one job at a time (--single repeats): create → both pods exist, p50 and p99;
- bursts (--bursts): N jobs of 2 pods × 1 GPU applied at once with `kubectl apply --server-side`
  → every pod exists; and the p50/p99 of each job's own latency within the burst;
- the operator's peak RSS and CPU seconds, the API server's and etcd's CPU seconds, and the
  requests the API server served per second during the burst;
- the API requests each operator made per job, counted by the API server itself: each operator
  runs as its own ServiceAccount, matched by its own FlowSchema, and
  apiserver_flowcontrol_dispatched_requests_total is read per FlowSchema;
- with --probe, a single job created every few seconds in a namespace of its own while the
  burst goes on: the p50/p99 of its create → pods (is a new job starved by the backlog?);
- with --steady, the state after the last burst, every job running: for --steady seconds, rank 0
  of each of Mentor's jobs reports progress every --report-every seconds (as its trainer would),
  and the operator's CPU a second, its RSS, and the status writes a second are read; the peer,
  which takes no reports, is measured over the same window at rest.

The peer is Kubeflow's training-operator v1 (benchmarks/peers/build.sh builds it from Go
modules), with PyTorchJobs of Master 1 + Worker 1, one GPU each, at the same worker count and with
no client-side rate limit (how Mentor runs): --controller-threads=8 --kube-api-qps=1000
--kube-api-burst=2000. Nothing here asserts a time: it prints figures.

    .venv/bin/python benchmarks/operator_scale.py --single 20 --bursts 100 1000
    .venv/bin/python benchmarks/operator_scale.py --single 0 --bursts 5000 --probe --steady 60 \
        --nodes 1300
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "cluster")]
from controlplane import ControlPlane, build_binaries, free_port  # noqa: E402

WORKERS = 8
DEADLINE = 20  # seconds of a job in the Mentor burst that must fail by its deadline
PROBE_EVERY = 5.0  # seconds between two probe jobs during a burst
REPORT_KEY = "operator-scale-benchmark-key"  # Mentor's report key here: the tokens follow from it


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Identity:
    """A ServiceAccount with cluster-admin, its kubeconfig, and a FlowSchema counting its calls."""

    def __init__(self, cp: ControlPlane, name: str, work: Path) -> None:
        self.name = name
        cp.kubectl("create", "serviceaccount", name, "-n", "default")
        cp.kubectl("create", "clusterrolebinding", name, "--clusterrole=cluster-admin",
                   f"--serviceaccount=default:{name}")
        token = cp.kubectl("create", "token", name, "-n", "default", "--duration=24h").strip()
        config = json.loads(cp.kubeconfig.read_text())
        config["users"] = [{"name": name, "user": {"token": token}}]
        config["contexts"][0]["context"]["user"] = name
        self.kubeconfig = work / f"{name}.kubeconfig"
        self.kubeconfig.write_text(json.dumps(config))
        cp.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "FlowSchema",
            "metadata": {"name": name},
            "spec": {"priorityLevelConfiguration": {"name": "workload-high"},
                     "matchingPrecedence": 500,
                     "rules": [{"subjects": [{"kind": "ServiceAccount", "serviceAccount": {
                         "name": name, "namespace": "default"}}],
                         "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"],
                                            "resources": ["*"], "namespaces": ["*"],
                                            "clusterScope": True}],
                         "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}]}]}}))


class ApiServer:
    """The API server's own counters, read from its /metrics with the admin certificate."""

    def __init__(self, cp: ControlPlane) -> None:
        import ssl

        self.cp = cp
        crt, key = cp.pki.pair("admin")
        self.context = ssl.create_default_context(cafile=str(cp.pki.ca_crt))
        self.context.load_cert_chain(str(crt), str(key))

    def counters(self) -> dict[str, float]:
        with urllib.request.urlopen(f"{self.cp.server}/metrics", context=self.context,
                                    timeout=30) as r:
            text = r.read().decode()
        out: dict[str, float] = {"total": 0.0}
        for line in text.splitlines():
            if line.startswith("apiserver_request_total{"):
                value = float(line.rsplit(" ", 1)[1])
                out["total"] += value
                labels = dict(part.split("=", 1) for part in
                              line.split("{", 1)[1].rsplit("}", 1)[0].split('",'))
                verb = labels.get("verb", "").strip('"')
                resource = labels.get("resource", "").strip('"')
                sub = labels.get("subresource", "").strip('"')
                if verb not in ("GET", "LIST", "WATCH"):  # the writes, by everyone
                    key = f"write:{verb} {resource}{'/' + sub if sub else ''}"
                    out[key] = out.get(key, 0.0) + value
            elif line.startswith("apiserver_flowcontrol_dispatched_requests_total{"):
                schema = line.split('flow_schema="', 1)[1].split('"', 1)[0]
                out[f"schema:{schema}"] = out.get(f"schema:{schema}", 0.0) + \
                    float(line.rsplit(" ", 1)[1])
        return out


class PodClock:
    """When each pod of a namespace was first seen, from a watch (kubectl get -w), watched
    again whenever the server ends it (its watches last 30 to 60 minutes): a pod first seen
    after such a gap is timed when the new watch lists it, a little late, never early."""

    def __init__(self, cp: ControlPlane, namespace: str) -> None:
        self.cp, self.namespace = cp, namespace
        self.seen: dict[str, float] = {}
        self.proc: subprocess.Popen[str] | None = None
        self._stop = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while not self._stop.is_set():
            self.proc = subprocess.Popen(
                [str(self.cp.bin_dir / "kubectl"), "get", "pods", "-n", self.namespace, "-w",
                 "--output-watch-events", "-o", "jsonpath={.object.metadata.name}{\"\\n\"}"],
                env=self.cp.env(), stdout=subprocess.PIPE, text=True)
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                name = line.strip()
                if name and name not in self.seen:
                    self.seen[name] = time.monotonic()
            self.proc.wait()

    def stop(self) -> None:
        self._stop.set()
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait()


class Watched:
    """An operator process, sampled for RSS and CPU."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc, self.ps = proc, psutil.Process(proc.pid)
        self.port = 0  # Mentor's progress endpoint
        self.peak = 0
        self.cpu0 = self.cpu()
        self._stop = threading.Event()
        threading.Thread(target=self._sample, daemon=True).start()

    def cpu(self) -> float:
        times = self.ps.cpu_times()
        return times.user + times.system + sum(
            c.cpu_times().user + c.cpu_times().system for c in self.ps.children(recursive=True))

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            try:
                self.peak = max(self.peak, self.ps.memory_info().rss)
            except psutil.Error:
                return

    def reset(self) -> None:
        self.peak, self.cpu0 = self.ps.memory_info().rss, self.cpu()

    def stop(self) -> None:
        self._stop.set()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def mentor_job(name: str) -> dict[str, Any]:
    return {"apiVersion": "mentor.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": name},
            "spec": {"model": {"size": "tiny"}, "data": {"source": "/data/text"},
                     "optimization": {"steps": 100}, "output": {"uri": f"/models/{name}"},
                     "parallelism": {"nodes": 2, "gpusPerNode": 1}}}


def peer_job(name: str) -> dict[str, Any]:
    container = {"name": "pytorch", "image": "docker.io/kubeflowkatib/pytorch-mnist:v1beta1",
                 "resources": {"limits": {"nvidia.com/gpu": 1}}}
    replica = {"replicas": 1, "restartPolicy": "OnFailure",
               "template": {"spec": {"containers": [container]}}}
    return {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": {"name": name},
            "spec": {"pytorchReplicaSpecs": {"Master": replica, "Worker": replica}}}


class Race:
    def __init__(self, cp: ControlPlane, work: Path) -> None:
        self.cp, self.work, self.api = cp, work, ApiServer(cp)
        self.system = {n: psutil.Process(p.pid) for n, p in cp.procs.items()
                       if n in ("kube-apiserver", "etcd")}

    def namespace(self, name: str) -> str:
        self.cp.kubectl("create", "namespace", name)
        return name

    def burst(self, label: str, operator: Watched, identity: Identity, make: Any,
              count: int, pods_of: Any, probe: bool = False) -> dict[str, Any]:
        ns = self.namespace(f"{label}-{count}-{int(time.time())}")
        self.last_namespace = ns
        clock = PodClock(self.cp, ns)
        done_event = threading.Event()
        probes: list[float] = []
        if probe:
            prober = threading.Thread(target=self.probe, args=(make, pods_of, done_event,
                                                               probes), daemon=True)
        time.sleep(1)
        operator.reset()
        system_cpu0 = {n: p.cpu_times().user + p.cpu_times().system
                       for n, p in self.system.items()}
        before = self.api.counters()
        jobs = [make(f"j{i}") for i in range(count)]
        if label == "mentor":  # how late a deadline fires under the load
            late = make("deadline")
            late["spec"]["runPolicy"] = {"activeDeadlineSeconds": DEADLINE}
            jobs.insert(0, late)
        path = self.work / f"{ns}.json"
        path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": jobs}))
        start = time.monotonic()
        if probe:
            prober.start()
        self.cp.kubectl("apply", "--server-side", "-n", ns, "-f", str(path), timeout=3600)
        applied = time.monotonic() - start
        want = {p for i in range(count) for p in pods_of(f"j{i}")}
        deadline = start + 2400
        while not want <= set(clock.seen):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{label}: {len(want & set(clock.seen))}/{len(want)} pods")
            time.sleep(0.05)
        done = max(clock.seen[p] for p in want) - start
        after = self.api.counters()
        done_event.set()
        if probe:
            prober.join()
        clock.stop()
        lateness = self.deadline_lateness(ns) if label == "mentor" else None
        per_job = [max(clock.seen[p] for p in pods_of(f"j{i}")) - start for i in range(count)]
        system = {n: p.cpu_times().user + p.cpu_times().system - system_cpu0[n]
                  for n, p in self.system.items()}
        requests = after.get(f"schema:{identity.name}", 0) - before.get(
            f"schema:{identity.name}", 0)
        objects = self.objects_per_job(ns, count)
        writes = {k.removeprefix("write:"): round((v - before.get(k, 0.0)) / count, 2)
                  for k, v in after.items() if k.startswith("write:")
                  and (v - before.get(k, 0.0)) / count >= 0.05}
        return {"operator": label, "jobs": count, "all_pods_s": round(done, 2),
                "apply_s": round(applied, 2),
                "job_p50_s": round(percentile(per_job, 0.5), 2),
                "job_p99_s": round(percentile(per_job, 0.99), 2),
                "peak_rss_mb": round(operator.peak / 2**20),
                "cpu_s": round(operator.cpu() - operator.cpu0, 1),
                "requests_per_job": round(requests / count, 1),
                "apiserver_cpu_s": round(system.get("kube-apiserver", 0), 1),
                "etcd_cpu_s": round(system.get("etcd", 0), 1),
                "apiserver_requests_per_s": round((after["total"] - before["total"]) / done),
                "apiserver_cpu_ms_per_job": round(1000 * system.get("kube-apiserver", 0) / count,
                                                  1),
                "operator_cpu_ms_per_job": round(1000 * (operator.cpu() - operator.cpu0) / count,
                                                 1),
                "objects_per_job": objects,
                # every client's writes (the operator's, the scheduler's, kwok's, the
                # controllers'), per job: what each operator's design costs the API server
                "writes_per_job": dict(sorted(writes.items(), key=lambda kv: -kv[1])),
                "deadline_late_s": lateness,
                **({"probes": len(probes), "probe_p50_s": round(percentile(probes, 0.5), 2),
                    "probe_p99_s": round(percentile(probes, 0.99), 2)} if probes else {})}

    def probe(self, make: Any, pods_of: Any, done: threading.Event,
              latencies: list[float]) -> None:
        """One job at a time, every PROBE_EVERY seconds until the burst's pods are all there,
        in a namespace of its own: create → both its pods seen."""
        ns = self.namespace(f"probe-{int(time.time())}")
        clock = PodClock(self.cp, ns)
        for i in range(10**6):
            if done.wait(PROBE_EVERY):
                break
            latencies.append(self.one(ns, clock, make(f"p{i}"), pods_of(f"p{i}")))
        clock.stop()

    def one(self, ns: str, clock: PodClock, job: dict[str, Any], pods: list[str]) -> float:
        """Create one job; seconds until all its pods are seen."""
        path = self.work / f"{ns}-{job['metadata']['name']}.json"
        path.write_text(json.dumps(job))
        start = time.monotonic()
        self.cp.kubectl("create", "-n", ns, "-f", str(path))
        while not set(pods) <= set(clock.seen):
            time.sleep(0.01)
        return max(clock.seen[p] for p in pods) - start

    def steady(self, label: str, operator: Watched, seconds: float, report: Any = None
               ) -> dict[str, Any]:
        """The operator after its last burst, every job running, for `seconds`: what it costs
        at rest, or (`report`, a coroutine function of a deadline) while its jobs report."""
        before = self.api.counters()
        system_cpu0 = {n: p.cpu_times().user + p.cpu_times().system
                       for n, p in self.system.items()}
        operator.reset()
        start = time.monotonic()
        sent = asyncio.run(report(start + seconds)) if report else {}
        time.sleep(max(0.0, start + seconds - time.monotonic()))
        elapsed = time.monotonic() - start
        after = self.api.counters()
        system = {n: p.cpu_times().user + p.cpu_times().system - system_cpu0[n]
                  for n, p in self.system.items()}
        status = sum(v - before.get(k, 0.0) for k, v in after.items()
                     if k.startswith("write:") and k.endswith("jobs/status"))
        return {"operator": label, "steady_s": round(elapsed),
                **{k: round(v / elapsed, 1) for k, v in sent.items()},
                "operator_cpu_per_s": round((operator.cpu() - operator.cpu0) / elapsed, 3),
                "peak_rss_mb": round(operator.peak / 2**20),
                "status_writes_per_s": round(status / elapsed, 1),
                "apiserver_cpu_per_s": round(system.get("kube-apiserver", 0) / elapsed, 3),
                "apiserver_requests_per_s": round((after["total"] - before["total"]) / elapsed)}

    def objects_per_job(self, ns: str, count: int) -> dict[str, float]:
        """What the operator left in the namespace, per job, by kind (the jobs themselves and
        the pods are the same for both; the rest is each operator's own)."""
        out = {}
        for kind in ("pods", "services", "configmaps", "secrets", "networkpolicies", "events",
                     "endpointslices"):
            names = self.cp.kubectl("get", kind, "-n", ns, "-o", "name").split()
            # every namespace has the kube-root-ca.crt ConfigMap: not the operator's
            mine = [n for n in names if n != "configmap/kube-root-ca.crt"]
            if mine:
                out[kind] = round(len(mine) / count, 2)
        return out

    def deadline_lateness(self, ns: str) -> float:
        """Seconds between when the deadline fell due and when the job was failed for it."""
        from datetime import datetime

        deadline = time.monotonic() + 300
        while True:
            status = json.loads(self.cp.kubectl("get", "trainingjob", "deadline", "-n", ns, "-o",
                                                "json")).get("status", {})
            if status.get("completionTime"):
                break
            assert time.monotonic() < deadline, status
            time.sleep(0.5)

        def at(stamp: str) -> float:
            return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()

        return at(status["completionTime"]) - at(status["startTime"]) - DEADLINE

    def single(self, operator: Watched, make: Any, repeats: int, pods_of: Any) -> dict[str, Any]:
        ns = self.namespace(f"single-{int(time.time())}")
        clock = PodClock(self.cp, ns)
        time.sleep(1)
        latencies = [self.one(ns, clock, make(f"s{i}"), pods_of(f"s{i}"))
                     for i in range(repeats)]
        clock.stop()
        return {"repeats": repeats, "p50_s": round(percentile(latencies, 0.5), 3),
                "p99_s": round(percentile(latencies, 0.99), 3)}


def reporter(port: int, namespace: str, names: list[str], every: float) -> Any:
    """Rank 0 of each job, reporting every `every` seconds (spread evenly), as the trainer does:
    a coroutine function of the deadline that returns the reports sent and refused."""
    import hashlib
    import hmac

    import aiohttp

    token = hmac.new(REPORT_KEY.encode(), namespace.encode(), hashlib.sha256).hexdigest()
    headers = {"Authorization": f"Bearer {token}"}

    async def run(deadline: float) -> dict[str, float]:
        counts = {"reports": 0.0, "refused_reports": 0.0}
        connector = aiohttp.TCPConnector(limit=64)
        async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
            async def one(i: int, name: str) -> None:
                await asyncio.sleep(min(every * i / len(names),
                                        max(0.0, deadline - time.monotonic())))
                step = 0
                while time.monotonic() < deadline:
                    step += 10
                    body = {"step": step, "total_steps": 100_000, "loss": 3.0 - step / 1e5}
                    try:
                        async with session.post(
                                f"http://127.0.0.1:{port}/v1/progress/{namespace}/{name}",
                                json=body) as r:
                            counts["reports" if r.status == 202 else "refused_reports"] += 1
                    except aiohttp.ClientError:
                        counts["refused_reports"] += 1
                    await asyncio.sleep(min(every, max(0.0, deadline - time.monotonic())))

            await asyncio.gather(*(one(i, n) for i, n in enumerate(names)))
        return counts

    return run


def start_mentor(cp: ControlPlane, identity: Identity, work: Path) -> Watched:
    cp.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    cp.kubectl("wait", "--for=condition=Established", "crd/trainingjobs.mentor.dev")
    port, health = free_port(), free_port()
    env = {**cp.env(), "KUBECONFIG": str(identity.kubeconfig), "MENTOR_HTTP_HOST": "127.0.0.1",
           "MENTOR_HTTP_PORT": str(port), "MENTOR_WORKERS": str(WORKERS),
           "MENTOR_REPORT_KEY": REPORT_KEY,
           "MENTOR_LEADER_ELECTION": "false"}  # as the peer runs (--leader-elect=false)
    log = (work / "mentor.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "mentor.cli", "operator", "--standalone",
                             f"--liveness=http://127.0.0.1:{health}/healthz"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    wait_http(f"http://127.0.0.1:{health}/healthz", proc)
    watched = Watched(proc)
    watched.port = port
    return watched


def start_peer(cp: ControlPlane, identity: Identity, work: Path) -> Watched:
    peer = Path(subprocess.run([str(ROOT / "benchmarks" / "peers" / "build.sh")], check=True,
                               capture_output=True, text=True).stdout.strip().splitlines()[-1])
    cp.kubectl("apply", "--server-side", "-f", str(peer / "crds"))
    deadline = time.monotonic() + 60
    while "Established" not in cp.kubectl("get", "crd", "pytorchjobs.kubeflow.org", "-o",
                                          "jsonpath={.status.conditions[*].type}", check=False):
        assert time.monotonic() < deadline, "the PyTorchJob CRD is not established"
        time.sleep(0.5)
    cp.kubectl("create", "namespace", "kubeflow")
    cp.kubectl("create", "secret", "generic", "training-operator-webhook-cert", "-n", "kubeflow")
    certs = Path(tempfile.gettempdir()) / "k8s-webhook-server" / "serving-certs"
    metrics, health, webhook = free_port(), free_port(), free_port()
    log = (work / "peer.log").open("wb")
    proc = subprocess.Popen(
        [str(peer / "bin" / "training-operator.v1"), f"--kubeconfig={identity.kubeconfig}",
         "--enable-scheme=pytorchjob", "--leader-elect=false",
         f"--metrics-bind-address=127.0.0.1:{metrics}",
         f"--health-probe-bind-address=127.0.0.1:{health}", f"--webhook-server-port={webhook}",
         f"--controller-threads={WORKERS}", "--kube-api-qps=1000", "--kube-api-burst=2000"],
        env={**cp.env(), "MY_POD_NAMESPACE": "kubeflow"}, stdout=log, stderr=subprocess.STDOUT)
    # Its certificate rotator fills the Secret; its webhook server reads the files.
    deadline = time.monotonic() + 120
    while True:
        data = json.loads(cp.kubectl("get", "secret", "training-operator-webhook-cert", "-n",
                                     "kubeflow", "-o", "json")).get("data") or {}
        if data.get("tls.crt"):
            break
        assert proc.poll() is None and time.monotonic() < deadline, \
            (work / "peer.log").read_text()[-2000:]
        time.sleep(0.5)
    import base64

    certs.mkdir(parents=True, exist_ok=True)
    for name in ("tls.crt", "tls.key"):
        (certs / name).write_bytes(base64.b64decode(data[name]))
    wait_http(f"http://127.0.0.1:{health}/readyz", proc)
    return Watched(proc)


def wait_running(cp: ControlPlane, namespace: str, count: int, timeout: float = 600) -> None:
    """Until `count` TrainingJobs of the namespace have a phase, and none is Pending: the
    steady state begins."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        phases = cp.kubectl("get", "trainingjobs", "-n", namespace, "-o",
                            "jsonpath={.items[*].status.phase}").split()
        if len(phases) >= count and "Pending" not in phases:
            return
        time.sleep(2)
    raise TimeoutError(f"{namespace}: the jobs are not all running")


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"exited with {proc.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(url)


def apply_only(cp: ControlPlane, work: Path, bursts: list[int]) -> None:
    cp.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    peer = Path(subprocess.run([str(ROOT / "benchmarks" / "peers" / "build.sh")], check=True,
                               capture_output=True, text=True).stdout.strip().splitlines()[-1])
    cp.kubectl("apply", "--server-side", "-f", str(peer / "crds"))
    time.sleep(3)
    apiserver = next(psutil.Process(p.pid) for n, p in cp.procs.items() if n == "kube-apiserver")
    for count in bursts:
        for kind, make in (("TrainingJob", mentor_job), ("PyTorchJob", peer_job)):
            ns = f"apply-{kind.lower()}-{count}"
            cp.kubectl("create", "namespace", ns)
            path = work / f"{ns}.json"
            path.write_text(json.dumps({"apiVersion": "v1", "kind": "List",
                                        "items": [make(f"j{i}") for i in range(count)]}))
            cpu0 = sum(apiserver.cpu_times()[:2])
            start = time.monotonic()
            cp.kubectl("apply", "--server-side", "-n", ns, "-f", str(path), timeout=3600)
            print(json.dumps({"kind": kind, "jobs": count, "no_operator_apply_s":
                              round(time.monotonic() - start, 2), "apiserver_cpu_s":
                              round(sum(apiserver.cpu_times()[:2]) - cpu0, 1)}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--single", type=int, default=20, help="repeats of one job alone")
    parser.add_argument("--bursts", type=int, nargs="*", default=[100, 1000])
    parser.add_argument("--no-peer", action="store_true", help="Mentor only")
    parser.add_argument("--probe", action="store_true",
                        help="a single job every few seconds during each burst: its latency")
    parser.add_argument("--steady", type=float, default=0,
                        help="seconds of the steady state after the last burst (0: none)")
    parser.add_argument("--report-every", type=float, default=10.0,
                        help="seconds between two progress reports of each Mentor job")
    # Enough GPUs for one operator's bursts (20 + 100 + 1,000 jobs of 2 GPUs); each operator
    # races on a fresh control plane of its own.
    parser.add_argument("--nodes", type=int, default=300, help="kwok nodes of 8 GPUs")
    parser.add_argument("--apply-only", action="store_true",
                        help="no operator: how long the API server takes to accept each burst "
                             "of TrainingJobs and of PyTorchJobs (the floor of both races)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mentor-scale-"))
    results: list[dict[str, Any]] = []
    if args.apply_only:
        with ControlPlane(build_binaries(), work_dir=work / "k8s", gpu_nodes=args.nodes) as cp:
            apply_only(cp, work, args.bursts)
        return
    # Each operator on a control plane of its own, started fresh: on a shared one, the second
    # found the first's jobs and pods in every cache, and (with 250 nodes) every GPU taken by
    # the first's 1,000-job burst, so that its pods were never scheduled: no bindings, no kwok
    # updates, no endpoints, a lighter API server than the first had.
    with ControlPlane(build_binaries(), work_dir=work / "k8s-mentor", gpu_nodes=args.nodes) as cp:
        race, mentor_id = Race(cp, work), Identity(cp, "bench-mentor", work)
        operator = start_mentor(cp, mentor_id, work)
        try:
            if args.single:
                single = race.single(operator, mentor_job, args.single,
                                     lambda j: [f"{j}-0", f"{j}-1"])
                print(json.dumps({"operator": "mentor", "single": single}), flush=True)
            for count in args.bursts:
                results.append(race.burst("mentor", operator, mentor_id, mentor_job, count,
                                          lambda j: [f"{j}-0", f"{j}-1"], args.probe))
                print(json.dumps(results[-1]), flush=True)
            if args.steady and args.bursts:
                ns, count = race.last_namespace, args.bursts[-1]
                wait_running(cp, ns, count + 1)
                rest = race.steady("mentor", operator, args.steady)
                print(json.dumps({"state": "at rest", "jobs": count, **rest}), flush=True)
                busy = race.steady("mentor", operator, args.steady, reporter(
                    operator.port, ns, [f"j{i}" for i in range(count)], args.report_every))
                print(json.dumps({"state": f"reporting every {args.report_every:g} s",
                                  "jobs": count, **busy}), flush=True)
        finally:
            operator.stop()
    if not args.no_peer:
        with ControlPlane(build_binaries(), work_dir=work / "k8s-peer",
                          gpu_nodes=args.nodes) as cp:
            race, peer_id = Race(cp, work), Identity(cp, "bench-peer", work)
            peer = start_peer(cp, peer_id, work)
            try:
                if args.single:  # the same warm-up as Mentor's, and the same GPUs left
                    single = race.single(peer, peer_job, args.single,
                                         lambda j: [f"{j}-master-0", f"{j}-worker-0"])
                    print(json.dumps({"operator": "training-operator", "single": single}),
                          flush=True)
                for count in args.bursts:
                    results.append(race.burst("training-operator", peer, peer_id, peer_job,
                                              count, lambda j: [f"{j}-master-0",
                                                                f"{j}-worker-0"], args.probe))
                    print(json.dumps(results[-1]), flush=True)
                if args.steady and args.bursts:
                    rest = race.steady("training-operator", peer, args.steady)
                    print(json.dumps({"state": "at rest (it takes no reports)",
                                      "jobs": args.bursts[-1], **rest}), flush=True)
            finally:
                peer.stop()
    for count in args.bursts:
        ours = next((r for r in results if r["operator"] == "mentor" and r["jobs"] == count),
                    None)
        theirs = next((r for r in results if r["operator"] != "mentor" and r["jobs"] == count),
                      None)
        if ours and theirs:
            print(f"burst {count}: mentor {ours['all_pods_s']} s, training-operator "
                  f"{theirs['all_pods_s']} s: {theirs['all_pods_s'] / ours['all_pods_s']:.2f}× "
                  f"faster; CPU {ours['cpu_s']} vs {theirs['cpu_s']} s; RSS "
                  f"{ours['peak_rss_mb']} vs {theirs['peak_rss_mb']} MB; requests/job "
                  f"{ours['requests_per_job']} vs {theirs['requests_per_job']}")
    print(f"logs and manifests: {work}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
