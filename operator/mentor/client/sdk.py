"""`mentor.Client`: submit, watch and manage jobs on a cluster from Python.

It reads the kubeconfig (or the in-cluster config) as kubectl does, and speaks to the API server
only: jobs are built from the same `mentor.api` models the CRDs come from, validated as the API
server would before they are sent, and every API failure becomes one typed, one-line error.

    from mentor import Client

    client = Client(namespace="team-a")
    client.train("shakespeare", model={"size": "tiny", "tokenizer": "char"},
                 data={"source": "pvc://datasets/shakespeare"}, optimization={"steps": 400},
                 output={"uri": "pvc://models/shakespeare"})
    job = client.wait("shakespeare", progress=lambda j: print(j.progress.get("step")))
    for line in client.logs("shakespeare"):
        print(line)
"""

from __future__ import annotations

import builtins
import datetime as dt
import os
import queue
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

from kubernetes import client as k8s
from kubernetes import config as kube_config
from kubernetes import watch
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from mentor.api.kinds import GROUP, KINDS, TRAINING_JOB, TUNING_JOB, VERSION, Kind
from mentor.api.labels import JOB_KIND, JOB_NAME, NODE_RANK, TRAINER_CONTAINER, TRIAL_NUMBER
from mentor.api.labels import TUNING_JOB as TUNING_LABEL
from mentor.api.validation import InvalidJob, validate
from mentor.controller.kube import error_body, own_namespace

TERMINAL = ("Succeeded", "Failed", "Stopped")
# What a name may be prefixed with, as kubectl takes it: `tuningjob/x`, `tj/x`, `mtj/x`, ...
ALIASES = {alias: kind for kind in KINDS for alias in
           (kind.kind.lower(), kind.plural, f"{kind.plural}.{GROUP}", *kind.short_names)}


class MentorError(Exception):
    """A failure of a Mentor call, said in one line."""


def parse_ref(ref: str) -> tuple[Kind, str]:
    """`NAME` (a TrainingJob), or `KIND/NAME` with any of the kinds' names or short names."""
    if "/" not in ref:
        return TRAINING_JOB, ref
    alias, name = ref.split("/", 1)
    kind = ALIASES.get(alias.lower())
    if kind is None:
        raise MentorError(f"{alias!r} is not a Mentor kind: use one of "
                          f"{', '.join(sorted(ALIASES))}")
    return kind, name


class ClusterUnreachable(MentorError):
    """No API server answered."""


class JobNotFound(MentorError):
    """No job of that name in that namespace."""


class SpecRefused(MentorError):
    """The job was refused, field by field (locally or by the API server's schema and CEL)."""

    def __init__(self, message: str, errors: list[str]) -> None:
        super().__init__(message)
        self.errors = errors


class Forbidden(MentorError):
    """RBAC said no; the message names the verb and the resource."""


class JobFailed(MentorError):
    """The job ended Failed; `reason` and `message` are its Failed condition's."""

    def __init__(self, job: Job) -> None:
        failed = job.condition("Failed") or job.condition("Stopped")
        self.job, self.reason, self.message = job, failed.get("reason", ""), \
            failed.get("message", "")
        ended = "was stopped" if job.is_("Stopped") else "failed"
        super().__init__(f"{job.title} {ended}: {self.reason}: {self.message}")


@dataclass(frozen=True)
class Job:
    """A job as the API server returns it, with its most used parts at hand."""

    raw: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.raw["metadata"]["name"])

    @property
    def namespace(self) -> str:
        return str(self.raw["metadata"]["namespace"])

    @property
    def kind(self) -> Kind:
        return TUNING_JOB if self.raw.get("kind") == TUNING_JOB.kind else TRAINING_JOB

    @property
    def ref(self) -> str:
        """`trainingjob/NAME` or `tuningjob/NAME`, as kubectl names it."""
        return f"{self.kind.kind.lower()}/{self.name}"

    @property
    def title(self) -> str:
        """`trainingjob NAME`, as the messages say it."""
        return f"{self.kind.kind.lower()} {self.name}"

    @property
    def status(self) -> dict[str, Any]:
        return cast(dict[str, Any], self.raw.get("status") or {})

    @property
    def phase(self) -> str:
        return str(self.status.get("phase") or "")

    @property
    def progress(self) -> dict[str, Any]:
        return cast(dict[str, Any], self.status.get("progress") or {})

    def condition(self, type_: str) -> dict[str, Any]:
        return next((c for c in self.status.get("conditions", []) if c["type"] == type_), {})

    def is_(self, type_: str) -> bool:
        return self.condition(type_).get("status") == "True"


