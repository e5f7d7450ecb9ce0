"""Fixtures of the cluster tests: the Mentor CRDs installed and the operator running for real."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from controlplane import ControlPlane
from harness import Kube, Operator

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def crds(control_plane: ControlPlane) -> None:
    control_plane.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    control_plane.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                          "crd/trainingjobs.mentor.dev")


@pytest.fixture(scope="session")
def operator(control_plane: ControlPlane, crds: None,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    op = Operator(control_plane, tmp_path_factory.mktemp("operator") / "operator.log")
    op.start()
    yield op
    op.stop()
    assert not op.errors(), op.log_path.read_text()[-5000:]


@pytest.fixture
def restricted_namespace(control_plane: ControlPlane) -> Iterator[str]:
    """A namespace that enforces the Pod Security `restricted` profile."""
    name = f"r-{uuid.uuid4().hex[:8]}"
    control_plane.kubectl("create", "namespace", name)
    control_plane.kubectl("label", "namespace", name,
                          "pod-security.kubernetes.io/enforce=restricted")
    control_plane.kubectl("wait", "--for=create", "--timeout=60s", "-n", name,
                          "serviceaccount/default")
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture
def kube(control_plane: ControlPlane, operator: Operator, restricted_namespace: str) -> Kube:
    return Kube(control_plane, restricted_namespace)
