"""The TuningJob spec and status: adapt a trained model, searching its hyper-parameters.

A TuningJob's trials are TrainingJobs that it owns. Each trial's spec is the TuningJob's trial
sections (method, data, optimization, ...) with the search's parameters set at their paths, so a
parameter can be any numeric or enum field of those sections; the paths a search may name are
listed from the models themselves (`tunable_paths`), and the CRD refuses any other.
"""

from __future__ import annotations

import types
import typing
from enum import Enum, StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, WithJsonSchema
from pydantic.fields import FieldInfo

from mentor.api.base import ApiModel, ObjectName, Rule, Uri
from mentor.api.status import Condition, Phase, Timestamp
from mentor.api.tracking import TrackingSpec
from mentor.api.training import (
    DPO_OBJECTIVES,
    AdaptationSpec,
    CheckpointSpec,
    DataSpec,
    ExitCodePolicy,
    OptimizationSpec,
    OutputSpec,
    ParallelismSpec,
    PodTemplate,
    SchedulingSpec,
    TrainerSpec,
    TrainingSections,
    preference_rules,
    quantize_rules,
)

# The sections of a trial's spec that a search may change, by wire name.
SEARCHABLE_SECTIONS: dict[str, type[BaseModel]] = {
    "method": AdaptationSpec, "data": DataSpec, "optimization": OptimizationSpec,
}


def _leaf(annotation: Any) -> tuple[str, list[Any]] | None:
    """('int'|'float', []) or ('choice', its values) for a tunable annotation, else None."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _leaf(options[0]) if len(options) == 1 else None
    if typing.get_origin(annotation) is Annotated:
        return _leaf(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) is Literal:
        return "choice", list(typing.get_args(annotation))
    if annotation is bool:
        return "choice", [True, False]
    if annotation is int:
        return "int", []
    if annotation is float:
        return "float", []
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return "choice", [m.value for m in annotation]
    return None


def _walk(model: type[BaseModel], prefix: str) -> dict[str, tuple[str, list[Any]]]:
    found: dict[str, tuple[str, list[Any]]] = {}
    for name, info in model.model_fields.items():
        path = f"{prefix}.{info.alias or name}"
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found.update(_walk(annotation, path))
            continue
        leaf = _leaf(annotation)
        if leaf:
            found[path] = leaf
            if leaf[0] != "choice":
                BOUNDS[path] = _bounds(info)
    return found


_OPERATORS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
# A numeric path's own bounds, from its field's constraints: ((">", 0.0), ("<=", 1.0)), ...
BOUNDS: dict[str, tuple[tuple[str, float], ...]] = {}


def _bounds(info: FieldInfo) -> tuple[tuple[str, float], ...]:
    return tuple((symbol, float(getattr(constraint, name))) for constraint in info.metadata
                 for name, symbol in _OPERATORS.items() if hasattr(constraint, name))


def tunable_paths() -> dict[str, tuple[str, list[Any]]]:
    """Every field a search may set: its wire path, its kind, and (for enums) its choices.
    Each numeric field's bounds go to BOUNDS as it is found."""
    found: dict[str, tuple[str, list[Any]]] = {}
    for section, model in SEARCHABLE_SECTIONS.items():
        found.update(_walk(model, section))
    return found


TUNABLE = tunable_paths()
NUMERIC = [p for p, (kind, _) in TUNABLE.items() if kind != "choice"]
INTEGER = [p for p, (kind, _) in TUNABLE.items() if kind == "int"]
CHOICE = {p: choices for p, (kind, choices) in TUNABLE.items() if kind == "choice"}


def _cel(values: list[Any]) -> str:
    return "[" + ", ".join(f"'{str(v).lower() if isinstance(v, bool) else v}'"
                           for v in values) + "]"


def _choice_rules() -> tuple[Rule, ...]:
    return tuple(
        Rule(f"self.path != '{path}' || !has(self.choices) || "
             f"self.choices.all(v, v in {_cel(choices)})",
             f"{path} takes one of {_cel(choices)[1:-1]}", field_path=".choices",
             reason="FieldValueInvalid")
        for path, choices in CHOICE.items())


def _within(x: str, bounds: tuple[tuple[str, float], ...]) -> str:
    return " && ".join(f"{x} {symbol} {value!r}" for symbol, value in bounds)


