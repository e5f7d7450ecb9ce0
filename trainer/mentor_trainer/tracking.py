"""Rank 0's record of a run in MLflow and TensorBoard (spec.tracking).

Everything bound for MLflow is first appended to an outbox in the job's output
(`<output>/.mentor/tracking/outbox.jsonl`), and a sender moves it to the server, remembering how
far it got (`sent`). The outbox is the buffer: a server that is down loses nothing, and the
records go when it returns, from this attempt, the next one, or the launcher at the end. The run
itself (`run.json`) belongs to the job's UID, so every attempt continues the same run; a resumed
attempt logs no step that the run already has.

Tracking never fails training: a server that cannot be reached is reported (`state`) and retried.
TensorBoard's event files are written here directly: they are files beside the model.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mentor.api.tracking import PARENT_ENV
from mentor_trainer.mlflow_rest import (
    MAX_BATCH_METRICS,
    MAX_BATCH_PARAMS,
    MAX_PARAM_VALUE,
    Mlflow,
    Refused,
    Unreachable,
)

log = logging.getLogger("mentor_trainer")

STATE_DIR = Path(".mentor") / "tracking"
# A record's fields that are not metrics.
NOT_METRICS = ("time", "step", "total_steps", "epoch", "gpus", "seconds_per_step", "checkpoint",
               "seconds", "outcome", "exit_code", "objective", "uid", "tracking")
STATUS = {"succeeded": "FINISHED", "stopped": "KILLED", "failed": "FAILED"}


def settings(config: dict[str, Any]) -> dict[str, Any] | None:
    """The job's tracking section, or None when it records nowhere else."""
    tracking = config.get("tracking")
    if not tracking or tracking.get("enabled") is False:
        return None
    return dict(tracking)


def identity(environ: dict[str, str] | None = None) -> dict[str, str]:
    env = os.environ if environ is None else environ
    return {"name": env.get("MENTOR_JOB_NAME") or "local",
            "namespace": env.get("MENTOR_JOB_NAMESPACE") or "default",
            "kind": env.get("MENTOR_JOB_KIND") or "TrainingJob",
            "uid": env.get("MENTOR_JOB_UID") or "",
            "attempt": env.get("MENTOR_ATTEMPT") or "1",
            "image": env.get("MENTOR_IMAGE") or "local"}


def flatten(tree: Any, prefix: str = "") -> dict[str, str]:
    """A nested spec as MLflow params: dotted paths, each value as JSON (cut to MLflow's limit)."""
    if isinstance(tree, dict) and tree:
        return {k: v for key, value in tree.items()
                for k, v in flatten(value, f"{prefix}.{key}" if prefix else str(key)).items()}
    text = tree if isinstance(tree, str) else json.dumps(tree)
    return {prefix: text[:MAX_PARAM_VALUE]}


def metrics_of(record: dict[str, Any], gpu_hours: float | None = None) -> dict[str, float]:
    """A report's numbers as MLflow metrics (a custom trainer's named metrics included)."""
    found = {k: float(v) for k, v in record.items()
             if k not in NOT_METRICS and isinstance(v, int | float) and not isinstance(v, bool)}
    found.update({k: float(v) for k, v in (record.get("metrics") or {}).items()})
    if gpu_hours is not None:
        found["gpu_hours"] = gpu_hours
    # JSON has no NaN: a diverged loss is the job's failure (NonFiniteLoss), not a record.
    return {k: v for k, v in found.items() if math.isfinite(v)}


class Outbox:
    """An append-only journal of what goes to MLflow, and how far it has been sent."""

    def __init__(self, output: Path) -> None:
        self.root = output / STATE_DIR
        self.root.mkdir(parents=True, exist_ok=True)
        self.path, self.cursor = self.root / "outbox.jsonl", self.root / "sent"
        self.lock = threading.Lock()

    def append(self, *entries: dict[str, Any]) -> None:
        with self.lock, self.path.open("a") as f:
            f.write("".join(json.dumps(e, separators=(",", ":")) + "\n" for e in entries))

    def sent(self) -> int:
        try:
            return int(self.cursor.read_text() or 0)
        except (OSError, ValueError):
            return 0

    def pending(self, limit: int = 500) -> tuple[list[dict[str, Any]], int]:
        """Up to `limit` entries not yet sent, and the offset just past them."""
        start = self.sent()
        entries, offset = [], start
        with contextlib.suppress(FileNotFoundError), self.path.open("rb") as f:
            f.seek(start)
            for line in f:
                if not line.endswith(b"\n"):  # being written: next time
                    break
                offset += len(line)
                entries.append(json.loads(line))
                if len(entries) >= limit:
                    break
        return entries, offset

    def done(self, offset: int) -> None:
        partial = self.cursor.with_suffix(".partial")
        partial.write_text(str(offset))
        partial.replace(self.cursor)

    def last_steps(self) -> dict[str, int]:
        """The last step logged for each metric: a resumed attempt logs only later steps."""
        steps: dict[str, int] = {}
        with contextlib.suppress(FileNotFoundError), self.path.open() as f:
            for line in f:
                if line.startswith('{"metrics"'):
                    for m in json.loads(line)["metrics"]:
                        steps[m["key"]] = max(steps.get(m["key"], -1), m["step"])
        return steps


