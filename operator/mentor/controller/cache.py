"""The operator's in-memory state: its jobs, their pods, and what it expects of them.

Reconciles read from here instead of the API server. Pods come from one list-and-watch, selected
by label on the server, so the operator never sees (or pays for) pods that are not Mentor's. Jobs
come from Kopf's watch and from the responses to Mentor's own status writes, whichever is newer,
so a reconcile never acts on a status older than the one it wrote. Expectations cover the gap
between a create or delete and the watch event that shows it (controller-runtime's
"expectations"): until the watch has caught up, a job is not reconciled, so no pod is created
twice and no rank is doubled.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import orjson
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from mentor.api.labels import CONFIG, JOB_KIND, JOB_NAME
from mentor.controller import kube

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, name) of a job
PAGE = 500  # pods per page of a list: memory stays bounded however many pods there are
EXPECTATION_TTL = 60.0  # seconds: a watch event that never came must not block a job forever
# A watch ends on the server after WATCH_SECONDS and is resumed from its last resourceVersion;
# the client gives up on a silent connection (an API server that died without a reset) a little
# later, so no failure of the network can leave the operator blind.
WATCH_SECONDS = 60
WATCH_READ_TIMEOUT = WATCH_SECONDS + 30


def slim(pod: dict[str, Any]) -> dict[str, Any]:
    """What the operator reads of a pod (mentor.decide.podview, JobRef.owns, the finalizer's
    release), without what it never does: managedFields, the trainer's config annotation, the
    containers' commands, environment and mounts, the volumes. Held whole, 10,000 pods were
    most of the operator's memory."""
    meta = without_managed_fields(pod["metadata"])
    annotations = meta.get("annotations")
    if annotations and CONFIG in annotations:
        meta["annotations"] = {k: v for k, v in annotations.items() if k != CONFIG}
    spec = pod.get("spec") or {}
    kept = {k: spec[k] for k in ("nodeName", "schedulingGates") if k in spec}
    kept["containers"] = [{"name": c.get("name"), "resources": c.get("resources") or {}}
                          for c in spec.get("containers") or []]
    return {"metadata": meta, "spec": kept, "status": pod.get("status") or {}}


def without_managed_fields(meta: dict[str, Any]) -> dict[str, Any]:
    """An object's metadata without managedFields, which the operator never reads (a third of
    a small job's size)."""
    return {k: v for k, v in meta.items() if k != "managedFields"}


def key_of(obj: dict[str, Any]) -> Key:
    meta = obj["metadata"]
    return meta["namespace"], meta["name"]


def version_of(obj: dict[str, Any]) -> int:
    """The resourceVersion as a number, to tell the newer of two reads (etcd's revision)."""
    try:
        return int(obj["metadata"].get("resourceVersion") or 0)
    except ValueError:
        return 0