@dataclass
class Client:
    """A cluster's Mentor jobs, in one namespace (the kubeconfig context's, by default)."""

    namespace: str | None = None
    kubeconfig: str | None = None
    context: str | None = None
    api: k8s.ApiClient = field(init=False, repr=False)

    def __post_init__(self) -> None:
        try:
            kube_config.load_incluster_config()  # type: ignore[no-untyped-call]
            configuration = k8s.Configuration.get_default_copy()
            default_namespace = own_namespace()
        except kube_config.ConfigException:
            configuration = k8s.Configuration()
            # $KUBECONFIG as it is now: the client library reads it once, when imported.
            path = self.kubeconfig or os.environ.get("KUBECONFIG")
            try:
                kube_config.load_kube_config(  # type: ignore[no-untyped-call]
                    config_file=path, context=self.context, client_configuration=configuration)
                contexts, active = kube_config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
                    path)
                if self.context:
                    active = next(c for c in contexts if c["name"] == self.context)
                default_namespace = active.get("context", {}).get("namespace") or "default"
            except (kube_config.ConfigException, OSError, StopIteration) as e:
                raise ClusterUnreachable(f"no cluster configured: {e}") from None
        self.namespace = self.namespace or default_namespace
        self.api = k8s.ApiClient(configuration)
        self.host = configuration.host
        self._custom = k8s.CustomObjectsApi(self.api)
        self._core = k8s.CoreV1Api(self.api)

    # -- submitting

    def submit(self, obj: dict[str, Any]) -> Job:
        """Create a job from a whole object (a YAML document). It is validated here first, as
        the API server would, so a bad spec fails before any round trip, with the same paths."""
        name = str((obj.get("metadata") or {}).get("name", "?")) if isinstance(obj, dict) else "?"
        try:
            kind = validate(obj).kind
        except InvalidJob as e:
            raise _refused(f"{str(obj.get('kind', 'job')).lower()} {name}",
                           [str(error) for error in e.errors]) from None
        spec = ALIASES[kind.lower()]
        return Job(self._call("create", name, self._custom.create_namespaced_custom_object,
                              GROUP, VERSION, self.namespace, spec.plural, obj, kind=spec))

    def train(self, name: str, spec: Any = None, labels: dict[str, str] | None = None,
              **sections: Any) -> Job:
        """Submit a TrainingJob from a spec (a `TrainingJobSpec` or its dict) or from its
        sections as keyword arguments (model=..., data=..., optimization=..., ...)."""
        if spec is not None and hasattr(spec, "model_dump"):
            spec = spec.model_dump(by_alias=True, exclude_none=True, mode="json")
        body = {**(spec or {}), **{_camel(k): v for k, v in sections.items()}}
        return self.submit({"apiVersion": f"{GROUP}/{VERSION}", "kind": TRAINING_JOB.kind,
                            "metadata": {"name": name, "labels": labels or {}}, "spec": body})

    # -- reading

    def get(self, ref: str) -> Job:
        """A job by name (a TrainingJob) or by `KIND/NAME` (`tuningjob/x`, `tj/x`)."""
        kind, name = parse_ref(ref)
        return Job(self._call("get", name, self._custom.get_namespaced_custom_object, GROUP,
                              VERSION, self.namespace, kind.plural, name, kind=kind))

    def list(self, labels: str | dict[str, str] | None = None, all_namespaces: bool = False,
             kinds: tuple[Kind, ...] = KINDS) -> builtins.list[Job]:
        """The jobs of every kind in `kinds` (both, by default): TrainingJobs first."""
        selector = labels if isinstance(labels, str) or labels is None else \
            ",".join(f"{k}={v}" for k, v in labels.items())
        jobs = []
        for kind in kinds:
            if all_namespaces:
                found = self._call("list", "", self._custom.list_cluster_custom_object, GROUP,
                                   VERSION, kind.plural, label_selector=selector or "",
                                   kind=kind)
            else:
                found = self._call("list", "", self._custom.list_namespaced_custom_object,
                                   GROUP, VERSION, self.namespace, kind.plural,
                                   label_selector=selector or "", kind=kind)
            jobs += [Job(item) for item in found["items"]]
        return jobs

    def trials(self, name: str) -> builtins.list[Job]:
        """A TuningJob's trials (TrainingJobs it owns), by trial number."""
        self.get(f"{TUNING_JOB.kind.lower()}/{name}")  # a TuningJob that is not there is said so
        found = self.list({TUNING_LABEL: name}, kinds=(TRAINING_JOB,))
        return sorted(found, key=lambda j: int(
            (j.raw["metadata"].get("labels") or {}).get(TRIAL_NUMBER, "0")))

    def events(self, ref: str) -> builtins.list[dict[str, Any]]:
        """The job's Kubernetes events, oldest first."""
        kind, name = parse_ref(ref)
        found = self._call("list", name, self._core.list_namespaced_event, self.namespace,
                           field_selector=f"involvedObject.name={name},"
                                          f"involvedObject.kind={kind.kind}",
                           resource="events")
        events = [_json(self.api, e) for e in found.items]
        # Timestamps have seconds; within one, the API server's order of writes decides.
        return sorted(events, key=lambda e: (e.get("lastTimestamp") or e.get("eventTime") or "",
                                             int(e["metadata"].get("resourceVersion") or 0)))

    def pods(self, ref: str) -> builtins.list[dict[str, Any]]:
        """A TrainingJob's pods, by node rank (a TuningJob's are its trials')."""
        kind, name = parse_ref(ref)
        if kind is TUNING_JOB:
            return [pod for trial in self.trials(name) for pod in self.pods(trial.name)]
        found = self._call("list", name, self._core.list_namespaced_pod, self.namespace,
                           label_selector=f"{JOB_NAME}={name},{JOB_KIND}={kind.kind}",
                           resource="pods")
        pods = [_json(self.api, p) for p in found.items]
        return sorted(pods, key=lambda p: int(p["metadata"]["labels"].get(NODE_RANK, "0")))

    # -- waiting

    def wait(self, ref: str, condition: str = "Succeeded", timeout: float | None = None,
             progress: Callable[[Job], None] | None = None) -> Job:
        """Watch the job until `condition` is True; raise JobFailed if it fails first, and
        MentorError on timeout. `progress` is called with every new state of the job."""
        deadline = None if timeout is None else _now() + timeout
        job = self.get(ref)
        while True:
            if progress:
                progress(job)
            if job.is_(condition):
                return job
            if job.is_("Failed") or job.is_("Stopped"):
                raise JobFailed(job)
            left = None if deadline is None else deadline - _now()
            if left is not None and left <= 0:
                raise MentorError(f"{job.title}: still not {condition} after "
                                  f"{timeout:g} s (phase {job.phase or 'unknown'})")
            job = self._next_change(job, left)

    def _next_change(self, job: Job, left: float | None) -> Job:
        """The job's next version, from a watch that starts where `job` was read."""
        stream = watch.Watch().stream(  # type: ignore[no-untyped-call]
            self._custom.list_namespaced_custom_object, GROUP, VERSION, self.namespace,
            job.kind.plural,
            field_selector=f"metadata.name={job.name}",
            resource_version=job.raw["metadata"]["resourceVersion"],
            timeout_seconds=max(1, int(min(left or 60, 60))))
        try:
            for event in stream:
                if event["type"] == "DELETED":
                    raise JobNotFound(f"{job.title} was deleted")
                if event["type"] in ("ADDED", "MODIFIED"):
                    return Job(event["object"])
        except ApiException as e:
            if e.status != 410:  # an expired resourceVersion: read afresh
                raise self._error(e, "watch", job.name, job.kind.plural, job.kind) from None
        except HTTPError as e:
            raise ClusterUnreachable(f"lost the cluster at {self.host}: {e}") from None
        return self.get(job.ref)

    # -- logs

    def logs(self, ref: str, rank: int | None = None, follow: bool = False) -> Iterator[str]:
        """The trainers' output, each line prefixed with its node rank (and, for a TuningJob,
        its trial). With no rank, every node's lines are interleaved in the order they were
        written."""
        kind, name = parse_ref(ref)
        pods = [p for p in self.pods(ref) if rank is None or
                p["metadata"]["labels"].get(NODE_RANK) == str(rank)]
        if not pods:
            raise MentorError(f"{kind.kind.lower()} {name} has no pods" +
                              (f" of rank {rank}" if rank is not None else "") +
                              " (mentor logs --attempt K shows what failed attempts left)")
        if not follow:
            lines = [(stamp, f"[{_source(pod, kind)}] {text}") for pod in pods
                     for stamp, text in self._log_lines(pod["metadata"]["name"], False)]
            yield from (line for _, line in sorted(lines, key=lambda pair: pair[0]))
            return
        merged: queue.Queue[str | None] = queue.Queue()

        def stream(pod: dict[str, Any]) -> None:
            try:
                for _, text in self._log_lines(pod["metadata"]["name"], True):
                    merged.put(f"[{_source(pod, kind)}] {text}")
            finally:
                merged.put(None)

        for pod in pods:
            threading.Thread(target=stream, args=(pod,), daemon=True).start()
        open_streams = len(pods)
        while open_streams:
            line = merged.get()
            if line is None:
                open_streams -= 1
            else:
                yield line

    def _log_lines(self, pod: str, follow: bool) -> Iterator[tuple[str, str]]:
        response = self._call("get", pod, self._core.read_namespaced_pod_log, pod,
                              self.namespace, container=TRAINER_CONTAINER, follow=follow,
                              timestamps=True, _preload_content=False, resource="pods/log")
        buffer = b""
        for chunk in response.stream(4096):
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                stamp, _, text = line.decode(errors="replace").partition(" ")
                yield stamp, text
        if buffer:
            stamp, _, text = buffer.decode(errors="replace").partition(" ")
            yield stamp, text

    def failures(self, ref: str) -> builtins.list[dict[str, Any]]:
        """What the job keeps of its failed attempts (status.failures): kept after the pods go."""
        return cast(list[dict[str, Any]], self.get(ref).status.get("failures", []))

    # -- changing

    def suspend(self, ref: str) -> Job:
        return self._patch(ref, {"spec": {"runPolicy": {"suspend": True}}})

    def resume(self, ref: str) -> Job:
        return self._patch(ref, {"spec": {"runPolicy": {"suspend": False}}})

    def delete(self, ref: str) -> None:
        kind, name = parse_ref(ref)
        self._call("delete", name, self._custom.delete_namespaced_custom_object, GROUP, VERSION,
                   self.namespace, kind.plural, name, body=k8s.V1DeleteOptions(
                       propagation_policy="Background"), kind=kind)

    def _patch(self, ref: str, patch: dict[str, Any]) -> Job:
        kind, name = parse_ref(ref)
        if kind is TUNING_JOB:
            raise MentorError(f"a tuningjob has no suspend of its own: suspend its trials "
                              f"(mentor get tuningjob/{name} lists them), or delete it")
        return Job(self._call("patch", name, self._custom.patch_namespaced_custom_object,
                              GROUP, VERSION, self.namespace, kind.plural, name, patch,
                              kind=kind))

    # -- errors

    def _call(self, verb: str, name: str, method: Callable[..., Any], *args: Any,
              resource: str | None = None, kind: Kind = TRAINING_JOB, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except ApiException as e:
            raise self._error(e, verb, name, resource or kind.plural, kind) from None
        except HTTPError as e:
            raise ClusterUnreachable(f"no cluster reachable at {self.host}: "
                                     f"{_reason(e)}") from None

    def _error(self, e: ApiException, verb: str, name: str, resource: str,
               kind: Kind = TRAINING_JOB) -> MentorError:
        body = error_body(e)
        message = body.get("message") or e.reason or "error"
        if e.status == 404 and resource in (kind.plural, "pods/log") and name:
            what = kind.kind.lower() if resource == kind.plural else "pod"
            return JobNotFound(f"{what} {name} not found in namespace {self.namespace}")
        if e.status == 403:
            return Forbidden(f"forbidden: {message}")
        if e.status == 422:
            causes = (body.get("details") or {}).get("causes") or []
            errors = [f"{c.get('field', '?')}: {_plain(c.get('message', ''))}" for c in causes]
            return _refused(f"{kind.kind.lower()} {name}", errors or [message])
        if e.status == 409:
            return MentorError(f"{kind.kind.lower()} {name} already exists in namespace "
                               f"{self.namespace}")
        if e.status == 0 or e.status is None:
            return ClusterUnreachable(f"no cluster reachable at {self.host}: {e.reason}")
        return MentorError(f"cannot {verb} {resource} {name}: {e.status} {message}")


def _json(api: k8s.ApiClient, obj: Any) -> dict[str, Any]:
    return cast(dict[str, Any], api.sanitize_for_serialization(obj))  # type: ignore[no-untyped-call]


def _refused(what: str, errors: list[str]) -> SpecRefused:
    return SpecRefused(f"{what} refused: " + "; ".join(errors), errors)


def _source(pod: dict[str, Any], kind: Kind) -> str:
    """Where a log line comes from: its rank, and for a TuningJob's logs its trial."""
    labels = pod["metadata"]["labels"]
    rank = f"rank {labels.get(NODE_RANK, '0')}"
    return f"{labels.get(JOB_NAME)} {rank}" if kind is TUNING_JOB else rank


def _plain(message: str) -> str:
    """The API server's CEL message without the value it quotes: `Invalid value: "object":
    set exactly one` -> `set exactly one`."""
    return re.sub(r'^Invalid value: ("(?:[^"\\]|\\.)*"|[^:]*): ', "", message)


def _reason(e: Exception) -> str:
    reason = getattr(e, "reason", None) or e
    return str(reason).split(": ", 1)[-1][:200]


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _now() -> float:
    return dt.datetime.now(dt.UTC).timestamp()
