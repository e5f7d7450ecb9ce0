"""What the operator exposes, on the real control plane: /metrics apart from the reports."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest
from controlplane import ControlPlane, free_port
from harness import Operator

pytestmark = pytest.mark.cluster


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as e:
        return e.code


def test_metrics_listen_on_a_port_of_their_own(
        control_plane: ControlPlane, operator: Operator, tmp_path: Path) -> None:
    """So that a NetworkPolicy can open the reports to every trainer and /metrics (every
    tenant's job names, losses and costs) to Prometheus alone."""
    http, metrics = free_port(), free_port()
    standby = Operator(control_plane, tmp_path / "op.log", MENTOR_HTTP_HOST="127.0.0.1",
                       MENTOR_HTTP_PORT=str(http), MENTOR_METRICS_PORT=str(metrics),
                       MENTOR_LEASE_NAME=operator.env["MENTOR_LEASE_NAME"])
    standby.start()
    try:
        assert status_of(f"http://127.0.0.1:{http}/metrics") == 404
        assert status_of(f"http://127.0.0.1:{metrics}/metrics") == 200
        assert status_of(f"http://127.0.0.1:{http}/readyz") == 200
    finally:
        standby.stop()
    assert not standby.errors()
