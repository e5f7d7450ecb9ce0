"""Faults on the real control plane, and "nothing lost" after each one.

Nothing lost means: every job reaches exactly one terminal state; no pod is orphaned or
duplicated and no two live pods share a rank; GPU-hours stay within 1% of the ground truth, which
a watch of its own takes from the pods' timestamps (container start to finish, or to the deletion
deadline of a pod whose kubelet never said). This module runs its own control plane, since it
kills, restarts and doubles operators that must be the only ones there.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from controlplane import ControlPlane, build_binaries, free_port
from harness import Kube, Operator, StatusWrites, training_job
from kubernetes import client, config, watch

REPO = Path(__file__).resolve().parents[2]
JOB_NAME = "mentor.dev/job-name"
FINALIZER = "mentor.dev/gpu-accounting"
GROUP, VERSION, PLURAL = "mentor.dev", "v1alpha1", "trainingjobs"
pytestmark = pytest.mark.cluster


def parse(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


class PodClock:
    """Every Mentor pod's last state, from a list-and-watch that survives API server restarts:
    with Mentor's finalizer, each pod's final status is seen before the pod goes."""

    def __init__(self, api: client.ApiClient) -> None:
        self.core = client.CoreV1Api(api)
        self.pods: dict[str, dict[str, Any]] = {}
        self._stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                listed = self.core.list_pod_for_all_namespaces(label_selector=JOB_NAME,
                                                               _request_timeout=30)
                for pod in listed.items:
                    self._keep(self.core.api_client.sanitize_for_serialization(pod))
                for event in watch.Watch().stream(
                        self.core.list_pod_for_all_namespaces, label_selector=JOB_NAME,
                        resource_version=listed.metadata.resource_version, timeout_seconds=60,
                        _request_timeout=90):
                    if self._stop.is_set():
                        return
                    self._keep(self.core.api_client.sanitize_for_serialization(event["object"]))
            except Exception as e:  # the API server restarting: list again
                print(f"pod clock: {type(e).__name__}: {e}"[:300])
                time.sleep(0.5)

    def _keep(self, pod: dict[str, Any]) -> None:
        self.pods[pod["metadata"]["uid"]] = pod

    def stop(self) -> None:
        self._stop.set()

    def seen(self, job: dict[str, Any]) -> list[tuple[str, str, str]]:
        """What the clock knows of a job's pods (for failure messages)."""
        return [(p["metadata"]["name"], p["metadata"]["resourceVersion"],
                 (p.get("status") or {}).get("phase", "")) for p in self.pods.values()
                if p["metadata"]["namespace"] == job["metadata"]["namespace"]
                and p["metadata"]["labels"].get(JOB_NAME) == job["metadata"]["name"]]

    def gpu_seconds(self, job_uid: str) -> float:
        now = dt.datetime.now(dt.UTC)
        total = 0.0
        for pod in list(self.pods.values()):
            refs = pod["metadata"].get("ownerReferences") or []
            if not any(r["uid"] == job_uid for r in refs):
                continue
            limits = pod["spec"]["containers"][0].get("resources", {}).get("limits", {})
            gpus = int(limits.get("nvidia.com/gpu", 0))
            status = pod.get("status") or {}
            state = (status.get("containerStatuses") or [{}])[0].get("state") or {}
            ran = state.get("running") or state.get("terminated") or {}
            start = parse(ran.get("startedAt"))
            finished = parse((state.get("terminated") or {}).get("finishedAt"))
            if start is None and state.get("terminated"):
                # ContainerStatusUnknown (evicted, its node shut down): the kubelet kept no
                # container times; the pod's own start stands in
                start = parse(status.get("startTime"))
            if finished is None and (state.get("terminated")
                                     or status.get("phase") in ("Succeeded", "Failed")):
                # ended with no finish of its own (that container, or a pod of a deleted node
                # failed by the pod GC): when it was last said to stop
                said = [parse(c.get("lastTransitionTime")) for c in status.get("conditions") or []
                        if (c.get("type"), c.get("status")) in (("Ready", "False"),
                                                                ("DisruptionTarget", "True"))]
                finished = max((t for t in said if t), default=None)
            if start is None:
                continue
            end = finished or parse(pod["metadata"].get("deletionTimestamp")) or now
            total += gpus * max(0.0, (min(end, now) - start).total_seconds())
        return total