def _number(value: float) -> str:
    return f"{int(value):,}" if value.is_integer() else f"{value:g}"


def _bound_rules() -> tuple[Rule, ...]:
    """A range or value outside the field's own bounds would make trials that the API server
    refuses: it is refused here instead, naming the parameter and the bound."""
    return tuple(
        Rule(f"self.path != '{path}' || ((!has(self.min) || ({_within('self.min', bounds)})) "
             f"&& (!has(self.max) || ({_within('self.max', bounds)})) && "
             f"(!has(self.values) || self.values.all(v, {_within('v', bounds)})))",
             f"{path} takes values " + " and ".join(f"{s} {_number(v)}" for s, v in bounds) +
             ": the range and every value must be within them", reason="FieldValueInvalid")
        for path, bounds in BOUNDS.items() if bounds)


# A parameter's value in the status: a number, or an enum's string (or a bool).
TrialValue = Annotated[bool | int | float | str,
                       WithJsonSchema({"x-kubernetes-preserve-unknown-fields": True})]


class Scale(StrEnum):
    LINEAR = "linear"
    LOG = "log"


def _for_paths(rules: tuple[Rule, ...]) -> tuple[Rule, ...]:
    """Rules about a built-in trainer's field, which a custom trainer's parameter (arg or
    env, no path) passes."""
    return tuple(Rule(f"!has(self.path) || ({r.rule})", r.message, field_path=r.field_path,
                      reason=r.reason) for r in rules)


class SearchParameter(ApiModel):
    """One dimension of the search: a range (min, max, scale), a list of numeric values, or
    choices. It sets a field of the built-in trainer's spec (path), or a custom trainer's
    command-line argument (arg) or variable (env), by name."""

    cel_rules = (
        Rule("[has(self.path), has(self.arg), has(self.env)].filter(x, x).size() == 1",
             "set one of path (a field of the built-in trainer), arg or env (of a custom "
             "trainer)", reason="FieldValueInvalid"),
        Rule("has(self.path) || has(self.name)",
             "a custom trainer's parameter needs a name (its key in the trials' parameters)",
             field_path=".name", reason="FieldValueRequired"),
        Rule("[has(self.values), has(self.choices), has(self.min) || has(self.max)]"
             ".filter(x, x).size() == 1",
             "set one of values, choices, or min and max", reason="FieldValueInvalid"),
        Rule("has(self.min) == has(self.max)", "set both min and max", field_path=".max",
             reason="FieldValueRequired"),
        Rule("!has(self.min) || !has(self.max) || self.min <= self.max",
             "min must not be greater than max", field_path=".min", reason="FieldValueInvalid"),
        Rule("self.scale != 'log' || !has(self.min) || self.min > 0.0",
             "a log scale needs a positive range (min > 0)", field_path=".min",
             reason="FieldValueInvalid"),
        *_for_paths((
            Rule(f"!(self.path in {_cel(list(CHOICE))}) || has(self.choices)",
                 "an enum or boolean field is searched over choices", field_path=".choices",
                 reason="FieldValueRequired"),
            Rule(f"self.path in {_cel(list(CHOICE))} || !has(self.choices)",
                 "a numeric field is searched over values, or min and max",
                 field_path=".choices", reason="FieldValueForbidden"),
            Rule(f"!(self.path in {_cel(INTEGER)}) || !has(self.values) || "
                 "self.values.all(v, double(int(v)) == v)",
                 "values of an integer field must be whole numbers", field_path=".values",
                 reason="FieldValueInvalid"),
            *_choice_rules(),
            *_bound_rules(),
        )),
    )

    path: Literal[tuple(TUNABLE)] | None = Field(  # type: ignore[valid-type]
        default=None,
        description="path is the trial spec field set by this parameter, e.g. "
                    "optimization.learningRate or method.lora.rank (the built-in trainer).")
    name: str | None = Field(default=None, max_length=64, pattern=r"^[a-zA-Z_][a-zA-Z0-9_.]*$",
                             description="name of a custom trainer's parameter (lr).")
    arg: str | None = Field(default=None, max_length=128,
                            pattern=r"^-{1,2}[a-zA-Z0-9][-_a-zA-Z0-9.]*$",
                            description="arg is the custom trainer's flag that takes the value "
                                        "(--lr): each trial gets `--lr <value>` after its args.")
    env: str | None = Field(default=None, max_length=256,
                            pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$",
                            description="env is the custom trainer's variable that takes the "
                                        "value.")
    min: float | None = Field(default=None, description="min is the range's lower end.")
    max: float | None = Field(default=None, description="max is the range's upper end.")
    scale: Scale = Field(default=Scale.LINEAR,
                         description="scale samples the range uniformly (linear) or its "
                                     "logarithm (log). Default linear.")
    values: list[float] | None = Field(
        default=None, min_length=1, max_length=64,
        description="values lists the numbers to try (a grid needs values or choices).")
    choices: list[Annotated[str, Field(max_length=64)]] | None = Field(
        default=None, min_length=1, max_length=64,
        description="choices lists the values of an enum or boolean field to try "
                    "(\"true\"/\"false\" for a boolean).")

    @property
    def key(self) -> str:
        """The parameter's key in a trial's parameters: its path, or a custom one's name."""
        return str(self.path or self.name)

    def options(self) -> list[Any] | None:
        """The values to try, typed as the trial spec field is."""
        if self.choices is not None:
            kind = CHOICE.get(self.path or "", [])
            return [c == "true" for c in self.choices] if True in kind else list(self.choices)
        if self.values is not None and self.path in INTEGER:
            return [int(v) for v in self.values]
        return self.values


