"""Kubernetes Events on a job: what `kubectl describe` shows of why it waits, fails or restarts."""

from __future__ import annotations

import datetime as dt
import logging
import socket
from typing import Any

from kubernetes.client.exceptions import ApiException

from mentor.controller import kube
from mentor.decide.conditions import Event
from mentor.decide.times import format_time

log = logging.getLogger(__name__)


def post_events(body: dict[str, Any], events: list[Event]) -> None:
    """Record Kubernetes Events on the job. Best effort: a lost event never fails a reconcile."""
    meta = body["metadata"]
    now = format_time(dt.datetime.now(dt.UTC))
    for e in events:
        event = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": body["apiVersion"], "kind": body["kind"],
                               "name": meta["name"], "namespace": meta["namespace"],
                               "uid": meta["uid"]},
            "type": e.type, "reason": e.reason, "message": e.message[:1024],
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
            "source": {"component": "mentor-operator"},
            "reportingComponent": "mentor.dev/operator", "reportingInstance": socket.gethostname(),
        }
        try:
            kube.create(meta["namespace"], event, answer=False)
        except ApiException as error:
            log.warning("could not record event %s on %s: %s", e.reason, meta["name"],
                        error.reason)
