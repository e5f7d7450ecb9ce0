"""A burst of jobs at once: every job gets exactly its pods, one per rank, and no more."""

from __future__ import annotations

import json
import time
from collections import defaultdict

import pytest
from harness import Kube, training_job

pytestmark = pytest.mark.cluster

BURST = 100


def test_a_burst_of_100_jobs_gets_exactly_two_pods_each(kube: Kube) -> None:
    jobs = [training_job(f"burst-{i}", parallelism={"nodes": 2, "gpusPerNode": 1})
            for i in range(BURST)]
    kube("apply", "--server-side", "-f", "-",
         input=json.dumps({"apiVersion": "v1", "kind": "List", "items": jobs}))

    def pods() -> list[dict[str, object]]:
        out = kube("get", "pods", "-l", "mentor.dev/job-kind=TrainingJob", "-o", "json")
        return list(json.loads(out)["items"])

    deadline = time.monotonic() + 300
    while len(found := pods()) < 2 * BURST:
        assert time.monotonic() < deadline, f"{len(found)} of {2 * BURST} pods after 300 s"
        time.sleep(1)
    time.sleep(5)  # a late duplicate would show now
    found = pods()
    by_job: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for pod in found:
        meta = pod["metadata"]
        assert isinstance(meta, dict)
        by_job[meta["labels"]["mentor.dev/job-name"]].append(
            (meta["name"], meta["labels"]["mentor.dev/node-rank"]))
    assert len(found) == 2 * BURST, "no pod created twice"
    for i in range(BURST):
        assert sorted(by_job[f"burst-{i}"]) == [(f"burst-{i}-0", "0"), (f"burst-{i}-1", "1")]
    phases = json.loads(kube("get", "trainingjobs", "-o", "json"))["items"]
    assert all(j.get("status", {}).get("phase") for j in phases), "every job has a status"