class Algorithm(StrEnum):
    GRID = "grid"
    RANDOM = "random"
    TPE = "tpe"


class Objective(ApiModel):
    metric: str = Field(default="eval_loss", max_length=64, pattern=r"^[a-zA-Z_][a-zA-Z0-9_.]*$",
                        description="metric is what trials are ranked by: eval_loss (the final "
                                    "validation loss), or a metric a custom trainer reports "
                                    "(mentor_trainer.report(metrics=...)); pruning compares "
                                    "its values by step.")
    direction: Literal["minimize", "maximize"] = Field(
        default="minimize", description="direction: minimize or maximize. Default minimize.")


class PrunerSpec(ApiModel):
    """Early stopping: a trial whose intermediate eval losses lag the others' is stopped."""

    type: Literal["median", "asha", "none"] = Field(
        default="median",
        description="type is median (stop a trial worse than the median of the others at the "
                    "same step), asha (asynchronous successive halving) or none.")
    startup_trials: int = Field(default=2, ge=0, le=1000,
                                description="startupTrials: no trial is pruned before this "
                                            "many have finished (median). Default 2.")
    warmup_steps: int = Field(default=0, ge=0, le=100_000_000,
                              description="warmupSteps: no trial is pruned before this step. "
                                          "Default 0.")
    min_resource: int = Field(default=1, ge=1, le=100_000_000,
                              description="minResource is the first rung's step (asha). "
                                          "Default 1.")
    reduction_factor: int = Field(default=3, ge=2, le=100,
                                  description="reductionFactor: 1/reductionFactor of the trials "
                                              "go on at each rung (asha). Default 3.")


MAX_PARAMETERS = 16
# The most points a grid may have: the chart's tuning.maxGridPoints replaces it in the CRD it
# installs (mentor.api.crd). The operator never lists a grid (mentor.decide.search decodes a
# point from its index), so this is a limit on what a search may ask, not on memory.
MAX_GRID_POINTS = 100_000


def _grid_points(search: str) -> str:
    """CEL for the number of points of the grid at `search`, as a double: the product of every
    parameter's count of values, with no fold in CEL, written out for the 16 it may have."""
    def count(p: str) -> str:
        return (f"(has({p}.values) ? double(size({p}.values)) : "
                f"(has({p}.choices) ? double(size({p}.choices)) : 1.0))")

    return " * ".join(f"(size({search}.parameters) > {i} ? "
                      f"{count(f'{search}.parameters[{i}]')} : 1.0)"
                      for i in range(MAX_PARAMETERS))


def _size_named(points: str) -> str:
    """CEL for the refusal that names the grid's size. `format` (Kubernetes' strings library),
    not `string()`: the API server's cost estimate takes a converted string to be as long as
    any, and refuses the CRD."""
    return f'"this grid has %.0f points; {GRID_LIMIT}".format([{points}])'


