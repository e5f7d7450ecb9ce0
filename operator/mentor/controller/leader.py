"""Leader election over a coordination.k8s.io Lease: of the operator's replicas, one works.

Every replica watches (its memory stays warm for a quick takeover), but only the holder of the
Lease runs the work queue, the safety resync and the progress flusher. The holder renews the
Lease every `retry` seconds; a replica that sees the same record for `duration` seconds (by its
own clock, so clock skew between nodes does not matter) takes it over. A leader that cannot renew
within `deadline` seconds stops at once, as client-go's leaders do: it may no longer be the only
one working, and a fresh process is cheap next to two replicas writing the same jobs.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException

from mentor.controller import kube

log = logging.getLogger(__name__)


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def identity() -> str:
    """This replica, unique even for two processes on one host."""
    return f"{os.environ.get('MENTOR_POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"


@dataclass
class Leadership:
    name: str
    namespace: str
    duration: float = 15.0
    deadline: float = 10.0
    retry: float = 2.0
    me: str = field(default_factory=identity)
    on_lost: Callable[[], None] = field(default=lambda: os._exit(1))
    on_acquired: Callable[[], None] = field(default=lambda: None)
    acquired: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _seen: tuple[Any, float] = (None, 0.0)  # the holder's last record, and when it changed

    @property
    def timeout(self) -> float:
        """Of one Lease request: a renewal that hangs, with urllib3's three retries, must still
        end before the deadline."""
        return max(self.deadline / 5, 0.5)

    @property
    def is_leader(self) -> bool:
        return self.acquired.is_set()

    def start(self) -> None:
        threading.Thread(target=self._run, daemon=True, name="leader-election").start()

    def stop(self) -> None:
        """Give the Lease up, so that a standby takes over now rather than after `duration`."""
        self._stop.set()
        if not self.acquired.is_set():
            return
        try:
            lease = kube.to_json(self._api().read_namespaced_lease(self.name, self.namespace))
            if lease["spec"].get("holderIdentity") == self.me:
                lease["spec"].update(holderIdentity=None, leaseDurationSeconds=1)
                self._api().replace_namespaced_lease(self.name, self.namespace, lease)
        except ApiException as e:
            log.warning("could not release the lease: %s", e.reason)

    def _run(self) -> None:
        renewed = 0.0
        while not self._stop.is_set():
            try:
                held = self._try()
            except Exception as e:  # the API server away: keep trying, within the deadline
                log.warning("leader election: %s", getattr(e, "reason", e))
                held = False
            if held:
                renewed = time.monotonic()
                if not self.acquired.is_set():
                    log.info("leading as %s (lease %s/%s)", self.me, self.namespace, self.name)
                    self.acquired.set()
                    self.on_acquired()
            elif self.acquired.is_set() and time.monotonic() - renewed > self.deadline:
                log.error("lost the lease %s/%s: stopping, so that one replica works",
                          self.namespace, self.name)
                self.on_lost()
                return
            self._stop.wait(self.retry)

    @staticmethod
    def _api() -> Any:
        from kubernetes.client import CoordinationV1Api

        return CoordinationV1Api(kube.api_client())

    def _try(self) -> bool:
        """Acquire or renew; True if this replica holds the Lease now."""
        api = self._api()
        now = _now()
        try:
            lease = kube.to_json(api.read_namespaced_lease(self.name, self.namespace,
                                                           _request_timeout=self.timeout))
        except ApiException as e:
            if e.status != 404:
                raise
            body = {"metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": {"holderIdentity": self.me, "leaseDurationSeconds": int(self.duration),
                             "acquireTime": now, "renewTime": now, "leaseTransitions": 0}}
            return _unless_conflict(lambda: api.create_namespaced_lease(
                self.namespace, body, _request_timeout=self.timeout))
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        if holder and holder != self.me:
            record = (holder, spec.get("renewTime"))
            if record != self._seen[0]:
                self._seen = (record, time.monotonic())
            expires = spec.get("leaseDurationSeconds") or self.duration
            if time.monotonic() - self._seen[1] < expires:
                return False
        if holder != self.me:
            spec.update(acquireTime=now, leaseTransitions=(spec.get("leaseTransitions") or 0) + 1)
        spec.update(holderIdentity=self.me, renewTime=now,
                    leaseDurationSeconds=int(self.duration))
        lease["spec"] = spec
        # The read's resourceVersion makes this a compare-and-swap: of two replicas taking over
        # at once, one gets a 409.
        return _unless_conflict(lambda: api.replace_namespaced_lease(
            self.name, self.namespace, lease, _request_timeout=self.timeout))


def _unless_conflict(write: Callable[[], Any]) -> bool:
    """True if the write went through; False if another replica wrote first."""
    try:
        write()
        return True
    except ApiException as e:
        if e.status == 409:
            return False
        raise