class Cluster:
    """The module's control plane, its API clients and the pods' clock."""

    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp
        self.api = config.new_client_from_config(config_file=str(cp.kubeconfig))
        self.core = client.CoreV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.clock = PodClock(config.new_client_from_config(config_file=str(cp.kubeconfig)))

    def operator(self, log: Path, **env: str) -> Operator:
        return Operator(self.cp, log, MENTOR_HTTP_HOST="127.0.0.1",
                        MENTOR_HTTP_PORT=str(free_port()), **env)

    def job(self, ns: str, name: str) -> dict[str, Any]:
        return dict(self.custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name))

    def jobs(self, ns: str) -> dict[str, dict[str, Any]]:
        items = self.custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]
        return {j["metadata"]["name"]: j for j in items}

    def create(self, ns: str, bodies: list[dict[str, Any]]) -> None:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda b: self.custom.create_namespaced_custom_object(
                GROUP, VERSION, ns, PLURAL, b), bodies))

    def patch(self, ns: str, name: str, spec: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name,
                                                   {"spec": spec})

    def pods(self, ns: str) -> dict[str, list[dict[str, Any]]]:
        by_job: dict[str, list[dict[str, Any]]] = {}
        listed = self.core.list_namespaced_pod(ns, label_selector=JOB_NAME,
                                               _preload_content=False)
        for pod in json.loads(listed.data)["items"]:  # raw JSON: 200 pods parse in ms
            by_job.setdefault(pod["metadata"]["labels"][JOB_NAME], []).append(pod)
        return by_job

    def annotate(self, ns: str, pod: str, **notes: str) -> None:
        self.core.patch_namespaced_pod(pod, ns, {"metadata": {"annotations": {
            f"sim.mentor.dev/{k.replace('_', '-')}": v for k, v in notes.items()}}},
            _content_type="application/merge-patch+json")

    def end(self, ns: str, job: str, result: str, **notes: str) -> None:
        for pod in self.live(ns).get(job, []):
            self.annotate(ns, pod["metadata"]["name"], result=result, delay="0s", **notes)

    def live(self, ns: str) -> dict[str, list[dict[str, Any]]]:
        return {job: [p for p in pods if not p["metadata"].get("deletionTimestamp")]
                for job, pods in self.pods(ns).items()}


def gang_is_whole(job: dict[str, Any], pods: list[dict[str, Any]]) -> bool:
    """The job runs exactly its N pods, one per rank, all of its current attempt, and none of
    them belongs to anyone else. Asserts what must never happen, returns whether it settled."""
    uid, n = job["metadata"]["uid"], job["spec"]["parallelism"]["nodes"]
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    ranks = [p["metadata"]["labels"]["mentor.dev/node-rank"] for p in live]
    assert len(ranks) == len(set(ranks)) <= n, f"two live pods share a rank: {ranks}"
    assert all(any(r["uid"] == uid for r in p["metadata"]["ownerReferences"]) for p in pods), \
        "a pod of another owner under this job's name"
    status = job.get("status") or {}
    attempts = {int(p["metadata"]["annotations"]["mentor.dev/attempt"]) for p in live}
    return (status.get("phase") == "Running" and len(live) == n
            and all((p.get("status") or {}).get("phase") == "Running" for p in live)
            and attempts == {status.get("attempts")}
            and status.get("observedGeneration") == job["metadata"]["generation"])


def until(condition: Callable[[], bool], timeout: float, what: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what()}")
        time.sleep(0.5)


