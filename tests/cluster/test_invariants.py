"""Invariants, not scenarios: whatever happened before, a job at rest is not written, and the
clock of a job that holds nothing stands still.

The operator under test is the suite's shared one (safety resync every second), watched by a
watch of the test's own (`harness.StatusWrites`), which sees every write the API server accepts.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from controlplane import ControlPlane
from harness import CHART_MEMORY_LIMIT_MIB, Kube, Operator, StatusWrites, training_job, tuning_job

from testdata import search_values

pytestmark = pytest.mark.cluster

RESYNC_SECONDS = 1.0  # the suite operator's MENTOR_RESYNC_SECONDS
WINDOW = 6.0


@pytest.fixture
def writes(control_plane: ControlPlane, kube: Kube) -> Iterator[StatusWrites]:
    recorder = StatusWrites(control_plane, kube.ns)
    yield recorder
    recorder.stop()


def active(status: dict[str, Any]) -> float:
    return float((status.get("ledger") or {}).get("activeSeconds", 0.0))


def test_a_job_at_rest_is_written_at_most_once_a_resync_and_its_clock_stands_still(
        operator: Operator, kube: Kube, writes: StatusWrites) -> None:
    """Suspended, Succeeded and Failed jobs are not written at all; a Running job with no
    reports only for its GPU-hours, at most once per resync period. Once it was 125 writes a
    second while suspended, with `activeSeconds` growing 3,000 s a second: the cleared
    `ledger.activeSince` never reached the server, so each reconcile counted it again."""
    kube.apply(training_job("idle", runPolicy={"activeDeadlineSeconds": 600}))
    kube.apply(training_job("paused", runPolicy={"activeDeadlineSeconds": 600}))
    kube.apply(training_job("done"))
    kube.apply(training_job("broken", runPolicy={"backoffLimit": 0}))
    for name in ("idle", "paused", "done", "broken"):
        kube.wait(f"trainingjob/{name}", "condition=Running")
    kube("patch", "trainingjob", "paused", "--type=merge", "-p",
         '{"spec":{"runPolicy":{"suspend":true}}}')
    kube.end_pods("done", "succeed")
    kube.end_pods("broken", "fail", exit_code=1)
    kube.wait("trainingjob/paused", "condition=Suspended")
    kube.wait("trainingjob/done", "condition=Succeeded")
    kube.wait("trainingjob/broken", "condition=Failed")
    for rank in (0, 1):  # their time settled, the suspended job's pods gone: at rest
        kube.wait(f"pod/paused-{rank}", "delete")
    settled = time.monotonic() + 60
    while any("mentor.dev/gpu-accounting" in (p["metadata"].get("finalizers") or [])
              for name in ("done", "broken") for p in kube.pods(name)):
        assert time.monotonic() < settled, "the ended pods were never settled"
        time.sleep(0.2)
    time.sleep(2 * RESYNC_SECONDS)  # the last settling writes land before the window

    before = {n: kube.get("trainingjob", n)["status"] for n in ("paused", "done", "broken")}
    start = time.monotonic()
    time.sleep(WINDOW)  # the window itself is what is measured: a rest of this long
    limit = WINDOW / RESYNC_SECONDS + 1
    counts = {n: len(writes.since(n, start)) for n in ("idle", "paused", "done", "broken")}
    print(f"status writes in {WINDOW:.0f} s at rest: {counts}")
    assert counts["paused"] == counts["done"] == counts["broken"] == 0, counts
    assert 0 < counts["idle"] <= limit, counts  # its GPU-hours tick, once a resync
    for name, status in before.items():
        now = kube.get("trainingjob", name)["status"]
        assert active(now) == active(status), f"{name}'s clock moved at rest"
        assert "activeSince" not in (now.get("ledger") or {}), name

    # The deadline clock counts only the time it ran: resumed, it runs on.
    kube("patch", "trainingjob", "paused", "--type=merge", "-p",
         '{"spec":{"runPolicy":{"suspend":false}}}')
    kube.wait("trainingjob/paused", "condition=Running")
    status = kube.get("trainingjob", "paused")["status"]
    assert status["phase"] == "Running" and active(status) < 60, status.get("ledger")


def post(op: Operator, path: str, body: bytes, token: bytes) -> tuple[int, str]:
    """A raw POST: http.client sends header bytes as they are (urllib would refuse non-ASCII)."""
    import http.client
    import urllib.parse

    url = urllib.parse.urlsplit(op.http)
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)
    conn.putrequest("POST", path)
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Authorization", b"Bearer " + token)
    conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body)
    response = conn.getresponse()
    return response.status, response.read().decode()


def test_every_malformed_report_is_a_4xx_and_never_reaches_the_status(
        operator: Operator, kube: Kube, writes: StatusWrites) -> None:
    from harness import REPORT_KEY

    from mentor.controller.tokens import token_for

    kube.apply(training_job("target"))
    kube.wait("trainingjob/target", "condition=Running")
    token = token_for(REPORT_KEY.encode(), kube.ns).encode()
    path = f"/v1/progress/{kube.ns}/target"
    good = {"step": 1, "total_steps": 100, "loss": 2.0, "tokens_per_second": 10.0}

    # Who may report: a wrong token and a job that does not exist get the same answer.
    wrong = post(operator, path, json.dumps(good).encode(), b"0" * 64)
    absent = post(operator, f"/v1/progress/{kube.ns}/nobody", json.dumps(good).encode(), token)
    elsewhere = post(operator, "/v1/progress/kube-system/secret-job", json.dumps(good).encode(),
                     token)
    assert wrong == absent == elsewhere and wrong[0] == 403, (wrong, absent, elsewhere)
    assert post(operator, path, json.dumps(good).encode(), "zażółć".encode())[0] == 403

    start = time.monotonic()
    hostile: list[bytes] = [
        json.dumps({**good, "step": 1e30, "total_steps": 1e30}).encode(),
        json.dumps({**good, "seconds_per_step": 1e308}).encode(),
        json.dumps({**good, "step": 500}).encode(),
        json.dumps({**good, "loss": "NaN"}).encode(),
        b'{"step": 1, "loss": NaN, "total_steps": 100, "tokens_per_second": 1}',
        b"[1, 2, 3]", b"not json", b'"step"', b"{}",
        json.dumps({"step": 3, "checkpoint": "s3://b/" + "x" * 3000}).encode(),
        # the namespace's token, from a pod of an earlier job of this name
        json.dumps({**good, "uid": "an-earlier-job-of-this-name"}).encode(),
    ]
    answers = [post(operator, path, body, token) for body in hostile]
    assert all(400 <= status < 500 for status, _ in answers), answers
    time.sleep(2)  # two flushes of the progress book (MENTOR_PROGRESS_INTERVAL=0.5)
    written = [s for s in writes.since("target", start) if "progress" in s or "checkpoint" in s]
    assert written == [], "a refused report reached the status"
    assert "progress" not in kube.get("trainingjob", "target").get("status", {})

    # And a good report still lands.
    assert post(operator, path, json.dumps(good).encode(), token)[0] == 202
    kube.wait("trainingjob/target", "jsonpath={.status.progress.step}=1")
    assert not operator.errors(), "a report made a traceback"


def test_a_standby_that_once_led_sheds_the_leader_label_and_is_ready_only_then(
        control_plane: ControlPlane, operator: Operator, tmp_path: Any) -> None:
    """A leader that lost the Lease and restarted in place kept `mentor.dev/leader=true`: the
    Service sent it the trainers' reports, and it answered each with a 503."""
    import urllib.request

    from controlplane import free_port

    control_plane.kubectl("apply", "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": "mentor-was-leader", "namespace": "default",
            "labels": {"mentor.dev/leader": "true"}},
         "spec": {"containers": [{"name": "operator", "image": "mentor-operator"}]}}))
    port = free_port()
    standby = Operator(control_plane, tmp_path / "standby.log",
                       MENTOR_HTTP_HOST="127.0.0.1", MENTOR_HTTP_PORT=str(port),
                       MENTOR_POD_NAME="mentor-was-leader",
                       # the suite's operator holds this Lease: this one stays a standby
                       MENTOR_LEASE_NAME=operator.env["MENTOR_LEASE_NAME"])
    standby.start()
    try:
        def labels() -> dict[str, str]:
            out = control_plane.kubectl("get", "pod", "mentor-was-leader", "-n", "default",
                                        "-o", "json")
            return dict(json.loads(out)["metadata"].get("labels") or {})

        deadline = time.monotonic() + 30
        while "mentor.dev/leader" in labels():
            assert time.monotonic() < deadline, "the stale leader label stayed"
            time.sleep(0.2)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as ready:
            assert ready.status == 200
        assert "leading as" not in standby.log_path.read_text()
    finally:
        standby.stop()
        control_plane.kubectl("delete", "pod", "mentor-was-leader", "-n", "default",
                              "--wait=false")
    assert not standby.errors()