GRID_LIMIT = (f"a grid search may have at most {MAX_GRID_POINTS} points (the product of its "
              "parameters' counts of values): use fewer values, or random or tpe")


class SearchSpec(ApiModel):
    cel_rules = (
        Rule("self.parallelTrials <= self.maxTrials",
             "parallelTrials cannot exceed maxTrials", field_path=".parallelTrials",
             reason="FieldValueInvalid"),
        Rule("self.algorithm != 'grid' || "
             "self.parameters.all(p, has(p.values) || has(p.choices))",
             "a grid search needs values (or choices) for every parameter",
             field_path=".parameters",
             reason="FieldValueInvalid"),
        Rule("self.parameters.all(p, self.parameters.exists_one(q, "
             "(has(q.path) && has(p.path) && q.path == p.path) || "
             "(has(q.name) && has(p.name) && q.name == p.name)))",
             "each path (or name) may be searched once", field_path=".parameters",
             reason="FieldValueDuplicate"),
        Rule(f"self.algorithm != 'grid' || {_grid_points('self')} <= {MAX_GRID_POINTS}.0",
             GRID_LIMIT, field_path=".parameters", reason="FieldValueInvalid",
             message_expression=_size_named(_grid_points("self"))),
    )

    algorithm: Algorithm = Field(
        default=Algorithm.TPE,
        description="algorithm is grid (every combination of values, in order), random, or tpe "
                    "(Optuna's TPE, with constant_liar for parallel trials). Default tpe.")
    parameters: list[SearchParameter] = Field(
        min_length=1, max_length=MAX_PARAMETERS,
        description="parameters are the dimensions searched.")
    objective: Objective = Field(default_factory=Objective,
                                 description="objective ranks the trials.")
    max_trials: int = Field(default=8, ge=1, le=1000,
                            description="maxTrials is the most trials started (a grid's size "
                                        "caps it too). Default 8. May change while running.")
    parallel_trials: int = Field(default=1, ge=1, le=100,
                                 description="parallelTrials is the most trials running at once. "
                                             "Default 1. May change while running.")
    max_failed_trials: int | None = Field(
        default=None, ge=1, le=1000,
        description="maxFailedTrials fails the TuningJob once this many trials failed.")
    pruner: PrunerSpec | None = Field(default=None,
                                      description="pruner stops unpromising trials early.")
    seed: int = Field(default=0, ge=0, le=2**31 - 1,
                      description="seed makes the sampled parameters repeatable. Default 0.")


class BudgetSpec(ApiModel):
    max_gpu_hours: float | None = Field(
        default=None, alias="maxGPUHours", gt=0, le=10_000_000,
        description="maxGPUHours bounds the GPU-hours of all trials together: no trial starts "
                    "unless its expected GPU-hours fit, and the search ends with reason "
                    "BudgetExhausted when they run out. May change while running.")
    trial_gpu_hours: float | None = Field(
        default=None, alias="trialGPUHours", gt=0, le=10_000_000,
        description="trialGPUHours is the GPU-hours reserved for a trial before it starts. "
                    "Default: the most a finished trial used, or maxGPUHours / maxTrials "
                    "before any has finished.")
    active_deadline_seconds: int | None = Field(
        default=None, ge=1, le=31_536_000,
        description="activeDeadlineSeconds ends the search this long after it started, with "
                    "the best trial so far.")


class TrainingJobRef(ApiModel):
    name: ObjectName = Field(description="name of a TrainingJob in this namespace.")


class BaseModelSpec(ApiModel):
    cel_rules = (
        Rule("has(self.uri) != has(self.trainingJobRef)",
             "set exactly one of uri or trainingJobRef", reason="FieldValueInvalid"),
    )

    uri: Uri | None = Field(default=None,
                            description="uri is the model to tune: a path, pvc://<claim>/<path>, "
                                        "hf://<repo-id> or s3://<bucket>/<key>.")
    training_job_ref: TrainingJobRef | None = Field(
        default=None,
        description="trainingJobRef tunes the output of a TrainingJob, once it has succeeded; "
                    "status.lineage records which.")


