"""Shared fixtures. The control plane is real: built from Go modules and started once a session."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from controlplane import ControlPlane, build_binaries


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """etcd, kube-apiserver, controller-manager, scheduler and kwok with 4 fake 8-GPU nodes."""
    bin_dir = build_binaries()
    work = tmp_path_factory.mktemp("k8s")
    with ControlPlane(bin_dir, work_dir=work) as cp:
        os.environ["KUBECONFIG"] = str(cp.kubeconfig)
        yield cp


@pytest.fixture
def namespace(control_plane: ControlPlane) -> Iterator[str]:
    """A fresh namespace whose default ServiceAccount exists, deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    control_plane.kubectl("create", "namespace", name)
    control_plane.kubectl("wait", "--for=create", "--timeout=60s", "-n", name,
                          "serviceaccount/default")
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false")
