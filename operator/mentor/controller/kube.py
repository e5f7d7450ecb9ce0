"""The operator's one API client.

Every call, from every thread, goes through one `ApiClient` and so one connection pool: a
connection and its TLS handshake serve many calls, where a client per call paid for both every
time. The configuration is the in-cluster one, or the kubeconfig outside a cluster.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Generator, Iterator
from typing import Any, cast

import orjson
import urllib3
from kubernetes import client
from kubernetes import config as kube_config
from kubernetes.client import rest
from kubernetes.client.exceptions import ApiException

from mentor.api.kinds import GROUP, VERSION
from mentor.controller import transport
from mentor.controller.transport import Transport

SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
# Connections kept open to the API server: the reconcile workers, the progress flusher and the
# pod watches all share them.
POOL_SIZE = 32
PAGE = 500  # objects per page of a list
AUTH_SECONDS = 60.0  # how long one reading of the credentials serves (they rotate in hours)


@functools.cache
def api_client() -> client.ApiClient:
    configuration = client.Configuration()
    try:
        kube_config.load_incluster_config(  # type: ignore[no-untyped-call]
            client_configuration=configuration)
    except kube_config.ConfigException:
        # KUBECONFIG as it is now: the library reads it once, when it is first imported
        kube_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration)
    configuration.connection_pool_maxsize = POOL_SIZE
    return client.ApiClient(configuration)


# Typed Any: the generated signatures ask for model objects, and Mentor passes the wire JSON its
# builders make (which the client sends as it is) and reads the JSON back.
def core() -> Any:
    return client.CoreV1Api(api_client())


def custom() -> Any:
    return client.CustomObjectsApi(api_client())


def request(method: str, path: str, body: Any = None,
            content_type: str = "application/json", answer: bool = True) -> dict[str, Any]:
    """One call with wire JSON in and out, through the shared connections; `answer=False` reads
    the answer but does not decode it (a created pod comes back whole, and is seen on the watch).

    The generated client validates every body into its models, walks it again to serialize it,
    and decodes every answer into its models: for the operator's hot path (pods, Services,
    Events and status writes) that was most of its CPU per job, for objects it builds as JSON
    and reads from watches as JSON. Here the body goes out as orjson writes it, on the
    connections of `mentor.controller.transport` (or, behind a proxy, on the client's own
    urllib3 pool). An error is the client's own ApiException (status, body), so callers handle
    both alike."""
    client_ = api_client()
    headers = {**client_.default_headers, "Content-Type": content_type,
               "Accept": "application/json", **_credentials(client_)}
    data = None if body is None else orjson.dumps(body)
    wire = _transport(client_)
    if wire is not None:
        response: Any = wire.request(method, path, headers, data)
    else:
        try:
            raw = client_.rest_client.pool_manager.request(
                method, client_.configuration.host + path, headers=headers, body=data,
                preload_content=False)
        except urllib3.exceptions.HTTPError as e:  # as the generated client says a TLS error
            raise ApiException(status=0, reason=f"{type(e).__name__}\n{e}") from e
        response = rest.RESTResponse(raw)
        response.read()  # the connection goes back
    if not 200 <= response.status <= 299:
        ApiException.from_response(http_resp=response, body=None, data=None)
    return cast(dict[str, Any], orjson.loads(response.data)) \
        if response.data and answer else {}


def stream(path: str, timeout: float) -> Generator[bytes, None, None]:
    """The lines of a watch (a streamed GET of `path`, its query included) as they come, with
    `timeout` seconds of silence allowed; on the same connections as `request`."""
    client_ = api_client()
    headers = {**client_.default_headers, "Accept": "application/json",
               **_credentials(client_)}
    wire = _transport(client_)
    if wire is not None:
        return wire.stream(path, headers, timeout)
    return _stream_urllib3(client_, path, headers, timeout)


def _stream_urllib3(client_: client.ApiClient, path: str, headers: dict[str, str],
                    timeout: float) -> Generator[bytes, None, None]:
    """`stream` behind a proxy, on the generated client's pool."""
    raw = client_.rest_client.pool_manager.request(
        "GET", client_.configuration.host + path, headers=headers, preload_content=False,
        timeout=urllib3.Timeout(connect=10, read=timeout))
    try:
        if raw.status != 200:
            response = rest.RESTResponse(raw)
            response.read()  # type: ignore[no-untyped-call]
            ApiException.from_response(http_resp=response, body=None, data=None)
        yield from transport.lines(raw.stream(amt=None, decode_content=False))
    finally:
        raw.release_conn()


