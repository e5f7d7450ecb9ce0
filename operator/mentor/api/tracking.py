"""spec.tracking: where a job's runs are recorded besides its status (MLflow, TensorBoard), and
output.register: the model registry entry of what it produced.

The platform sets the MLflow server once (the chart's `tracking.mlflow.*`, which the operator
fills in for jobs that name none); a job may name its own, or turn tracking off.
"""

from __future__ import annotations

from pydantic import Field

from mentor.api.base import ApiModel, ObjectName

# A tracking server is reached over HTTP(S); the trainer speaks MLflow's REST API to it.
HTTP_URL = r"^https?://[^/\s]+(/\S*)?$"
# A TuningJob's trial: JSON {"name", "key", "metric", "direction"} of its search, whose parent
# run the trial's run nests under.
PARENT_ENV = "MENTOR_TRACKING_PARENT"
# Set by `mentor run`: it ends the run's tracking itself (with its own GPU-hours), not the
# launcher.
LOCAL_ENV = "MENTOR_RUN_LOCAL"
# Where the trainer reads the tracking server's credentials (MLflow's own variable names).
CREDENTIAL_KEYS = {"MLFLOW_TRACKING_TOKEN": "token", "MLFLOW_TRACKING_USERNAME": "username",
                   "MLFLOW_TRACKING_PASSWORD": "password"}


class MlflowSpec(ApiModel):
    uri: str = Field(max_length=2048, pattern=HTTP_URL,
                     description="uri of the MLflow tracking server, http(s)://host[:port][/path]"
                                 ". Default: the chart's tracking.mlflow.uri.")
    experiment: str | None = Field(
        default=None, min_length=1, max_length=500,
        description="experiment the runs go to, created if missing. Default: the chart's "
                    "tracking.mlflow.experiment, else the job's namespace.")
    credentials_secret: ObjectName | None = Field(
        default=None,
        description="credentialsSecret names a Secret in the job's namespace with the keys "
                    "token, or username and password (each optional): the pods read them as "
                    "MLFLOW_TRACKING_TOKEN, _USERNAME and _PASSWORD. The operator never does.")


class TrackingSpec(ApiModel):
    enabled: bool = Field(default=True,
                          description="enabled: false records the job nowhere but its status, "
                                      "metrics.jsonl and Prometheus, whatever the chart says.")
    mlflow: MlflowSpec | None = Field(
        default=None,
        description="mlflow: one run per job (a parent run and a nested run per trial for a "
                    "TuningJob), with the resolved spec as params, the metrics by step, the "
                    "ledger's GPU-hours and the model's location.")
    tensorboard: bool = Field(default=True,
                              description="tensorboard writes event files to "
                                          "<output>/tensorboard. Default true.")


class RegisterSpec(ApiModel):
    name: str = Field(min_length=1, max_length=256, pattern=r"^[^/\s][^/]*$",
                      description="name of the registered model in MLflow's registry; each "
                                  "succeeded job adds a version, tagged with its lineage.")


def resolved(spec: TrackingSpec | None, uri: str = "", experiment: str = "") -> TrackingSpec:
    """The job's tracking with the platform's defaults (the chart's, or MENTOR_TRACKING_* on one
    machine) filled in: their server when the job names none, their experiment when it names
    none. A job that turned tracking off stays off."""
    spec = spec or TrackingSpec()
    if not spec.enabled:
        return spec
    mlflow = spec.mlflow
    if mlflow is None and uri:
        mlflow = MlflowSpec(uri=uri)
    if mlflow is not None and mlflow.experiment is None and experiment:
        mlflow = mlflow.model_copy(update={"experiment": experiment})
    return spec.model_copy(update={"mlflow": mlflow})


def credential_env(spec: TrackingSpec | None) -> list[dict[str, object]]:
    """The pod's variables read from the job's credentials Secret (each key optional)."""
    secret = spec.mlflow.credentials_secret if spec and spec.enabled and spec.mlflow else None
    if not secret:
        return []
    return [{"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key,
                                                          "optional": True}}}
            for name, key in CREDENTIAL_KEYS.items()]