class TrialPolicy(ApiModel):
    backoff_limit: int = Field(default=1, ge=0, le=1000,
                               description="backoffLimit is each trial's gang restarts before "
                                           "it fails. Default 1.")
    exit_codes: ExitCodePolicy = Field(default_factory=ExitCodePolicy,
                                       description="exitCodes overrides which exit codes retry.")
    active_deadline_seconds: int | None = Field(
        default=None, ge=1, le=31_536_000,
        description="activeDeadlineSeconds fails a trial that runs longer.")


_CUSTOM = "(has(self.trainer) && self.trainer.type == 'custom')"


class TuningJobSpec(ApiModel):
    """A TuningJob adapts a trained model (fully or with LoRA) on new data, and can search the
    hyper-parameters of that adaptation over trials, within a GPU-hour budget."""

    cel_rules = (
        *(r for r in TrainingSections.cel_rules if "globalBatchSize" in r.rule),
        *preference_rules("method"),
        *quantize_rules("method"),
        Rule(f"{_CUSTOM} || (has(self.baseModel) && has(self.data) && has(self.optimization))",
             "the built-in trainer's trials need baseModel, data and optimization (or set "
             "trainer.type: custom)", reason="FieldValueRequired"),
        Rule(f"!has(self.search) || ({_CUSTOM} ? self.search.parameters.all(p, !has(p.path)) "
             ": self.search.parameters.all(p, has(p.path)))",
             "the built-in trainer's trials are searched by path, a custom trainer's by arg or "
             "env", field_path=".search.parameters", reason="FieldValueInvalid"),
        Rule(f"{_CUSTOM} || !has(self.search) || !has(self.search.objective) || "
             "!has(self.search.objective.metric) || self.search.objective.metric == 'eval_loss'"
             " || (has(self.method) && has(self.method.type) && self.method.type == 'dpo' && "
             f"self.search.objective.metric in {list(DPO_OBJECTIVES)})",
             "the built-in trainer's trials are ranked by eval_loss (or, with dpo, by "
             f"{' or '.join(DPO_OBJECTIVES)})", reason="FieldValueInvalid",
             field_path=".search.objective.metric"),
        Rule("!has(self.search) || !has(self.search.objective) || "
             "!has(self.search.objective.metric) || "
             f"!(self.search.objective.metric in {list(DPO_OBJECTIVES)}) || "
             "(has(self.search.objective.direction) && "
             "self.search.objective.direction == 'maximize')",
             "a higher preference accuracy is better: set search.objective.direction: "
             "maximize", reason="FieldValueInvalid",
             field_path=".search.objective.direction"),
    )

    trainer: TrainerSpec = Field(default_factory=TrainerSpec,
                                 description="trainer each trial runs: Mentor's own (builtin), "
                                             "or your code (its args and env searched).")
    base_model: BaseModelSpec | None = Field(
        default=None, description="baseModel is the model to adapt (the built-in trainer).")
    method: AdaptationSpec = Field(default_factory=AdaptationSpec,
                                   description="method is full (every weight), lora, or dpo.")
    data: DataSpec | None = Field(default=None,
                                  description="data is what each trial learns from.")
    optimization: OptimizationSpec | None = Field(default=None,
                                                  description="optimization of each trial.")
    parallelism: ParallelismSpec = Field(default_factory=ParallelismSpec,
                                         description="parallelism of each trial.")
    checkpointing: CheckpointSpec = Field(
        default_factory=CheckpointSpec,
        description="checkpointing of each trial (default: under the trial's output).")
    output: OutputSpec = Field(description="output: each trial writes its model to "
                                           "<uri>/<trial name>; register makes each succeeded "
                                           "trial a version, the best one aliased `best`.")
    tracking: TrackingSpec | None = Field(
        default=None, description="tracking: a parent run, and a nested run for each trial. "
                                  "Default: the chart's tracking settings.")
    search: SearchSpec | None = Field(default=None,
                                      description="search over the trial spec; unset: one trial.")
    budget: BudgetSpec = Field(default_factory=BudgetSpec,
                               description="budget of the whole TuningJob.")
    trial_policy: TrialPolicy = Field(default_factory=TrialPolicy,
                                      description="trialPolicy: retries and deadline per trial.")
    scheduling: SchedulingSpec = Field(default_factory=SchedulingSpec,
                                       description="scheduling of each trial's pods.")
    template: PodTemplate = Field(default_factory=PodTemplate,
                                  description="template overrides each trial's pods.")