def _transport(client_: client.ApiClient) -> Transport | None:
    """The client's lean connections to its API server (made once, kept on the client), or
    None where a proxy (HTTP or SOCKS) stands between: that path stays urllib3's."""
    wire: Transport | None = getattr(client_, "mentor_transport", None)
    manager = client_.rest_client.pool_manager
    if wire is None and type(manager) is urllib3.PoolManager:
        host = client_.configuration.host
        wire = Transport(manager.connection_from_url(host),
                         urllib3.util.parse_url(host).netloc or "", POOL_SIZE)
        client_.mentor_transport = wire  # type: ignore[attr-defined]
    return wire


def _credentials(client_: client.ApiClient) -> dict[str, str]:
    """The bearer token's header, read at most once per AUTH_SECONDS: the client reads it again
    for every call (from a kubeconfig, by parsing the whole configuration again), which was a
    tenth of the operator's CPU per request. Kept on the client, so a new one reads afresh."""
    cached: tuple[float, dict[str, str]] | None = getattr(client_, "mentor_credentials", None)
    if cached is None or time.monotonic() - cached[0] > AUTH_SECONDS:
        token = client_.configuration.auth_settings().get("BearerToken") or {}
        header = {token["key"]: token["value"]} if token.get("value") else {}
        cached = (time.monotonic(), header)
        client_.mentor_credentials = cached  # type: ignore[attr-defined]
    return cached[1]


def create(namespace: str, body: dict[str, Any], answer: bool = True) -> dict[str, Any]:
    """Create a namespaced core or API-group object from its manifest (apiVersion, kind)."""
    return request("POST", collection(body["apiVersion"], body["kind"], namespace), body,
                   answer=answer)


def collection(api_version: str, kind: str, namespace: str) -> str:
    """The URL path of a namespaced kind's collection (plurals: the kinds Mentor writes)."""
    plural = {"Pod": "pods", "Service": "services", "Secret": "secrets", "Event": "events",
              "NetworkPolicy": "networkpolicies", "TrainingJob": "trainingjobs",
              "TuningJob": "tuningjobs"}[kind]
    root = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    return f"{root}/namespaces/{namespace}/{plural}"


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


def remove_finalizer(meta: dict[str, Any], finalizer: str, api_version: str, kind: str) -> None:
    """Remove one finalizer by a JSON patch that tests its place first, so no other finalizer
    (nor a newer list) is touched. An object that is gone or changed (404, 409, 422) is left to
    its next event."""
    finalizers = meta.get("finalizers") or []
    if finalizer not in finalizers:
        return
    at = f"/metadata/finalizers/{finalizers.index(finalizer)}"
    path = f"{collection(api_version, kind, meta['namespace'])}/{meta['name']}"
    try:
        request("PATCH", path, [{"op": "test", "path": at, "value": finalizer},
                                {"op": "remove", "path": at}], "application/json-patch+json")
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
    return request("PATCH", status_path(plural, meta["namespace"], meta["name"]), patch,
                   "application/merge-patch+json")


def status_path(plural: str, namespace: str, name: str) -> str:
    """The URL path of a Mentor job's status subresource."""
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{plural}/{name}/status"


def own_namespace() -> str:
    """The namespace of the pod this runs in, from its service account; "default" outside."""
    try:
        with open(SERVICE_ACCOUNT_NAMESPACE) as f:
            return f.read().strip() or "default"
    except OSError:
        return "default"
