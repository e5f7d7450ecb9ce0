"""Shared fixtures. The control plane is real: built from Go modules and started once a session."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from controlplane import GPU_PRODUCT, ControlPlane, build_binaries, free_port
from harness import PRICE, REPORT_KEY, Kube, Operator
from runner import config, run

REPO = Path(__file__).resolve().parents[1]


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




@pytest.fixture(scope="session")
def crds(control_plane: ControlPlane) -> None:
    control_plane.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    control_plane.wait_established("trainingjobs.mentor.dev", "tuningjobs.mentor.dev")


@pytest.fixture(scope="session")
def operator(control_plane: ControlPlane, crds: None,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    port = free_port()
    op = Operator(control_plane, tmp_path_factory.mktemp("operator") / "operator.log",
                  MENTOR_HTTP_HOST="127.0.0.1", MENTOR_HTTP_PORT=str(port),
                  MENTOR_REPORT_URL=f"http://127.0.0.1:{port}",
                  MENTOR_REPORT_KEY=REPORT_KEY, MENTOR_PROGRESS_INTERVAL="0.5",
                  MENTOR_GPU_PRICES=json.dumps({GPU_PRODUCT: PRICE}))
    op.http = f"http://127.0.0.1:{port}"
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


# `make test` runs the suites as three pytest processes side by side (tests/run_groups.sh), one
# per group below: most of the cluster suites wait on their servers' clocks (graceful
# deletion, the pod GC's quarantine) while the trainer's keep both cores busy, so together they
# take about the time of the longest group rather than the sum. Each group keeps its order, and
# the shared control plane starts once. `pytest` without --group runs them all, one by one.
GROUPS = {
    "shared-control-plane": "the suites on the session's control plane and operator",
    "own-control-planes": "the fault and chart suites, each on a control plane of its own",
    "local": "no cluster: the trainer, `mentor run`, the pure units",
}


def group_of(item: pytest.Item) -> str:
    if "control_plane" in item.fixturenames:  # type: ignore[attr-defined]
        return "shared-control-plane"
    if item.path.name in ("test_faults.py", "test_chart.py"):
        return "own-control-planes"
    return "local"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--group", choices=sorted(GROUPS), default=None,
                     help="run only this group of tests: " + "; ".join(
                         f"{name}: {what}" for name, what in GROUPS.items()))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    group = config.getoption("--group")
    if group is None:
        return
    kept = [item for item in items if group_of(item) == group]
    config.hook.pytest_deselected(items=[item for item in items if group_of(item) != group])
    items[:] = kept


def pytest_collection_finish(session: pytest.Session) -> None:
    """The fuzz set's specs take minutes to draw: start that now, beside the suites before it."""
    if any(item.path.name == "test_fuzz.py" for item in session.items):
        from fuzz_specs import start_drawing  # hypothesis is slow to import: only if needed

        start_drawing(session.config)


@pytest.fixture(scope="session")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny char model trained once by the real trainer, in Hugging Face format: the base
    that the trainer's tuning tests and the preference-tuning e2e test start from."""
    work = tmp_path_factory.mktemp("pretrained")
    out = work / "model"
    run(config(out, optimization={"steps": 150, "globalBatchSize": 32, "microBatchSize": 16,
                                  "evalInterval": 50, "evalBatches": 8},
               checkpointing={"intervalSteps": 1000}), work)
    return out