def settle_all(cluster: Cluster, ns: str, restarts: dict[str, int] | None = None,
               timeout: float = 90) -> None:
    """Every job of the namespace runs whole (and has exactly the restarts expected)."""
    def whole() -> bool:
        jobs, pods = cluster.jobs(ns), cluster.pods(ns)
        ok = all(gang_is_whole(job, pods.get(name, [])) for name, job in jobs.items())
        if ok and restarts is not None:
            if not set(restarts) <= set(jobs):
                return False  # not all created yet
            counted = {name: (job.get("status") or {}).get("restarts", 0)
                       for name, job in jobs.items()}
            for name, expected in restarts.items():
                assert counted[name] <= expected, \
                    f"{name}: a restart counted twice: {json.dumps(jobs[name]['status'])}"
            ok = all(counted[name] == expected for name, expected in restarts.items())
        return ok

    def state() -> str:
        pods = cluster.pods(ns)
        return json.dumps({n: [(j.get("status") or {}).get("phase"),
                               [(p["metadata"]["name"], (p.get("status") or {}).get("phase"),
                                 p["spec"].get("nodeName"), p["metadata"].get("deletionTimestamp"))
                                for p in pods.get(n, [])]]
                           for n, j in cluster.jobs(ns).items()})

    until(whole, timeout, state)


def finish_all(cluster: Cluster, ns: str, timeout: float = 90) -> dict[str, dict[str, Any]]:
    """End every job's pods with success; wait for Succeeded and for every pod to be settled
    (released from Mentor's finalizer: its time is in the job's status for good)."""
    time.sleep(2)  # every pod holds its GPUs for a time that whole-second timestamps can see
    live = [p["metadata"]["name"] for pods in cluster.live(ns).values() for p in pods]
    with ThreadPoolExecutor(8) as pool:  # one list, then the pods' ends at once
        list(pool.map(lambda pod: cluster.annotate(ns, pod, result="succeed", delay="0s"), live))

    def phases() -> list[str | None]:
        return [(j.get("status") or {}).get("phase") for j in cluster.jobs(ns).values()]

    def held() -> list[str]:
        return [p["metadata"]["name"] for pods in cluster.pods(ns).values() for p in pods
                if FINALIZER in (p["metadata"].get("finalizers") or [])]

    until(lambda: set(phases()) == {"Succeeded"} and not held(), timeout,
          lambda: f"phases {phases()}, pods not settled {held()}")
    assert_at_rest(cluster, ns)
    return cluster.jobs(ns)


def assert_at_rest(cluster: Cluster, ns: str, window: float = 3.0) -> None:
    """The invariants of jobs at rest, whatever the scenario did to them: no status write (the
    operator resyncs every second here, so a storm or a ticking clock shows at once), and an
    active clock that stands still."""
    writes = StatusWrites(cluster.cp, ns)
    time.sleep(1)  # its first list is not a write
    before, start = cluster.jobs(ns), time.monotonic()
    time.sleep(window)
    written = {name for name in before if writes.since(name, start)}
    writes.stop()
    assert not written, f"jobs at rest were written: {sorted(written)[:5]}"
    for name, job in cluster.jobs(ns).items():
        assert job["status"]["ledger"].get("activeSeconds") == \
            before[name]["status"]["ledger"].get("activeSeconds"), f"{name}'s clock moved"


def assert_gpu_hours_match(cluster: Cluster, jobs: dict[str, dict[str, Any]]) -> float:
    """Each job's GPU-hours within 0.01% of the pods' own timestamps; the worst error."""
    worst = 0.0
    for name, job in jobs.items():
        truth = cluster.clock.gpu_seconds(job["metadata"]["uid"]) / 3600
        charged = job["status"]["gpuHours"]
        assert truth > 0, f"{name}: the clock saw {cluster.clock.seen(job)}"
        error = abs(charged - truth) / truth
        # 0.01% of the truth, but never finer than the status keeps (6 decimals)
        assert abs(charged - truth) <= max(1e-4 * truth, 1e-6), \
            f"{name}: charged {charged:.6f} GPU-h, the pods held {truth:.6f}"
        worst = max(worst, error)
    return worst


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    work = tmp_path_factory.mktemp("faults-k8s")
    with ControlPlane(build_binaries(), work_dir=work, gpu_nodes=8) as cp:
        cp.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        cp.wait_established("trainingjobs.mentor.dev")
        cluster = Cluster(cp)
        yield cluster
        cluster.clock.stop()