# -- status

MAX_TOP_TRIALS = 5


class TrialCounts(ApiModel):
    created: int = Field(default=0, ge=0, description="created counts trials started.")
    running: int = Field(default=0, ge=0, description="running counts trials not finished.")
    succeeded: int = Field(default=0, ge=0, description="succeeded counts finished trials.")
    pruned: int = Field(default=0, ge=0, description="pruned counts trials stopped early.")
    failed: int = Field(default=0, ge=0, description="failed counts failed trials.")


class TrialSummary(ApiModel):
    name: str = Field(max_length=253, description="name of the trial's TrainingJob.")
    parameters: dict[str, TrialValue] = Field(default_factory=dict, max_length=16,
                                              description="parameters the trial ran with.")
    objective: float | None = Field(default=None, description="objective the trial reached.")
    gpu_hours: float = Field(default=0, ge=0, alias="gpuHours",
                             description="gpuHours the trial used.")
    state: str = Field(max_length=32, description="state: Running, Succeeded, Pruned, Failed.")
    model_uri: str | None = Field(default=None, alias="modelURI", max_length=2048,
                                  description="modelURI is where the trial wrote its model.")


class Lineage(ApiModel):
    training_job: str = Field(max_length=253, description="trainingJob is the base model's job.")
    uid: str = Field(max_length=64, description="uid of that job.")
    eval_loss: float | None = Field(default=None, description="evalLoss it finished with.")
    model_uri: str = Field(alias="modelURI", max_length=2048,
                           description="modelURI is the model tuned.")


class Shown(ApiModel):
    trials: str = Field(default="", max_length=32, description="trials: done/max.")
    gpu_hours: str = Field(default="", alias="gpuHours", max_length=64,
                           description="gpuHours: used/limit.")


class TuningLedger(ApiModel):
    """Trials that were deleted: what they used and how they ended is kept here."""

    retired_gpu_seconds: float = Field(
        default=0, ge=0, alias="retiredGPUSeconds",
        description="retiredGPUSeconds is the GPU time of deleted trials.")
    retired: TrialCounts = Field(default_factory=TrialCounts,
                                 description="retired counts the deleted trials by outcome.")
    settled_trials: list[str] = Field(
        default_factory=list, max_length=1000,
        description="settledTrials are deleted trials already counted, until they are gone.")


class TuningStatus(ApiModel):
    """The observed state of a TuningJob: counts and the best trials, never the whole table
    (`kubectl get mtj -l mentor.dev/tuning-job=<name>` lists every trial)."""

    phase: Phase | None = Field(default=None, description="phase summarises the conditions.")
    reason: str | None = Field(default=None, max_length=128,
                               description="reason is why the job is in its phase.")
    conditions: list[Condition] = Field(
        default_factory=list, max_length=16, description="conditions, one per type.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    start_time: Timestamp | None = Field(default=None,
                                         description="startTime is when the first trial began.")
    completion_time: Timestamp | None = Field(default=None,
                                              description="completionTime is when it ended.")
    lineage: Lineage | None = Field(default=None,
                                    description="lineage is the TrainingJob of the base model.")
    trials: TrialCounts = Field(default_factory=TrialCounts, description="trials by state.")
    top_trials: list[TrialSummary] = Field(default_factory=list, max_length=MAX_TOP_TRIALS,
                                           description="topTrials are the five best trials.")
    best_trial: TrialSummary | None = Field(default=None,
                                            description="bestTrial is the best finished trial.")
    gpu_hours: float = Field(default=0, ge=0, alias="gpuHours",
                             description="gpuHours of all trials together.")
    reserved_gpu_hours: float = Field(default=0, ge=0, alias="reservedGPUHours",
                                      description="reservedGPUHours are held for running "
                                                  "trials beyond what they used so far.")
    cost_estimate: float | None = Field(default=None, ge=0,
                                        description="costEstimate of all trials together.")
    shown: Shown = Field(default_factory=Shown, description="shown is for kubectl get.")
    ledger: TuningLedger = Field(default_factory=TuningLedger,
                                 description="ledger is Mentor's bookkeeping of deleted trials.")
    observed_generation: int | None = Field(default=None, ge=0,
                                            description="observedGeneration acted on.")
