"""Progress reports from the trainers: who may send them, and what they change in the status.

A job's report token is an HMAC of its UID under the operator's key, so the operator can check a
report without storing or reading any per-job secret; the token reaches the pods through the
job's own Secret. Everything here is pure; mentor.server does the I/O.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import math
from typing import Any

from mentor.api.status import MAX_EVALS_KEPT, CheckpointStatus, EvalPoint, Progress
from mentor.podview import format_time


def stored_key(namespace: str, name: str) -> bytes:
    """The report key kept in a Secret of the operator's namespace, made on first start.

    Kept by the operator rather than rendered by the chart, so that `helm template`, Argo CD and
    Flux never make a new one (which would orphan every running job's token); replicas agree
    on it because a create that loses the race reads the winner's."""
    import base64
    import secrets

    from kubernetes.client.exceptions import ApiException

    from mentor import kube

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


def token_for(key: bytes, uid: str) -> str:
    return hmac.new(key, uid.encode(), hashlib.sha256).hexdigest()


def authorized(key: bytes, uid: str, header: str | None) -> bool:
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(token_for(key, uid), header.removeprefix("Bearer ").strip())


def _check(report: dict[str, Any]) -> None:
    step = int(report["step"])
    if step < 0:
        raise ValueError(f"step {step} is negative")
    if "loss" in report:
        total = int(report["total_steps"])
        if total < 1 or step > total:
            raise ValueError(f"step {step} of {total} is out of range")
    for name in ("loss", "eval_loss", "tokens_per_second", "seconds_per_step", "mfu"):
        if name in report and report[name] is not None:
            value = float(report[name])
            if not math.isfinite(value):
                raise ValueError(f"{name} is {value}, not a finite number")
            if name in ("tokens_per_second", "seconds_per_step", "mfu") and value < 0:
                raise ValueError(f"{name} is negative")


def apply_report(report: dict[str, Any], progress: Progress | None,
                 checkpoint: CheckpointStatus | None,
                 now: dt.datetime) -> tuple[Progress | None, CheckpointStatus | None]:
    """Fold one trainer report (a metrics record) into the status' progress and checkpoint.

    A report out of range raises ValueError (the endpoint answers 400): written as it is, it
    would be refused by the status schema and retried for ever.
    """
    _check(report)
    stamp = format_time(now)
    if "checkpoint" in report:
        return progress, CheckpointStatus(step=int(report["step"]), uri=str(report["checkpoint"]),
                                          time=stamp)
    current = progress.model_copy() if progress else Progress()
    if "eval_loss" in report:
        current.eval_loss = float(report["eval_loss"])
        point = EvalPoint(step=int(report["step"]), loss=current.eval_loss)
        kept = [e for e in current.evals if e.step != point.step]  # a resumed run evaluates again
        current.evals = [*kept, point][-MAX_EVALS_KEPT:]
    if "loss" in report:
        step, total = int(report["step"]), int(report["total_steps"])
        tokens_per_second = float(report["tokens_per_second"])
        current.step, current.total_steps = step, total
        current.percent = round(100 * step / total, 1) if total else None
        current.shown = f"{current.percent:.0f}%" if current.percent is not None else None
        current.loss = float(report["loss"])
        current.tokens_per_second = round(tokens_per_second, 1)
        seconds_per_step = report.get("seconds_per_step")
        if seconds_per_step:
            current.eta_seconds = int((total - step) * float(seconds_per_step))
    current.last_update_time = stamp
    return current, checkpoint
