"""The few calls of MLflow's REST API (2.0) that a run needs, over urllib.

The trainer image carries no MLflow client: the REST API is stable and public, the client is a
large dependency tree, and the trainer needs a dozen calls. Errors come in two kinds: the server
could not be reached or was busy (`Unreachable`: retry later, lose nothing), or it refused the
request (`Refused`: the same request would be refused again).
"""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

MAX_BATCH_METRICS = 1000  # MLflow's limits on one log-batch
MAX_BATCH_PARAMS = 100
MAX_PARAM_VALUE = 6000


class Unreachable(Exception):
    """The server did not answer, or answered 5xx, 429, or 401/403 (credentials not yet right):
    the request may succeed later."""


class Refused(Exception):
    """The server answered 4xx: the request itself is wrong (or not allowed)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code = status, code


class Mlflow:
    def __init__(self, uri: str, timeout: float = 5.0,
                 environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.uri, self.timeout = uri.rstrip("/"), timeout
        self.headers = {"Content-Type": "application/json"}
        if env.get("MLFLOW_TRACKING_TOKEN"):
            self.headers["Authorization"] = f"Bearer {env['MLFLOW_TRACKING_TOKEN']}"
        elif env.get("MLFLOW_TRACKING_USERNAME"):
            pair = f"{env['MLFLOW_TRACKING_USERNAME']}:{env.get('MLFLOW_TRACKING_PASSWORD', '')}"
            self.headers["Authorization"] = f"Basic {base64.b64encode(pair.encode()).decode()}"

    def call(self, method: str, path: str, body: dict[str, Any] | None = None,
             query: dict[str, str] | None = None, data: bytes | None = None) -> dict[str, Any]:
        url = f"{self.uri}/api/2.0/{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        headers = dict(self.headers)
        if data is not None:
            headers["Content-Type"] = "application/octet-stream"
        payload = data if data is not None else (json.dumps(body).encode() if body else None)
        request = urllib.request.Request(url, data=payload, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                text = response.read()
        except urllib.error.HTTPError as e:
            said = e.read(2000).decode(errors="replace")
            # Credentials being fixed, like a server being restarted, is a wait, not a loss.
            if e.code >= 500 or e.code in (401, 403, 429):
                raise Unreachable(f"{e.code} from {self.uri}: {said[:200]}") from e
            try:
                error = json.loads(said)
            except ValueError:
                error = {"message": said}
            raise Refused(e.code, error.get("error_code", ""), error.get("message", said)) \
                from e
        except (OSError, ValueError) as e:  # refused, reset, timed out, no such host
            raise Unreachable(f"{self.uri}: {getattr(e, 'reason', e)}") from e
        return json.loads(text) if text.strip() else {}

    def experiment(self, name: str) -> str:
        """The experiment's ID, created if missing (two jobs creating it at once both get it)."""
        try:
            found = self.call("GET", "mlflow/experiments/get-by-name",
                              query={"experiment_name": name})
            return str(found["experiment"]["experiment_id"])
        except Refused as e:
            if e.code != "RESOURCE_DOES_NOT_EXIST":
                raise
        try:
            return str(self.call("POST", "mlflow/experiments/create", {
                "name": name,  # MLflow 3's UI then opens it on its runs, not on GenAI traces
                "tags": [{"key": "mlflow.experimentKind", "value": "custom_model_development"}]
            })["experiment_id"])
        except Refused as e:
            if e.code != "RESOURCE_ALREADY_EXISTS":
                raise
            return self.experiment(name)

    def create_run(self, experiment_id: str, name: str, tags: dict[str, str],
                   start_ms: int) -> dict[str, Any]:
        run: dict[str, Any] = self.call("POST", "mlflow/runs/create", {
            "experiment_id": experiment_id, "run_name": name, "start_time": start_ms,
            "tags": pairs(tags)})["run"]["info"]
        return run

    def get_run(self, run_id: str) -> dict[str, Any]:
        run: dict[str, Any] = self.call("GET", "mlflow/runs/get", query={"run_id": run_id})["run"]
        return run

    def search_runs(self, experiment_id: str, where: str,
                    order_by: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        found = self.call("POST", "mlflow/runs/search", {
            "experiment_ids": [experiment_id], "filter": where, "max_results": 1000,
            "order_by": list(order_by)})
        runs: list[dict[str, Any]] = found.get("runs", [])
        return runs

    def log_batch(self, run_id: str, metrics: list[dict[str, Any]] | None = None,
                  params: dict[str, str] | None = None,
                  tags: dict[str, str] | None = None) -> None:
        self.call("POST", "mlflow/runs/log-batch", {
            "run_id": run_id, "metrics": metrics or [], "params": pairs(params or {}),
            "tags": pairs(tags or {})})

    def update_run(self, run_id: str, status: str, end_ms: int | None = None) -> None:
        self.call("POST", "mlflow/runs/update", {
            "run_id": run_id, "status": status, **({"end_time": end_ms} if end_ms else {})})

    def upload(self, artifact_uri: str, path: str, data: bytes) -> None:
        """Into a run's artifacts, through the server's artifact proxy (`mlflow server`'s
        default); a server that stores artifacts elsewhere is told nothing (`Refused`)."""
        prefix = "mlflow-artifacts:"
        if not artifact_uri.startswith(prefix):
            raise Refused(400, "ARTIFACTS_NOT_PROXIED",
                          f"artifacts go to {artifact_uri}, which the trainer does not write")
        where = artifact_uri[len(prefix):].lstrip("/")
        self.call("PUT", f"mlflow-artifacts/artifacts/{where}/{path}", data=data)

    def log_model(self, experiment_id: str, run_id: str, name: str,
                  tags: dict[str, str]) -> str:
        """A logged model (MLflow 3) that points at the job's output: its tags say where."""
        model = self.call("POST", "mlflow/logged-models", {
            "experiment_id": experiment_id, "name": name, "source_run_id": run_id,
            "tags": pairs(tags)})["model"]["info"]
        self.call("PATCH", f"mlflow/logged-models/{model['model_id']}",
                  {"model_id": model["model_id"], "status": "LOGGED_MODEL_READY"})
        return str(model["model_id"])

    def register(self, name: str, source: str, run_id: str, tags: dict[str, str]) -> str:
        """A new version of registered model `name` (created if missing); its version."""
        try:
            self.call("POST", "mlflow/registered-models/create", {"name": name})
        except Refused as e:
            if e.code != "RESOURCE_ALREADY_EXISTS":
                raise
        version = self.call("POST", "mlflow/model-versions/create", {
            "name": name, "source": source, "run_id": run_id, "tags": pairs(tags)})
        return str(version["model_version"]["version"])

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.call("POST", "mlflow/registered-models/alias",
                  {"name": name, "alias": alias, "version": version})

    def run_url(self, experiment_id: str, run_id: str) -> str:
        return f"{self.uri}/#/experiments/{experiment_id}/runs/{run_id}"


def pairs(values: dict[str, str]) -> list[dict[str, str]]:
    return [{"key": k, "value": v} for k, v in values.items()]