@pytest.fixture
def ns(cluster: Cluster) -> str:
    name = f"f-{random.randrange(16**8):08x}"
    cluster.cp.kubectl("create", "namespace", name)
    return name


@contextlib.contextmanager
def operating(cluster: Cluster, tmp_path: Path) -> Iterator[Operator]:
    """One operator for the test, stopped at its end, which must have logged no traceback."""
    op = cluster.operator(tmp_path / "operator.log")
    op.start()
    try:
        yield op
    finally:
        op.stop()
    assert not op.errors(), op.log_path.read_text()[-3000:]


def gpu_job(name: str, **spec: Any) -> dict[str, Any]:
    return training_job(name, parallelism={"nodes": 2, "gpusPerNode": 1},
                        runPolicy={"backoffLimit": 100}, **spec)


def cpu_job(name: str) -> dict[str, Any]:
    return training_job(name, parallelism={"nodes": 2, "procsPerNode": 1},
                        runPolicy={"backoffLimit": 100})


def test_operator_killed_20_times_during_creates_and_restarts(
        cluster: Cluster, ns: str, tmp_path: Path) -> None:
    rng = random.Random(12)
    names = [f"k{i}" for i in range(8)]
    restarts = dict.fromkeys(names, 0)
    kills = 0
    for round_ in range(21):
        op = cluster.operator(tmp_path / "operator.log", MENTOR_LEASE_SECONDS="2")
        op.start()
        if round_ == 0:  # killed while it creates the gangs
            creating = threading.Thread(target=cluster.create,
                                        args=(ns, [gpu_job(n) for n in names]))
            creating.start()
        else:
            creating.join()
            settle_all(cluster, ns, restarts)  # after each kill: exactly N pods, distinct ranks
            live = cluster.live(ns)
            for name in rng.sample(names, 3):  # killed while it restarts gangs
                if round_ % 2:
                    cluster.annotate(ns, live[name][0]["metadata"]["name"], result="fail",
                                     exit_code="137", delay="0s")
                else:
                    cluster.core.delete_namespaced_pod(live[name][1]["metadata"]["name"], ns)
                restarts[name] += 1
        time.sleep(rng.uniform(0.0, 1.5))
        assert op.proc is not None
        op.proc.send_signal(signal.SIGKILL)
        op.proc.wait()
        kills += 1
    op = cluster.operator(tmp_path / "operator.log")
    op.start()
    try:
        settle_all(cluster, ns, restarts)
        jobs = finish_all(cluster, ns)
        error = assert_gpu_hours_match(cluster, jobs)
        assert all(j["status"]["restarts"] == restarts[n] for n, j in jobs.items())
    finally:
        op.stop()
    print(f"\nkills survived: {kills}; restarts injected: {sum(restarts.values())}, "
          f"each counted once; worst GPU-hour error {error:.4%}")
    assert kills >= 20


def test_jobs_created_edited_and_deleted_while_the_operator_is_down_converge(
        cluster: Cluster, ns: str, tmp_path: Path) -> None:
    op = cluster.operator(tmp_path / "operator.log")
    op.start()
    cluster.create(ns, [gpu_job("kept"), gpu_job("deleted"), gpu_job("edited")])
    settle_all(cluster, ns)
    op.stop()
    # while it is down: a new job, an edit (suspend), a deletion
    cluster.create(ns, [gpu_job("new")])
    cluster.patch(ns, "edited", {"runPolicy": {"suspend": True}})
    cluster.custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "deleted")
    op.start()
    try:
        until(lambda: set(cluster.pods(ns)) == {"kept", "new"}, 60,
              lambda: f"pods of {sorted(cluster.pods(ns))}")  # the deleted job's are released
        until(lambda: (cluster.job(ns, "edited").get("status") or {}).get("phase")
              == "Suspended", 30, lambda: str(cluster.job(ns, "edited").get("status")))
        cluster.patch(ns, "edited", {"runPolicy": {"suspend": False}})
        settle_all(cluster, ns)
        jobs = finish_all(cluster, ns)
        assert set(jobs) == {"kept", "new", "edited"}
        assert_gpu_hours_match(cluster, jobs)
    finally:
        op.stop()
    assert not op.errors()


