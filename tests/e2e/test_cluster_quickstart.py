"""The README's cluster quickstart, as written: the storage, the data-loading Job, the job.

The manifests are applied exactly as they ship in examples/. Only what a real cluster provides
is stood in for: PersistentVolumes (a provisioner's work) on the node agent's disk, and the fake
kwok nodes are cordoned, since the quickstart names no node and would otherwise land on a node
where nothing runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import Kube
from node_agent import NodeAgent

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MENTOR = str(Path(sys.executable).with_name("mentor"))


@pytest.fixture
def only_the_agents_node(control_plane: Any, agent: NodeAgent) -> Iterator[None]:
    nodes = json.loads(control_plane.kubectl("get", "nodes", "-l", "type=kwok", "-o", "json"))
    names = [n["metadata"]["name"] for n in nodes["items"]]
    control_plane.kubectl("cordon", *names)
    yield
    control_plane.kubectl("uncordon", *names)


def provision(kube: Kube, pvc_root: Path, claims: Path) -> None:
    """What a provisioner does: a volume for each claim, here a directory of the node's disk."""
    for claim in yaml.safe_load_all(claims.read_text()):
        name = claim["metadata"]["name"]
        (pvc_root / name).mkdir(exist_ok=True)
        kube.cp.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": f"{kube.ns}-{name}"},
            "spec": {"capacity": claim["spec"]["resources"]["requests"],
                     "accessModes": claim["spec"]["accessModes"], "storageClassName": "",
                     "hostPath": {"path": str(pvc_root / name)},
                     "claimRef": {"namespace": kube.ns, "name": name}}}))


def test_the_cluster_quickstart_works_as_written(kube: Kube, agent: NodeAgent, pvc_root: Path,
                                                 only_the_agents_node: None) -> None:
    provision(kube, pvc_root, EXAMPLES / "cluster" / "storage.yaml")
    kube("apply", "-f", str(EXAMPLES / "cluster" / "storage.yaml"))
    for claim in ("datasets", "models"):
        kube.wait(f"pvc/{claim}", "jsonpath={.status.phase}=Bound")

    kube("apply", "-f", str(EXAMPLES / "cluster" / "load-shakespeare.yaml"))
    kube.wait("job/load-shakespeare", "condition=Complete", timeout=600)
    plays = sorted((pvc_root / "datasets" / "shakespeare").glob("*.txt"))
    assert len(plays) == 42, agent.log(kube.pods_of_job("load-shakespeare")[0])

    kube("apply", "-f", str(EXAMPLES / "quickstart.yaml"))
    kube.wait("trainingjob/quickstart", "condition=Succeeded", timeout=900)
    status = kube.get("trainingjob", "quickstart")["status"]
    assert status["progress"]["step"] == 400
    assert status["progress"]["evalLoss"] < 2.4

    # What `kubectl cp models-browser:/models/quickstart .` brings back, read as a user would.
    output = pvc_root / "models" / "quickstart"
    assert (output / "model.safetensors").exists()
    report = subprocess.run([MENTOR, "report", str(output)], capture_output=True, text=True,
                            check=False)
    assert report.returncode == 0, report.stderr
    assert "quickstart: succeeded at step 400/400" in report.stdout
    sample = subprocess.run([MENTOR, "generate", str(output), "--prompt", "ROMEO:",
                             "--tokens", "40"], capture_output=True, text=True, check=False)
    assert sample.returncode == 0 and sample.stdout.startswith("ROMEO:"), sample.stderr
