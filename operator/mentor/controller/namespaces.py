"""What Mentor makes once in each namespace that runs its jobs, rather than once per job: the
Secret with the namespace's report token and the NetworkPolicy around its trainer pods.

Neither is any job's child (a job's deletion leaves them for the next job). The operator
remembers where it made them, so a burst of jobs in one namespace costs one create of each, and
forgets at every safety resync, so that one a user deleted is made again within that period.
"""

from __future__ import annotations

import threading
from typing import Any

from kubernetes.client.exceptions import ApiException

from mentor.builders.pods import build_network_policy, build_report_secret
from mentor.controller import kube
from mentor.controller.settings import Settings
from mentor.controller.tokens import token_for


class NamespaceObjects:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._made: set[str] = set()
        self._lock = threading.Lock()

    def ensure(self, namespace: str) -> None:
        """Create the namespace's objects if this operator has not seen them there lately. An
        existing one (409) is taken as made: Mentor may create Secrets, never read them."""
        with self._lock:
            if namespace in self._made:
                return
        settings = self.settings
        if settings.report_url:
            _create(namespace,
                    build_report_secret(namespace, token_for(settings.report_key, namespace)))
        if settings.network_policy:
            _create(namespace, build_network_policy(namespace, settings))
        with self._lock:
            self._made.add(namespace)

    def forget(self) -> None:
        with self._lock:
            self._made.clear()


def _create(namespace: str, manifest: dict[str, Any]) -> None:
    try:
        kube.create(namespace, manifest)
    except ApiException as e:
        if e.status != 409:
            raise