class Sender:
    """Moves the outbox to the MLflow run, creating the run (and a trial's parent) first."""

    def __init__(self, output: Path, settings: dict[str, Any], ident: dict[str, str],
                 environ: dict[str, str] | None = None) -> None:
        mlflow = settings["mlflow"]
        self.client = Mlflow(mlflow["uri"], environ=environ)
        self.experiment_name = mlflow.get("experiment") or ident["namespace"]
        self.outbox, self.ident = Outbox(output), ident
        self.run_file = self.outbox.root / "run.json"
        env = os.environ if environ is None else environ
        self.parent = json.loads(env[PARENT_ENV]) if env.get(PARENT_ENV) else None
        self.run: dict[str, Any] | None = None

    def current_run(self) -> dict[str, Any]:
        if self.run is None:
            with contextlib.suppress(OSError, ValueError):
                saved = json.loads(self.run_file.read_text())
                if saved.get("uid") == self.ident["uid"]:
                    self.run = saved
        if self.run is None:
            self.run = self._create_run()
            partial = self.run_file.with_suffix(".partial")
            partial.write_text(json.dumps(self.run))
            partial.replace(self.run_file)
        return self.run

    def _create_run(self) -> dict[str, Any]:
        experiment = self.client.experiment(self.experiment_name)
        tags = {"mentor.job": self.ident["name"], "mentor.uid": self.ident["uid"]}
        if self.parent:
            tags["mlflow.parentRunId"] = self._parent_run(experiment)
        info = self.client.create_run(experiment, self.ident["name"], tags,
                                      int(time.time() * 1000))
        return {"uid": self.ident["uid"], "run_id": info["run_id"], "experiment_id": experiment,
                "artifact_uri": info["artifact_uri"],
                "parent_run_id": tags.get("mlflow.parentRunId"),
                "url": self.client.run_url(experiment, info["run_id"])}

    def _parent_run(self, experiment: str) -> str:
        """The search's parent run: found by its key, else created. Trials that start at once
        may each create one; all then take the earliest, and the others delete their own."""
        assert self.parent is not None
        where = (f"tags.`mentor.search` = '{self.parent['key']}' and "
                 "tags.`mentor.role` = 'search'")
        order = ("attributes.start_time ASC", "attributes.run_id ASC")
        found = self.client.search_runs(experiment, where, order)
        if found:
            return str(found[0]["info"]["run_id"])
        mine = self.client.create_run(experiment, self.parent["name"], {
            "mentor.search": self.parent["key"], "mentor.role": "search",
            "mentor.kind": "TuningJob", "mentor.namespace": self.ident["namespace"],
            "mentor.objective": self.parent["metric"],
            "mentor.direction": self.parent["direction"]}, int(time.time() * 1000))["run_id"]
        first = str(self.client.search_runs(experiment, where, order)[0]["info"]["run_id"])
        if first != mine:
            with contextlib.suppress(Refused):
                self.client.call("POST", "mlflow/runs/delete", {"run_id": mine})
        return first

    def send(self) -> int:
        """Send what waits; the number of entries sent. Unreachable: try again later."""
        total = 0
        while True:
            entries, offset = self.outbox.pending()
            if not entries:
                return total
            run = self.current_run()
            for batch in _batches(entries):
                try:
                    self._send(run, batch)
                except Refused as e:  # refused for good: kept back, it would block the rest
                    log.warning("tracking: MLflow refused %d record(s), skipped: %s",
                                len(batch), e)
            self.outbox.done(offset)
            total += len(entries)

    def _send(self, run: dict[str, Any], batch: list[dict[str, Any]]) -> None:
        first = batch[0]
        if _loggable(first):
            metrics = [m for e in batch for m in e.get("metrics", [])]
            params = {k: v for e in batch for k, v in e.get("params", {}).items()}
            tags = {k: v for e in batch for k, v in e.get("tags", {}).items()}
            try:
                self.client.log_batch(run["run_id"], metrics, params, tags)
            except Refused as e:  # a param changed between attempts: keep the first
                if e.code != "INVALID_PARAMETER_VALUE" or not params:
                    raise
                self.client.log_batch(run["run_id"], metrics, {}, tags)
        elif "status" in first:
            self.client.update_run(run["run_id"], first["status"], first.get("end_ms"))
            if self.parent and first["status"] == "RUNNING":  # a trial runs: so does its search
                self.client.update_run(run["parent_run_id"], "RUNNING")
        elif "artifact" in first:
            path = Path(first["artifact"])
            if path.is_file():
                self._quietly(lambda: self.client.upload(run["artifact_uri"], first["as"],
                                                         path.read_bytes()))
        elif "model" in first:
            self._log_model(run, first["model"])
        elif "best" in first:
            self._best(run)

    def _quietly(self, call: Callable[[], Any]) -> None:
        """A refusal that must not stop the records behind it (artifacts the server does not
        proxy, a registry it does not have): said once in the log."""
        try:
            call()
        except Refused as e:
            log.warning("tracking: %s", e)

    def _log_model(self, run: dict[str, Any], model: dict[str, Any]) -> None:
        tags = {k: str(v) for k, v in model["tags"].items()}
        reference = json.dumps({"uri": model["uri"], **tags}, indent=2).encode()
        self._quietly(lambda: self.client.upload(run["artifact_uri"], "model/reference.json",
                                                 reference))
        self._quietly(lambda: self.client.log_model(run["experiment_id"], run["run_id"],
                                                    self.ident["name"], {"mentor.uri": model["uri"],
                                                                         **tags}))
        if model.get("register"):
            def register() -> None:
                version = self.client.register(
                    model["register"], f"{run['artifact_uri']}/model", run["run_id"],
                    {"mentor.uri": model["uri"], **tags})
                self.client.log_batch(run["run_id"], tags={
                    "mentor.registered": f"{model['register']}/{version}"})
            self._quietly(register)

    def _best(self, run: dict[str, Any]) -> None:
        """The search's best trial so far, among the finished ones, tagged on the parent and on
        the trials (and aliased `best` in the registry). Every trial does this as it ends, so
        the last one to end leaves the search's answer."""
        assert self.parent is not None
        metric, maximize = self.parent["metric"], self.parent["direction"] == "maximize"
        siblings = self.client.search_runs(
            run["experiment_id"], f"tags.`mlflow.parentRunId` = '{run['parent_run_id']}'")
        scored = []
        for r in siblings:
            values = {m["key"]: m["value"] for m in r.get("data", {}).get("metrics", [])}
            tags = {t["key"]: t["value"] for t in r.get("data", {}).get("tags", [])}
            if r["info"]["status"] == "FINISHED" and metric in values:
                scored.append((values[metric], r["info"]["run_id"], r["info"]["run_name"], tags))
        if all(r["info"]["status"] != "RUNNING" for r in siblings):  # until another trial starts
            self.client.update_run(run["parent_run_id"], "FINISHED", int(time.time() * 1000))
        if not scored:
            return
        value, best_id, best_name, best_tags = (max if maximize else min)(scored)
        self.client.log_batch(run["parent_run_id"], tags={
            "mentor.best_trial": best_name, "mentor.best_run_id": best_id,
            f"mentor.best_{metric}": repr(value)})
        for _, run_id, _, tags in scored:
            verdict = str(run_id == best_id).lower()
            if tags.get("mentor.best") != verdict:
                self.client.log_batch(run_id, tags={"mentor.best": verdict})
        registered = best_tags.get("mentor.registered")
        if registered:
            name, version = registered.rsplit("/", 1)
            self._quietly(lambda: self.client.set_alias(name, "best", version))


