"""Trust figures: what one job or one tenant can cost everyone else, and what GPU time survives.

On the local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok with 8-GPU
nodes), with `mentor operator` as a subprocess (safety resync every 10 s, as a small cluster
would run it), it prints:

- **writes at rest**: status writes per job per minute for a Running job with no reports, a
  Suspended job, and a Succeeded job, and how far a suspended job's `activeSeconds` moved;
- **the largest grids**: the operator's peak RSS while a 7 x 10 grid with maxTrials 2 (the one
  that took the operator to 2.9 GB) and a grid at the admission limit are decided, or the API
  server's refusal where admission refuses them;
- **an evicted pod**: a pod of 8 GPUs that ends as `ContainerStatusUnknown` (no startedAt, no
  finishedAt, as a kubelet reports an eviction or a node shutdown): the GPU-seconds the ledger
  kept against the pod's own time (its startTime to its Ready=False transition).

Nothing here asserts: it prints figures. To measure another tree's operator (an earlier commit,
checked out with `git worktree add /tmp/before REV`), put its sources first:

    .venv/bin/python benchmarks/trust.py
    PYTHONPATH=/tmp/before/operator:/tmp/before/trainer .venv/bin/python benchmarks/trust.py \
        --crds /tmp/before/crds
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "cluster")]

from controlplane import ControlPlane, build_binaries, free_port  # noqa: E402
from harness import Kube, Operator, StatusWrites, training_job, tuning_job  # noqa: E402

WINDOW = 30.0  # seconds a job is watched at rest


def at_rest(cp: ControlPlane, kube: Kube) -> None:
    writes = StatusWrites(cp, kube.ns)
    for name in ("running", "suspended", "succeeded"):
        kube.apply(training_job(name, parallelism={"nodes": 1, "gpusPerNode": 1}))
        kube.wait(f"trainingjob/{name}", "condition=Running")
    kube("patch", "trainingjob", "suspended", "--type=merge", "-p",
         '{"spec":{"runPolicy":{"suspend":true}}}')
    kube.end_pods("succeeded", "succeed")
    kube.wait("trainingjob/suspended", "condition=Suspended")
    kube.wait("trainingjob/succeeded", "condition=Succeeded")
    kube.wait("pod/suspended-0", "delete")  # its time settled, its pod gone
    time.sleep(2)
    clock = float(kube.get("trainingjob", "suspended")["status"].get("ledger", {})
                  .get("activeSeconds", 0.0))
    start = time.monotonic()
    time.sleep(WINDOW)
    writes.stop()
    moved = float(kube.get("trainingjob", "suspended")["status"].get("ledger", {})
                  .get("activeSeconds", 0.0)) - clock
    print(f"\nstatus writes at rest, over {WINDOW:.0f} s (per job per minute):")
    for name in ("running", "suspended", "succeeded"):
        count = len(writes.since(name, start))
        print(f"  {name:<10} {count:>6} writes  {count * 60 / WINDOW:>8.1f}/min")
    print(f"  the suspended job's activeSeconds moved by {moved:,.1f} s in {WINDOW:.0f} s")


def peak_rss(op: Operator, seconds: float) -> float:
    peak, deadline = 0.0, time.monotonic() + seconds
    while time.monotonic() < deadline and op.proc and op.proc.poll() is None:
        peak = max(peak, op.rss_mib())
        time.sleep(0.5)
    return peak


def grids(cp: ControlPlane, kube: Kube, op: Operator) -> None:
    ten = {"method.lora.rank": [4.0 * v for v in range(1, 11)],
           "method.lora.alpha": [8.0 * v for v in range(1, 11)],
           "method.lora.dropout": [v / 100 for v in range(10)],
           "optimization.learningRate": [v * 1e-4 for v in range(1, 11)],
           "optimization.warmupSteps": [float(v) for v in range(10)],
           "optimization.weightDecay": [v / 100 for v in range(10)],
           "optimization.seed": [float(v) for v in range(10)]}
    parameters = [{"path": p, "values": values} for p, values in ten.items()]
    cases = {
        "7x10, maxTrials 2": {"algorithm": "grid", "maxTrials": 2, "parameters": parameters},
        "5x10 (at the limit)": {"algorithm": "grid", "maxTrials": 2,
                                "parameters": parameters[:5]},
    }
    print("\nthe operator under the largest grids:")
    for i, (label, search) in enumerate(cases.items()):
        before = op.rss_mib()
        done = subprocess.run(
            [str(cp.bin_dir / "kubectl"), "-n", kube.ns, "apply", "-f", "-"], env=cp.env(),
            input=json.dumps(tuning_job(f"grid-{i}", search=search)),
            capture_output=True, text=True, check=False)
        if done.returncode:
            print(f"  {label:<20} refused at admission: {done.stderr.strip()[:200]}")
            continue
        peak = peak_rss(op, 40)
        phase = (kube.get("tuningjob", f"grid-{i}").get("status") or {}).get("phase")
        alive = op.proc is not None and op.proc.poll() is None
        print(f"  {label:<20} RSS {before:.0f} MiB -> peak {peak:,.0f} MiB in 40 s; phase "
              f"{phase}; operator {'alive' if alive else 'DEAD'}")
        kube("delete", "tuningjob", f"grid-{i}", "--wait=false")


class LastSeen:
    """The last version of every pod of a namespace, from a watch: an evicted pod is settled
    and released within moments, sooner than a poll would see it Failed."""

    def __init__(self, cp: ControlPlane, namespace: str) -> None:
        from kubernetes import client, config, watch

        self.core = client.CoreV1Api(config.new_client_from_config(
            config_file=str(cp.kubeconfig)))
        self.watch, self.ns = watch.Watch(), namespace
        self.pods: dict[str, dict[str, Any]] = {}
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        with contextlib.suppress(Exception):  # the control plane going away at the end
            for event in self.watch.stream(self.core.list_namespaced_pod, self.ns):
                pod = event["raw_object"]
                self.pods[pod["metadata"]["uid"]] = pod

def parse(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def evicted(cp: ControlPlane, kube: Kube) -> None:
    seen = LastSeen(cp, kube.ns)
    kube.apply(training_job("evicted", parallelism={"nodes": 1, "gpusPerNode": 8},
                            runPolicy={"backoffLimit": 3}))
    kube.wait("trainingjob/evicted", "condition=Running")
    time.sleep(5)
    (pod,) = kube.pods("evicted")
    kube("annotate", "pod", pod["metadata"]["name"], "sim.mentor.dev/result=lost",
         "sim.mentor.dev/delay=0s", "--overwrite")
    uid, deadline = pod["metadata"]["uid"], time.monotonic() + 60
    while seen.pods.get(uid, {}).get("status", {}).get("phase") != "Failed":
        assert time.monotonic() < deadline, "the pod was never seen Failed"
        time.sleep(0.1)
    ended = seen.pods[uid]
    time.sleep(5)  # the pod's own event settles it at once; this is ample
    status = kube.get("trainingjob", "evicted")["status"]
    ready = next(c for c in ended["status"]["conditions"] if c["type"] == "Ready")
    started, stopped = parse(ended["status"]["startTime"]), parse(ready["lastTransitionTime"])
    assert started and stopped
    truth = 8 * (stopped - started).total_seconds()
    kept = float(status.get("ledger", {}).get("retiredGPUSeconds", 0.0))
    print(f"\nan evicted 8-GPU pod (ContainerStatusUnknown): the pod's own time "
          f"{truth:.1f} GPU-seconds, the ledger kept {kept:.1f}; restarts "
          f"{status.get('restarts', 0)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crds", type=Path, default=ROOT / "crds")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work, \
            ControlPlane(build_binaries(), work_dir=Path(work)) as cp:
        cp.kubectl("apply", "--server-side", "-f", str(args.crds))
        cp.wait_established("trainingjobs.mentor.dev", "tuningjobs.mentor.dev")
        port = free_port()
        op = Operator(cp, Path(work) / "operator.log", MENTOR_HTTP_HOST="127.0.0.1",
                      MENTOR_HTTP_PORT=str(port), MENTOR_RESYNC_SECONDS="10",
                      MENTOR_LEADER_ELECTION="false")
        op.start()
        cp.kubectl("create", "namespace", "trust")
        kube = Kube(cp, "trust")
        try:
            for scenario in (lambda: at_rest(cp, kube), lambda: grids(cp, kube, op),
                             lambda: evicted(cp, kube)):
                try:
                    scenario()
                except Exception as e:  # one scenario's failure is a figure too
                    print(f"  failed: {type(e).__name__}: {str(e)[:300]}")
        finally:
            op.stop()
        print(f"\noperator tracebacks: {len(op.errors())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
