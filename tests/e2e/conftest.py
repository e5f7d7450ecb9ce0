"""The e2e fixtures: a node agent that runs pods as real processes, and claims bound to its disk."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import Kube
from mlflow_server import MlflowServer
from node_agent import NodeAgent

from testdata import SHAKESPEARE


@pytest.fixture(scope="module")
def pvc_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The node's disk: a claim is the directory <pvc_root>/<claim>."""
    return tmp_path_factory.mktemp("pvc")


@pytest.fixture(scope="module")
def agent(control_plane: Any, pvc_root: Path) -> Iterator[NodeAgent]:
    from kubernetes import config

    api = config.new_client_from_config(str(control_plane.kubeconfig))
    node = NodeAgent("local-node", pvc_root, api)
    node.start()
    yield node
    node.stop()


@pytest.fixture(scope="module")
def plays(pvc_root: Path) -> None:
    """pvc://datasets/plays.txt: the first 300 kB of the plays."""
    (pvc_root / "datasets").mkdir(exist_ok=True)
    (pvc_root / "datasets" / "plays.txt").write_text(SHAKESPEARE.read_text()[:300_000])


@pytest.fixture
def claims(kube: Kube, pvc_root: Path) -> None:
    """The `datasets` and `models` claims, bound to volumes that are directories of pvc_root."""
    for claim in ("datasets", "models"):
        (pvc_root / claim).mkdir(exist_ok=True)
        volume = f"{kube.ns}-{claim}"
        kube.apply({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": volume},
                    "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"],
                             "storageClassName": "manual",
                             "hostPath": {"path": str(pvc_root / claim)},
                             "claimRef": {"namespace": kube.ns, "name": claim}}})
        kube.apply({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                    "metadata": {"name": claim},
                    "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "manual",
                             "volumeName": volume,
                             "resources": {"requests": {"storage": "1Gi"}}}})
        kube.wait(f"pvc/{claim}", "jsonpath={.status.phase}=Bound")


@pytest.fixture(scope="session")
def mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A real MLflow server on loopback (sqlite store, artifact proxy), shared by the session."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    server.start()
    yield server
    server.stop()