def _loggable(entry: dict[str, Any]) -> bool:
    """Metrics, params and tags go together in log-batch calls; anything else goes alone."""
    return "metrics" in entry or "params" in entry or "tags" in entry


def _batches(entries: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Consecutive metric/param/tag entries merged into log-batch calls within MLflow's limits;
    every other entry alone, in order."""
    out: list[list[dict[str, Any]]] = []
    size = params = 0
    for e in entries:
        n, p = len(e.get("metrics", [])), len(e.get("params", {})) + len(e.get("tags", {}))
        if _loggable(e) and out and _loggable(out[-1][0]) and size + n <= MAX_BATCH_METRICS \
                and params + p <= MAX_BATCH_PARAMS:
            out[-1].append(e)
            size, params = size + n, params + p
        else:
            out.append([e])
            size, params = n, p
    return out


class Tracker:
    """What rank 0 records: each report to the outbox (and TensorBoard), sent in the background.

    `on_state` hears when the server becomes unreachable and when it is back ("Unavailable" or
    "Recording", a message, the run's URL), for the job's status."""

    RETRY_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)

    def __init__(self, output: Path, config: dict[str, Any], track: dict[str, Any],
                 on_state: Callable[[dict[str, Any]], None] = lambda _: None) -> None:
        self.output, self.ident, self.on_state = output, identity(), on_state
        self.outbox = Outbox(output)
        self.last_steps = self.outbox.last_steps()
        self.writer: Any = None
        if track.get("tensorboard", True):
            self.writer = _tensorboard(output / "tensorboard")
        self.sender = Sender(output, track, self.ident) if track.get("mlflow") else None
        if self.sender:  # what `mentor track sync` needs to send what is left, later
            (self.outbox.root / "sender.json").write_text(json.dumps({
                "settings": track, "ident": self.ident,
                "parent": os.environ.get(PARENT_ENV)}))
        self.state: dict[str, Any] = {}
        self.wake, self.stopping = threading.Event(), threading.Event()
        self.thread: threading.Thread | None = None
        if self.sender:
            params = flatten({k: v for k, v in config.items() if k != "tracking"})
            keys = sorted(params)
            self.outbox.append(*({"params": {k: params[k] for k in keys[i:i + MAX_BATCH_PARAMS]}}
                                 for i in range(0, len(keys), MAX_BATCH_PARAMS)))
            self.outbox.append({"tags": self._tags(config)}, {"status": "RUNNING"})
            self.thread = threading.Thread(target=self._run, name="mentor-tracking", daemon=True)
            self.thread.start()

    def _tags(self, config: dict[str, Any]) -> dict[str, str]:
        parallelism = config.get("parallelism") or {}
        gpus = (parallelism.get("gpusPerNode") or 0) * (parallelism.get("nodes") or 1)
        tags = {"mentor.namespace": self.ident["namespace"], "mentor.kind": self.ident["kind"],
                "mentor.uid": self.ident["uid"], "mentor.attempt": self.ident["attempt"],
                "mentor.image": self.ident["image"], "mentor.gpus": str(gpus),
                "mentor.gpu_product": _gpu_product(gpus),
                "mentor.output": str((config.get("output") or {}).get("uri", ""))}
        return {k: v for k, v in tags.items() if v}

    def log(self, record: dict[str, Any], gpu_hours: float | None = None) -> None:
        step = record.get("step")
        if step is None:
            return
        stamp = int(record.get("time", time.time()) * 1000)
        metrics: list[dict[str, Any]] = [
            {"key": k, "value": v, "timestamp": stamp, "step": int(step)}
            for k, v in metrics_of(record, gpu_hours).items()
            if int(step) > self.last_steps.get(k, -1)]
        if not metrics:
            return
        for m in metrics:
            self.last_steps[m["key"]] = m["step"]
            if self.writer is not None:
                self.writer.add_scalar(m["key"], m["value"], m["step"], m["timestamp"] / 1000)
        if self.sender:
            self.outbox.append({"metrics": metrics})
            self.wake.set()

    def close(self, timeout: float = 10.0) -> None:
        """Send what waits, for at most `timeout`; what is left stays in the outbox."""
        if self.writer is not None:
            self.writer.close()
        if self.thread:
            self.stopping.set()
            self.wake.set()
            self.thread.join(timeout)

    def _run(self) -> None:
        tries = 0
        while True:
            try:
                assert self.sender is not None
                self.sender.send()
                run = self.sender.current_run()
                self._say({"state": "Recording", "runId": run["run_id"], "url": run["url"]})
                tries = 0
            except (Unreachable, Refused, OSError, ValueError) as e:
                self._say({"state": "Unavailable", "message": str(e)[:500]})
                tries += 1
            if self.stopping.is_set() and (tries == 0 or tries > 2):
                return
            delay = 2.0 if tries == 0 else self.RETRY_SECONDS[min(tries, 5) - 1]
            self.wake.wait(delay if not self.stopping.is_set() else 1.0)
            self.wake.clear()

    def _say(self, state: dict[str, Any]) -> None:
        if state.get("state") != self.state.get("state"):
            self.state = state
            if state["state"] == "Unavailable":
                log.warning("tracking: MLflow unreachable, records kept in %s (%s)",
                            self.outbox.path, state.get("message"))
            else:
                log.info("tracking: recording to %s", state.get("url"))
            self.on_state(state)


def _tensorboard(path: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # an image without tensorboard: the records go elsewhere
        log.warning("tracking: no TensorBoard event files (the tensorboard package is missing)")
        return None
    return SummaryWriter(str(path), flush_secs=10)


def _gpu_product(gpus: int) -> str:
    import sys

    if gpus and "torch" in sys.modules:
        torch = sys.modules["torch"]
        if torch.cuda.is_available():
            return str(torch.cuda.get_device_name(0))
    return "none" if not gpus else "unknown"


def finish(output: Path, config: dict[str, Any], outcome: str, gpu_hours: float | None,
           step: int | None, pruned: bool = False, timeout: float = 30.0,
           environ: dict[str, str] | None = None) -> bool:
    """The end of an attempt (the launcher's, or `mentor run`'s once the trainer is done): the
    ledger's GPU-hours, the loss picture, the model and its registration, the run's status
    (and a trial's place in its search), then everything that waits is sent, for at most
    `timeout`. True when nothing is left waiting."""
    track = settings(config)
    if not track or not track.get("mlflow"):
        return True
    env = dict(os.environ if environ is None else environ)
    outbox = Outbox(output)
    ident = identity(env)
    if gpu_hours is not None and step is not None:
        outbox.append({"metrics": [{"key": "gpu_hours", "value": gpu_hours,
                                    "timestamp": int(time.time() * 1000), "step": step}]})
    picture = output / STATE_DIR / "loss.png"
    with contextlib.suppress(Exception):  # a picture is never a reason to lose the records
        from mentor.report.history import read_history
        from mentor.report.plots import plot

        plot(ident["name"], read_history(output / "metrics.jsonl"), picture)
        outbox.append({"artifact": str(picture), "as": "loss.png"})
    if pruned:
        outbox.append({"tags": {"mentor.pruned": "true"}})
    out = config.get("output") or {}
    if outcome == "succeeded":
        outbox.append({"model": {"uri": out.get("uri", ""), "register": (
            out.get("register") or {}).get("name"), "tags": _lineage(config, gpu_hours, env)}})
    outbox.append({"status": STATUS.get(outcome, "FAILED"), "end_ms": int(time.time() * 1000)})
    if env.get(PARENT_ENV):
        outbox.append({"best": True})
    try:
        _send_within(Sender(output, track, ident, env), timeout)
        return True
    except (Unreachable, Refused, OSError) as e:
        log.warning("tracking: %s; the records wait in %s", e, outbox.path)
        return False


def _lineage(config: dict[str, Any], gpu_hours: float | None,
             env: dict[str, str]) -> dict[str, str]:
    model, data = config.get("model") or {}, config.get("data") or {}
    ident = identity(env)
    return {k: v for k, v in {
        "mentor.base_model": str(model.get("from") or ""), "mentor.data": str(data.get("source")
                                                                            or ""),
        "mentor.job": f"{ident['namespace']}/{ident['name']}", "mentor.uid": ident["uid"],
        "mentor.trial": ident["name"] if env.get(PARENT_ENV) else "",
        "mentor.gpu_hours": f"{gpu_hours:.6f}" if gpu_hours is not None else ""}.items() if v}


def sync(output: Path, timeout: float = 0.0) -> int:
    """Send what an ended run left in its outbox (the server was down at its end); the number
    of entries sent. Unreachable (`mlflow_rest.Unreachable`) if it still is."""
    saved = json.loads((output / STATE_DIR / "sender.json").read_text())
    env = {**os.environ, **({PARENT_ENV: saved["parent"]} if saved.get("parent") else {})}
    return _send_within(Sender(output, saved["settings"], saved["ident"], env), timeout)


def _send_within(sender: Sender, timeout: float) -> int:
    """Send what waits, trying an unreachable server again for `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return sender.send()
        except Unreachable:
            if time.monotonic() >= deadline:
                raise
            time.sleep(1.0)
