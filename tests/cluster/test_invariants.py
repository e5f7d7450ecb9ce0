"""Invariants, not scenarios: whatever happened before, a job at rest is not written, and the
clock of a job that holds nothing stands still.

The operator under test is the suite's shared one (safety resync every second), watched by a
watch of the test's own (`harness.StatusWrites`), which sees every write the API server accepts.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from controlplane import ControlPlane
from harness import Kube, Operator, StatusWrites, training_job

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
    kube.wait("pod/paused-0", "delete")
    kube.wait("trainingjob/done", "condition=Succeeded")
    kube.wait("trainingjob/broken", "condition=Failed")
    time.sleep(2 * RESYNC_SECONDS)  # the last pods' settling writes land before the window

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
