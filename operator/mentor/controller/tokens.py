"""Who may report a job's progress: a token per namespace, an HMAC of its name under the
operator's key.

The operator can check a report without storing or reading any secret but its key; the token
reaches the pods through one Secret in the namespace (mentor.api.labels.REPORT_SECRET), made
once, not one per job: a pod that can read it runs in that namespace, whose users may create
pods and jobs there anyway. The key itself is kept in one Secret of the operator's namespace
(`stored_key`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from kubernetes.client.exceptions import ApiException

from mentor.controller import kube


def stored_key(namespace: str, name: str) -> bytes:
    """The report key kept in a Secret of the operator's namespace, made on first start.

    Kept by the operator rather than rendered by the chart, so that `helm template`, Argo CD and
    Flux never make a new one (which would orphan every running job's token); replicas agree
    on it because a create that loses the race reads the winner's."""
    core = kube.core()
    for _ in range(3):
        try:
            secret = core.read_namespaced_secret(name, namespace)
            return base64.b64decode(secret.data["key"])
        except ApiException as e:
            if e.status != 404:
                raise
        try:
            core.create_namespaced_secret(namespace, {
                "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "mentor"}},
                "type": "Opaque",
                "stringData": {"key": secrets.token_urlsafe(36)}})
        except ApiException as e:
            if e.status != 409:
                raise
    raise RuntimeError(f"could not read or create the report key Secret {namespace}/{name}")


def token_for(key: bytes, namespace: str) -> str:
    return hmac.new(key, namespace.encode(), hashlib.sha256).hexdigest()


def authorized(key: bytes, namespace: str, header: str | None) -> bool:
    if not header or not header.startswith("Bearer "):
        return False
    # Bytes, not str: compare_digest raises on a str that is not ASCII (a 500, and a traceback).
    given = header.removeprefix("Bearer ").strip().encode("utf-8", "replace")
    return hmac.compare_digest(token_for(key, namespace).encode(), given)