def test_the_operator_s_memory_stays_bounded_under_the_largest_searches_the_schema_allows(
        operator: Operator, kube: Kube) -> None:
    """A 7 x 10 grid with maxTrials 2 once took the operator to 2.9 GB within 40 s. Now: the
    largest grid admission takes, the most parameters with the most values for random and tpe,
    the most trials, the longest strings; each search gets a phase, and RSS is printed."""
    from mentor.api.tuning import CHOICE, MAX_GRID_POINTS, TUNABLE

    numeric = [p for p in TUNABLE if p not in CHOICE][:16]
    widest = [{"path": p, "values": search_values(p, 64)} for p in numeric]
    at_limit = [{"path": p, "values": search_values(p, 10)} for p in numeric[:5]]
    assert MAX_GRID_POINTS == 10 ** 5
    searches = {
        "grid-at-limit": {"algorithm": "grid", "maxTrials": 1000, "parameters": at_limit},
        "random-widest": {"algorithm": "random", "maxTrials": 1000, "parameters": widest},
        "tpe-widest": {"algorithm": "tpe", "maxTrials": 1000, "parameters": widest},
    }
    before = operator.rss_mib()
    for name, search in searches.items():
        kube.apply(tuning_job(name, search=search, budget={"maxGPUHours": 0.001},
                              output={"uri": "s3://" + "b" * 60 + "/" + "k" * 1900}))
    for name in searches:
        kube.wait(f"tuningjob/{name}", "jsonpath={.status.phase}", timeout=60)
    time.sleep(5)  # their reconciles, trials and resyncs go on meanwhile
    after = operator.rss_mib()
    print(f"operator RSS: {before:.0f} MiB before the adversarial searches, {after:.0f} MiB "
          "after")
    assert after < CHART_MEMORY_LIMIT_MIB, "the chart's limit would OOM-kill it"
    for name in searches:
        kube("delete", "tuningjob", name, "--wait=false")


