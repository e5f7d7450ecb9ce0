"""The operator's one API client.

Every call, from every thread, goes through one `ApiClient` and so one connection pool: a
connection and its TLS handshake serve many calls, where a client per call paid for both every
time. The configuration is the in-cluster one, or the kubeconfig outside a cluster.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from typing import Any, cast

from kubernetes import client
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException

from mentor.api.kinds import GROUP, VERSION

SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
# Connections kept open to the API server: the reconcile workers, the progress flusher and the
# pod watches all share them.
POOL_SIZE = 32
PAGE = 500  # objects per page of a list


@functools.cache
def api_client() -> client.ApiClient:
    configuration = client.Configuration()
    try:
        kube_config.load_incluster_config(  # type: ignore[no-untyped-call]
            client_configuration=configuration)
    except kube_config.ConfigException:
        kube_config.load_kube_config(  # type: ignore[no-untyped-call]
            client_configuration=configuration)
    configuration.connection_pool_maxsize = POOL_SIZE
    return client.ApiClient(configuration)


# Typed Any: the generated signatures ask for model objects, and Mentor passes the wire JSON its
# builders make (which the client sends as it is) and reads the JSON back.
def core() -> Any:
    return client.CoreV1Api(api_client())


def custom() -> Any:
    return client.CustomObjectsApi(api_client())


def networking() -> Any:
    return client.NetworkingV1Api(api_client())


def list_all(group: str, version: str, plural: str,
             namespaces: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    """Every object of a custom kind in `namespaces` (all, if empty), page by page, so memory
    holds one page however many there are."""
    api = custom()
    for namespace in namespaces or (None,):
        token = None
        while True:
            if namespace:
                page = api.list_namespaced_custom_object(group, version, namespace, plural,
                                                         limit=PAGE, _continue=token)
            else:
                page = api.list_cluster_custom_object(group, version, plural, limit=PAGE,
                                                      _continue=token)
            yield from page["items"]
            token = page["metadata"].get("continue")
            if not token:
                break


def to_json(obj: Any) -> dict[str, Any]:
    """A model object (V1Pod, ...) as the API server's JSON."""
    return cast(dict[str, Any],
                api_client().sanitize_for_serialization(obj))  # type: ignore[no-untyped-call]


def error_body(e: ApiException) -> dict[str, Any]:
    """An API error's Status object (message, reason, details.causes), or {} if it has none."""
    try:
        body = json.loads(e.body or "{}")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def remove_finalizer(meta: dict[str, Any], finalizer: str,
                     patch: Callable[[str, str, list[dict[str, Any]]], Any]) -> None:
    """Remove one finalizer by a JSON patch that tests its place first, so no other finalizer
    (nor a newer list) is touched; `patch(name, namespace, ops)` sends it to the object. An
    object that is gone or changed (404, 409, 422) is left to its next event."""
    finalizers = meta.get("finalizers") or []
    if finalizer not in finalizers:
        return
    at = f"/metadata/finalizers/{finalizers.index(finalizer)}"
    try:
        patch(meta["name"], meta["namespace"],
              [{"op": "test", "path": at, "value": finalizer}, {"op": "remove", "path": at}])
    except ApiException as e:
        if e.status not in (404, 409, 422):
            raise


def merge_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns `old` into `new`. A key that `new` no longer
    has is sent as null: left out, the server would keep it, and a status field the decision
    cleared (`ledger.activeSince` of a suspended job, the `bestTrial` of a deleted trial) would
    come back on every read and be decided on again, for ever."""
    patch: dict[str, Any] = dict.fromkeys(old.keys() - new.keys())
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            inner = merge_patch(before, value)
            if inner:
                patch[key] = inner
        elif key not in old or before != value:
            patch[key] = value
    return patch


def patch_status(plural: str, body: dict[str, Any], old: dict[str, Any],
                 new: dict[str, Any]) -> dict[str, Any]:
    """Write the status change from `old` to `new`, only over the version it was decided from:
    a status another replica (or this one, before a restart) wrote since is never overwritten;
    the 409 is decided again. Returns the object as written."""
    meta = body["metadata"]
    patch = {"metadata": {"resourceVersion": meta["resourceVersion"]},
             "status": merge_patch(old, new)}
    return cast(dict[str, Any], custom().patch_namespaced_custom_object_status(
        GROUP, VERSION, meta["namespace"], plural, meta["name"], patch))


def own_namespace() -> str:
    """The namespace of the pod this runs in, from its service account; "default" outside."""
    try:
        with open(SERVICE_ACCOUNT_NAMESPACE) as f:
            return f.read().strip() or "default"
    except OSError:
        return "default"