def test_the_operator_survives_an_api_server_restart_and_misses_nothing(
        cluster: Cluster, ns: str, tmp_path: Path) -> None:
    with operating(cluster, tmp_path) as op:
        cluster.create(ns, [gpu_job("before")])
        settle_all(cluster, ns)
        cluster.cp.restart_apiserver()
        assert op.proc is not None and op.proc.poll() is None
        cluster.end(ns, "before", "fail", exit_code="137")  # a failure just after the restart
        cluster.create(ns, [gpu_job("after")])
        settle_all(cluster, ns, {"before": 1, "after": 0})
        jobs = finish_all(cluster, ns)
        assert_gpu_hours_match(cluster, jobs)


def test_a_deleted_node_s_pods_are_recreated_elsewhere_and_the_job_goes_on(
        cluster: Cluster, ns: str, tmp_path: Path) -> None:
    op = cluster.operator(tmp_path / "operator.log")
    op.start()
    try:
        cluster.create(ns, [gpu_job("lost")])
        settle_all(cluster, ns)
        node = cluster.live(ns)["lost"][0]["spec"]["nodeName"]
        cluster.core.delete_node(node)
        # The pod GC deletes the pods of a node that is gone (after its 40 s quarantine), and
        # marks them DisruptionTarget: the gang restarts without counting it against the job.
        until(lambda: cluster.job(ns, "lost")["status"]["attempts"] == 2, 150,
              lambda: str(cluster.live(ns)))
        settle_all(cluster, ns, {"lost": 0})
        assert all(p["spec"]["nodeName"] != node for p in cluster.live(ns)["lost"])
        assert cluster.job(ns, "lost")["status"]["attempts"] == 2
        jobs = finish_all(cluster, ns)
        assert_gpu_hours_match(cluster, jobs)
    finally:
        op.stop()
        cluster.cp.add_gpu_nodes(1, 8, prefix=node.rsplit("-", 1)[0] + "-back")
    assert not op.errors(), op.log_path.read_text()[-3000:]


def test_an_eviction_does_not_count_against_backoff_limit(
        cluster: Cluster, ns: str, tmp_path: Path) -> None:
    op = cluster.operator(tmp_path / "operator.log")
    op.start()
    job = gpu_job("evicted")
    job["spec"]["runPolicy"]["backoffLimit"] = 0
    try:
        cluster.create(ns, [job])
        settle_all(cluster, ns)
        node = cluster.live(ns)["evicted"][0]["spec"]["nodeName"]
        # kubectl drain evicts through the Eviction API, which marks the pod DisruptionTarget
        cluster.cp.kubectl("drain", node, "--pod-selector", f"{JOB_NAME}=evicted",
                           "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=60s")
        settle_all(cluster, ns, {"evicted": 0})
        status = cluster.job(ns, "evicted")["status"]
        assert status["attempts"] == 2 and status["restarts"] == 0, "not charged: backoff 0"
        jobs = finish_all(cluster, ns)
        assert_gpu_hours_match(cluster, jobs)
    finally:
        op.stop()
        cluster.cp.kubectl("uncordon", node)
    assert not op.errors(), op.log_path.read_text()[-3000:]