class Jobs:
    """The newest known version of every job."""

    def __init__(self) -> None:
        self._jobs: dict[Key, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def observe(self, body: dict[str, Any]) -> None:
        key = key_of(body)
        if "managedFields" in body["metadata"]:
            body = {**body, "metadata": without_managed_fields(body["metadata"])}
        with self._lock:
            known = self._jobs.get(key)
            if known is None or known["metadata"].get("uid") != body["metadata"].get("uid") \
                    or version_of(body) >= version_of(known):
                self._jobs[key] = body

    def get(self, key: Key) -> dict[str, Any] | None:
        with self._lock:
            return self._jobs.get(key)

    def forget(self, key: Key) -> None:
        with self._lock:
            self._jobs.pop(key, None)

    def keys(self) -> list[Key]:
        with self._lock:
            return list(self._jobs)

    def all(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._jobs.values())


@dataclass
class Pods:
    """Every pod of a Mentor job, by job, from one label-selected list-and-watch per watched
    namespace (or one for the cluster). `on_change` gets the job of every pod that changes."""

    kind: str
    namespaces: tuple[str, ...]
    on_change: Callable[[Key], None]
    synced: threading.Event = field(default_factory=threading.Event)
    _pods: dict[Key, dict[str, dict[str, Any]]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)

    @property
    def selector(self) -> str:
        return f"{JOB_KIND}={self.kind},{JOB_NAME}"

    def of(self, key: Key) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._pods.get(key, {}).values())

    def start(self) -> None:
        scopes = self.namespaces or (None,)
        self._pending = len(scopes)
        for namespace in scopes:
            threading.Thread(target=self._run, args=(namespace,), daemon=True,
                             name=f"pods-{namespace or 'cluster'}").start()

    def stop(self) -> None:
        self._stop.set()

    # -- the watch

    def _run(self, namespace: str | None) -> None:
        first = True
        while not self._stop.is_set():
            try:
                version: str | None = self._list(namespace)
                if first:
                    first = False
                    with self._lock:
                        self._pending -= 1
                        if self._pending == 0:
                            self.synced.set()
                while version:  # resumed where it ended, until the version is too old
                    version = self._watch(namespace, version)
            except (ApiException, HTTPError, OSError, ValueError) as e:
                log.warning("pod watch (%s) broke: %s; listing again", namespace or "cluster",
                            getattr(e, "reason", e))
                self._stop.wait(1.0)
            except Exception:  # whatever it was, a dead watch thread would blind the operator
                log.exception("pod watch (%s) failed; listing again", namespace or "cluster")
                self._stop.wait(1.0)

    def _path(self, namespace: str | None, **query: str | int) -> str:
        scope = f"/namespaces/{namespace}" if namespace else ""
        return f"/api/v1{scope}/pods?{urlencode({'labelSelector': self.selector, **query})}"

    def _list(self, namespace: str | None) -> str:
        """Replace what is known of this scope with a fresh list, page by page."""
        seen: dict[Key, dict[str, dict[str, Any]]] = {}
        token, version = "", ""
        while True:
            query: dict[str, str | int] = {"limit": PAGE, **({"continue": token} if token else {})}
            page = kube.request("GET", self._path(namespace, **query))
            for pod in page["items"]:
                seen.setdefault(self._job(pod), {})[pod["metadata"]["name"]] = slim(pod)
            version = str(page["metadata"]["resourceVersion"])
            token = page["metadata"].get("continue") or ""
            if not token:
                break
        with self._lock:
            changed = {k for k in self._pods if k[0] == namespace or namespace is None}
            for k in changed:
                self._pods.pop(k)
            self._pods.update(seen)
        for k in changed | set(seen):
            self.on_change(k)
        return version

    def _watch(self, namespace: str | None, version: str) -> str | None:
        """Apply the watch's events; the resourceVersion to resume from, or None to list."""
        lines = kube.stream(self._path(namespace, watch="true", resourceVersion=version,
                                       allowWatchBookmarks="true",
                                       timeoutSeconds=WATCH_SECONDS), WATCH_READ_TIMEOUT)
        try:
            for line in lines:
                if self._stop.is_set():
                    return None
                event = orjson.loads(line)
                kind, pod = event["type"], event["object"]
                if kind == "ERROR":
                    return None  # most often 410 Gone: list again
                version = pod["metadata"]["resourceVersion"]
                if kind == "BOOKMARK":
                    continue
                key = self._job(pod)
                pod = slim(pod)
                with self._lock:
                    self._apply(key, kind, pod)
                self.on_change(key)
        finally:
            lines.close()  # a stream left early gives up its connection now
        return version

    def _apply(self, key: Key, kind: str, pod: dict[str, Any]) -> None:
        """One watch event, never over a newer version of the pod nor over a newer pod of the
        same name (a restart reuses names): a relist may have shown more than the stream."""
        pods = self._pods.setdefault(key, {})
        meta = pod["metadata"]
        known = pods.get(meta["name"])
        if known is not None:
            same = known["metadata"]["uid"] == meta["uid"]
            if same and version_of(known) > version_of(pod):
                return  # older than what a relist showed
            if not same and kind == "DELETED":
                return  # an older pod of that name went; the newer one stays
        if kind == "DELETED":
            pods.pop(meta["name"], None)
            if not pods:
                del self._pods[key]
        else:
            pods[meta["name"]] = pod

    def refresh(self) -> None:
        """List every pod again, now: a replica that has just become the leader decides from a
        view at least as new as the moment it took over (its watch may lag its job watch)."""
        for namespace in self.namespaces or (None,):
            self._list(namespace)

    @staticmethod
    def _job(pod: dict[str, Any]) -> Key:
        return pod["metadata"]["namespace"], pod["metadata"]["labels"][JOB_NAME]


@dataclass
class Expectation:
    created: set[str]
    deleted: set[str]
    since: float


class Expectations:
    """Pods a job's last reconcile created or deleted, until the watch shows it happened."""

    def __init__(self) -> None:
        self._expected: dict[Key, Expectation] = {}
        self._lock = threading.Lock()

    def expect(self, key: Key, created: list[str], deleted: list[str]) -> None:
        if not created and not deleted:
            return
        with self._lock:
            self._expected[key] = Expectation(set(created), set(deleted), time.monotonic())

    def met(self, key: Key, pods: list[dict[str, Any]]) -> bool:
        with self._lock:
            expected = self._expected.get(key)
            if expected is None:
                return True
            names = {p["metadata"]["name"] for p in pods}
            gone = {p["metadata"]["name"] for p in pods
                    if p["metadata"].get("deletionTimestamp")} | (expected.deleted - names)
            if (expected.created <= names and expected.deleted <= gone) or \
                    time.monotonic() - expected.since > EXPECTATION_TTL:
                del self._expected[key]
                return True
            return False

    def forget(self, key: Key) -> None:
        with self._lock:
            self._expected.pop(key, None)
