"""What every reconcile does with an API error, whatever the kind it reconciles."""

from __future__ import annotations

import logging
from collections.abc import Callable

from kubernetes.client.exceptions import ApiException

from mentor.api.kinds import GROUP, VERSION, Kind
from mentor.controller import kube
from mentor.controller.cache import Jobs, Key
from mentor.controller.metrics import METRICS

log = logging.getLogger(__name__)
RETRY_SECONDS = 5.0


def guarded(kind: Kind, jobs: Jobs, key: Key,
            work: Callable[[], float | None]) -> float | None:
    """Run one reconcile of `kind`, timed; return when to look again (None: on a change).

    A 409 means the object changed since it was read: it is read again and decided at once. A
    namespace being deleted (or the object gone) is not an error at all. Any other API error is
    one log line, a count in mentor_reconcile_errors_total, and a retry in RETRY_SECONDS.
    """
    with METRICS.reconcile_seconds.labels(kind.kind).time():
        try:
            return work()
        except ApiException as e:
            if e.status == 404 or (e.status == 403 and "NamespaceTerminating" in str(e.body)):
                return None
            if e.status == 409:
                jobs.observe(kube.to_json(kube.custom().get_namespaced_custom_object(
                    GROUP, VERSION, key[0], kind.plural, key[1])))
                return 0.0
            METRICS.reconcile_errors.labels(kind.kind).inc()
            log.warning("reconcile of %s %s/%s: API error %s %s: %s", kind.kind, *key,
                        e.status, e.reason, str(e.body)[:300])
            return RETRY_SECONDS