@pytest.fixture
def this_control_plane(control_plane: ControlPlane,
                       monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The operator's one API client (mentor.controller.kube), in this process, pointed at the
    suite's control plane: another module's control plane may have set it before."""
    from mentor.controller import kube

    monkeypatch.setenv("KUBECONFIG", str(control_plane.kubeconfig))
    kube.api_client.cache_clear()
    yield
    kube.api_client.cache_clear()


def test_progress_writes_are_bounded_by_a_setting_not_by_the_number_of_jobs(
        control_plane: ControlPlane, crds: None, namespace: str,
        this_control_plane: None) -> None:
    """The flusher writes at most its budget a flush (MENTOR_STATUS_WRITES_PER_SECOND ×
    the interval), the longest-waiting job first; the others keep waiting, and a newer report
    merges into what waits, so that every job's turn comes, with its newest progress."""
    import datetime as dt

    from mentor.controller import server
    from mentor.decide.progress import apply_report, parse_report

    names = [f"p{i}" for i in range(5)]
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "List", "items": [training_job(n) for n in names]}))
    book = server.ProgressBook()
    now = dt.datetime.now(dt.UTC)

    def report(name: str, step: int) -> None:
        entry = book.jobs.setdefault((namespace, name), server.JobProgress(uid=name))
        entry.progress, entry.checkpoint = apply_report(
            parse_report({"step": step, "total_steps": 100, "loss": 2.0}), entry.progress,
            entry.checkpoint, now)
        entry.touch()

    for i, name in enumerate(names):
        report(name, i + 1)
        book.jobs[(namespace, name)].waiting_since = float(i)  # p0 has waited longest
    report("p3", 30)  # newer news for a job already waiting: merged, its place kept

    def written() -> dict[str, int]:
        jobs = json.loads(control_plane.kubectl("get", "trainingjobs", "-n", namespace,
                                                "-o", "json"))["items"]
        return {j["metadata"]["name"]: j["status"]["progress"]["step"] for j in jobs
                if "progress" in (j.get("status") or {})}

    server.flush(book, budget=2)
    assert written() == {"p0": 1, "p1": 2}
    server.flush(book, budget=2)
    assert written() == {"p0": 1, "p1": 2, "p2": 3, "p3": 30}
    server.flush(book, budget=2)
    assert written() == {"p0": 1, "p1": 2, "p2": 3, "p3": 30, "p4": 5}
    assert not any(entry.dirty for entry in book.jobs.values()), "nothing left waiting"