def test_a_pod_deleted_mid_run_is_charged_to_the_second(
        cluster: Cluster, ns: str, tmp_path: Path) -> None:
    with operating(cluster, tmp_path):
        cluster.create(ns, [gpu_job("deleted-pod")])
        settle_all(cluster, ns)
        time.sleep(2)
        kube = Kube(cluster.cp, ns)
        kube("delete", "pod", "deleted-pod-0", "--wait=false")  # as a user would
        settle_all(cluster, ns, {"deleted-pod": 1})
        time.sleep(2)
        jobs = finish_all(cluster, ns)
        error = assert_gpu_hours_match(cluster, jobs)
    print(f"\npod deleted mid-run: GPU-hour error {error:.4%}")


def leader_of(operators: list[Operator]) -> Operator:
    """The replica that works: it says so on its /metrics."""
    import urllib.request

    def leads(op: Operator) -> bool:
        port = op.env["MENTOR_HTTP_PORT"]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                return "mentor_operator_leader 1.0" in r.read().decode()
        except OSError:
            return False

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        leading = [op for op in operators if op.proc and op.proc.poll() is None and leads(op)]
        if leading:
            assert len(leading) == 1, "two leaders"
            return leading[0]
        time.sleep(0.2)
    raise AssertionError("no leader")


def test_the_leader_killed_during_a_burst_of_100_jobs_loses_and_doubles_nothing(
        cluster: Cluster, ns: str, tmp_path: Path) -> None:
    shared = {"MENTOR_LEASE_NAME": f"ha-{ns}", "MENTOR_LEASE_SECONDS": "3"}
    replicas = [cluster.operator(tmp_path / f"replica-{i}.log", **shared) for i in range(2)]
    for op in replicas:
        op.start()
    names = [f"b{i:03d}" for i in range(100)]
    try:
        burst = threading.Thread(target=cluster.create, args=(ns, [cpu_job(n) for n in names]))
        burst.start()
        until(lambda: len(cluster.pods(ns)) >= 20, 60, lambda: "no pods yet")
        first = leader_of(replicas)
        assert first.proc is not None
        first.proc.send_signal(signal.SIGKILL)  # mid-burst
        burst.join()
        settle_all(cluster, ns, dict.fromkeys(names, 0), timeout=180)
        # and again during a wave of gang restarts, with a fresh standby beside the new leader
        first.start()
        second = leader_of(replicas)
        live = cluster.live(ns)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda n: cluster.annotate(ns, live[n][0]["metadata"]["name"],
                                                     result="fail", exit_code="137",
                                                     delay="0s"), names))
        time.sleep(1.0)
        assert second.proc is not None
        second.proc.send_signal(signal.SIGKILL)
        settle_all(cluster, ns, dict.fromkeys(names, 1), timeout=180)
        jobs = finish_all(cluster, ns, timeout=180)
        assert all(j["status"]["phase"] == "Succeeded" for j in jobs.values())
        assert all(j["status"]["restarts"] == 1 for j in jobs.values())
    finally:
        for op in replicas:
            op.stop()


def test_24_jobs_edited_5_times_while_suspended_run_their_latest_spec(
        cluster: Cluster, ns: str, tmp_path: Path) -> None:
    # 24 jobs edited by 8 writers at once: three jobs a writer give the same races as 100 (the
    # burst suite's 100 jobs cover scale), at a quarter of the suite's slowest minutes.
    names = [f"e{i:03d}" for i in range(24)]
    with operating(cluster, tmp_path):
        cluster.create(ns, [cpu_job(n) for n in names])
        settle_all(cluster, ns, timeout=180)
        first = {n: ps[0]["metadata"]["annotations"]["mentor.dev/config"]
                 for n, ps in cluster.live(ns).items()}
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda n: cluster.patch(ns, n, {"runPolicy": {"suspend": True}}),
                          names))
        until(lambda: all((j.get("status") or {}).get("phase") == "Suspended"
                          for j in cluster.jobs(ns).values()), 120, lambda: "not suspended")
        rates = [0.001 * (k + 2) for k in range(5)]

        def edit(name: str) -> None:
            for rate in rates:
                cluster.patch(ns, name, {"optimization": {"learningRate": rate}})
            cluster.patch(ns, name, {"runPolicy": {"suspend": False}})

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(edit, names))
        settle_all(cluster, ns, timeout=180)
        for name, pods in cluster.live(ns).items():
            configs = {p["metadata"]["annotations"]["mentor.dev/config"] for p in pods}
            assert len(configs) == 1 and configs != {first[name]}, "pods run the edited config"
            (config,) = configs
            assert json.loads(config)["optimization"]["learningRate"] == rates[-1]
        jobs = finish_all(cluster, ns, timeout=180)
        assert all(j["status"]["observedGeneration"] == j["metadata"]["generation"]
                   for j in jobs.values())


def test_time_alone_writes_stay_within_one_budget_however_many_jobs_run(
        cluster: Cluster, ns: str, tmp_path: Path) -> None:
    """Every running job's GPU-hours are refreshed each second here (MENTOR_RESYNC_SECONDS=1):
    for 12 jobs, 12 status writes a second, growing with the jobs. A budget of 3 a second
    (MENTOR_STATUS_WRITES_PER_SECOND, the chart's operator.statusWritesPerSecond) holds them to
    3 a second together, and each job still has its turn: its period stretches to 12 / 3 s."""
    names, rate, window = [f"b{i:02d}" for i in range(12)], 3, 12.0
    op = cluster.operator(tmp_path / "operator.log", MENTOR_STATUS_WRITES_PER_SECOND=str(rate),
                          MENTOR_PROGRESS_INTERVAL="1")
    op.start()
    try:
        cluster.create(ns, [gpu_job(n) for n in names])
        settle_all(cluster, ns)
        writes = StatusWrites(cluster.cp, ns)
        time.sleep(1)  # its first list is not a write
        start = time.monotonic()
        time.sleep(window)
        counts = {n: len(writes.since(n, start)) for n in names}
        writes.stop()
        print(f"\nstatus writes of 12 running jobs in {window:.0f} s, at most {rate}/s: {counts}")
        # the rate over the window, plus the bucket's burst (a second's worth) and one in flight
        assert sum(counts.values()) <= rate * window + rate + 1, counts
        assert all(counts.values()), f"a job whose GPU-hours were never refreshed: {counts}"
        assert_gpu_hours_match(cluster, finish_all(cluster, ns))  # and the ledger is exact
    finally:
        op.stop()
    assert not op.errors(), op.log_path.read_text()[-3000:]


def test_pods_lost_with_their_container_times_are_charged_from_their_own(
        cluster: Cluster, ns: str, tmp_path: Path) -> None:
    """A kubelet that evicts a pod (or a node shutting down) can report the container as
    `ContainerStatusUnknown`, with no startedAt and no finishedAt: the pod's time was once
    settled as nothing. It is charged from the pod's startTime to its Ready=False transition,
    and the restart is not the job's fault."""
    with operating(cluster, tmp_path):
        cluster.create(ns, [gpu_job(f"lost-{i}") for i in range(3)])
        settle_all(cluster, ns)
        time.sleep(2)
        for i in range(3):
            pod = cluster.live(ns)[f"lost-{i}"][0]["metadata"]["name"]
            cluster.annotate(ns, pod, result="lost", delay="0s")
        until(lambda: all((j.get("status") or {}).get("attempts") == 2
                          for j in cluster.jobs(ns).values()), 60,
              lambda: json.dumps({n: j.get("status") for n, j in cluster.jobs(ns).items()}))
        settle_all(cluster, ns, dict.fromkeys((f"lost-{i}" for i in range(3)), 0))
        time.sleep(2)
        jobs = finish_all(cluster, ns)
        error = assert_gpu_hours_match(cluster, jobs)
    for job in jobs.values():
        assert job["status"]["restarts"] == 0 and job["status"]["attempts"] == 2
    print(f"\npods lost with no container times: GPU-hour error {error:.4%}")
