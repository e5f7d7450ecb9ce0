"""The TrainingJob spec, and the trainer configuration that the pods receive.

Every field's description starts with its wire name and says what it does and its default, so
that `kubectl explain trainingjob.spec...` is the reference.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, Field, WithJsonSchema

from mentor.api.base import ApiModel, KubeObject, ObjectName, Rule, Uri
from mentor.api.tracking import RegisterSpec, TrackingSpec

# Variables that the operator sets for torchrun. A user who sets one would break the rendezvous.
RESERVED_ENV = (
    "MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK",
    "MENTOR_CONFIG", "MENTOR_REPORT_URL", "MENTOR_REPORT_TOKEN", "MENTOR_CODE_DIR", "MENTOR_PIP",
)
CODE_DIR_ENV = "MENTOR_CODE_DIR"  # a custom trainer's code: the launcher runs torchrun there
OBJECTIVE_ENV = "MENTOR_OBJECTIVE"  # the metric a TuningJob trial reports as its objective
PIP_ENV = "MENTOR_PIP"  # a custom trainer's extra requirements (JSON): the launcher installs them
RESERVED_ENV_PREFIXES = ("PET_", "TORCHELASTIC_")


class Architecture(StrEnum):
    GPT2 = "gpt2"
    LLAMA = "llama"


class Size(StrEnum):
    """Named presets; the trainer maps each to layers, width and heads."""

    TINY = "tiny"
    SMALL = "small"
    MEDIUM = "medium"
    LARGE = "large"
    XLARGE = "xlarge"


class ModelShape(ApiModel):
    """Explicit dimensions of a new model, beside the named sizes."""

    cel_rules = (
        Rule("self.width % self.heads == 0", "width must be a multiple of heads",
             field_path=".width", reason="FieldValueInvalid"),
        Rule("!has(self.kvHeads) || self.heads % self.kvHeads == 0",
             "heads must be a multiple of kvHeads", field_path=".kvHeads",
             reason="FieldValueInvalid"),
    )

    layers: int = Field(ge=1, le=256, description="layers is the number of transformer blocks.")
    heads: int = Field(ge=1, le=256, description="heads is the number of attention heads.")
    kv_heads: int | None = Field(
        default=None, ge=1, le=256,
        description="kvHeads is the number of key/value heads (grouped-query attention; llama "
                    "only). Default: heads.")
    width: int = Field(ge=8, le=65536, description="width is the hidden size (d_model).")
    mlp_width: int | None = Field(
        default=None, ge=8, le=262144,
        description="mlpWidth is the feed-forward hidden size. Default: 4 × width (gpt2), "
                    "8/3 × width rounded to 64 (llama).")


class ModelSpec(ApiModel):
    """What is trained: a new model of an architecture and size, or one that already exists."""

    cel_rules = (
        Rule("[has(self.size), has(self.shape), has(self.from)].filter(x, x).size() == 1",
             "set exactly one of size or shape (from scratch), or from",
             reason="FieldValueInvalid"),
        Rule("self.architecture != 'gpt2' || !has(self.shape) || !has(self.shape.kvHeads) "
             "|| self.shape.kvHeads == self.shape.heads",
             "gpt2 has no grouped-query attention: kvHeads must equal heads",
             field_path=".shape.kvHeads", reason="FieldValueInvalid"),
    )

    architecture: Architecture = Field(
        default=Architecture.GPT2,
        description="architecture is the model family for training from scratch: gpt2 or llama. "
                    "Default gpt2.")
    size: Size | None = Field(
        default=None,
        description="size is a named preset (tiny, small, medium, large, xlarge) for training "
                    "from scratch. Exclusive with from.")
    shape: ModelShape | None = Field(
        default=None,
        description="shape gives a new model's dimensions explicitly (layers, heads, kvHeads, "
                    "width, mlpWidth). Exclusive with size and from.")
    from_: Uri | None = Field(
        default=None, alias="from",
        description="from is a pre-trained model or checkpoint to start from: a path, "
                    "pvc://<claim>/<path>, hf://<repo-id> or s3://<bucket>/<key>.")
    tokenizer: Literal["byte", "char", "pretrained"] | None = Field(
        default=None,
        description="tokenizer is byte or char for a new model on raw text (default byte), "
                    "or pretrained: the model's own (the default with from), or for a new "
                    "model the Hugging Face tokenizer at tokenizerFrom.")
    tokenizer_from: Uri | None = Field(
        default=None,
        description="tokenizerFrom is a Hugging Face tokenizer for a new model (a path, "
                    "pvc://<claim>/<path> or hf://<repo-id>); implies tokenizer pretrained.")


class DataFormat(StrEnum):
    TEXT = "text"
    JSONL = "jsonl"
    HF_DISK = "hf-disk"
    PROMPT_RESPONSE = "prompt-response"  # instruction tuning: the loss is on the response only
    CHAT = "chat"  # conversations, through the tokenizer's chat template; loss on the assistant
    PREFERENCE = "preference"  # a prompt, a chosen and a rejected response (method.type dpo)


class DataSpec(ApiModel):
    """The training data, and how it is cut into sequences."""

    cel_rules = (
        Rule("self.format != 'jsonl' || has(self.field)", "jsonl data needs field",
             field_path=".field", reason="FieldValueRequired"),
    )

    source: Uri = Field(
        description="source is where the data is: a path, pvc://<claim>/<path>, s3://... or "
                    "hf://<dataset> (a dataset saved with save_to_disk).")
    format: DataFormat = Field(
        default=DataFormat.TEXT,
        description="format is text (raw text files), jsonl (one JSON object a line), hf-disk, "
                    "prompt-response (jsonl of instructions: the loss is computed on the "
                    "response tokens only) or chat (jsonl of conversations rendered through the "
                    "tokenizer's chat template: the loss is on the assistant's turns only) or "
                    "preference (jsonl of a prompt, a chosen and a rejected response, for "
                    "adaptation type dpo; the prompt may be chat messages). Default text.")
    field: str | None = Field(
        default=None, max_length=128,
        description="field is the JSON key holding the text (jsonl, hf-disk) or the messages "
                    "(chat, default messages).")
    prompt_field: str = Field(default="prompt", max_length=128,
                              description="promptField is the prompt's key (prompt-response).")
    response_field: str = Field(default="response", max_length=128,
                                description="responseField is the response's key "
                                            "(prompt-response).")
    chosen_field: str = Field(default="chosen", max_length=128,
                              description="chosenField is the preferred response's key "
                                          "(preference).")
    rejected_field: str = Field(default="rejected", max_length=128,
                                description="rejectedField is the dispreferred response's key "
                                            "(preference).")
    sequence_length: int = Field(
        default=256, ge=8, le=131072,
        description="sequenceLength is the number of tokens in one packed sample (an "
                    "instruction or conversation is one sample, cut or padded to it). "
                    "Default 256.")
    validation_split: float = Field(
        default=0.1, ge=0, le=0.5,
        description="validationSplit is the fraction of the data held out for evaluation. "
                    "Default 0.1.")


class Schedule(StrEnum):
    COSINE = "cosine"
    LINEAR = "linear"
    CONSTANT = "constant"


class Optimizer(StrEnum):
    ADAMW = "adamw"
    SGD = "sgd"


class Precision(StrEnum):
    BF16 = "bf16"
    FP32 = "fp32"


class OptimizationSpec(ApiModel):
    """How long and how fast to learn."""

    cel_rules = (
        Rule("has(self.steps) != has(self.epochs)", "set exactly one of steps or epochs",
             reason="FieldValueInvalid"),
        Rule("self.globalBatchSize >= self.microBatchSize",
             "globalBatchSize must be at least microBatchSize", field_path=".globalBatchSize",
             reason="FieldValueInvalid"),
    )

    steps: int | None = Field(default=None, ge=1, le=100_000_000,
                              description="steps is the number of optimizer steps. "
                                          "Exclusive with epochs.")
    epochs: float | None = Field(default=None, gt=0, le=10_000,
                                 description="epochs is the number of passes over the data. "
                                             "Exclusive with steps.")
    global_batch_size: int = Field(
        default=32, ge=1, le=1_000_000,
        description="globalBatchSize is the number of sequences per optimizer step over all "
                    "ranks; gradients are accumulated to reach it. Default 32.")
    micro_batch_size: int = Field(
        default=8, ge=1, le=65536,
        description="microBatchSize is the number of sequences per rank per forward pass. "
                    "Default 8.")
    learning_rate: float = Field(
        default=3e-4, gt=0, le=10,
        description="learningRate is the peak learning rate. Default 3e-4.")
    schedule: Schedule = Field(default=Schedule.COSINE,
                               description="schedule decays the learning rate after warmup: "
                                           "cosine, linear or constant. Default cosine.")
    warmup_steps: int = Field(default=0, ge=0, le=10_000_000,
                              description="warmupSteps ramps the learning rate up linearly. "
                                          "Default 0.")
    weight_decay: float = Field(default=0.01, ge=0, le=10,
                                description="weightDecay is AdamW's decoupled decay. Default 0.01.")
    optimizer: Optimizer = Field(default=Optimizer.ADAMW,
                                 description="optimizer is adamw or sgd. Default adamw.")
    grad_clip: float | None = Field(default=1.0, gt=0, le=1000,
                                    description="gradClip is the max global gradient norm. "
                                                "Default 1.0.")
    precision: Precision = Field(default=Precision.BF16,
                                 description="precision is bf16 (autocast, on GPU) or fp32. "
                                             "Default bf16; CPU runs use fp32.")
    seed: int = Field(default=0, ge=0, le=2**31 - 1,
                      description="seed makes the run repeatable: data order, init, dropout. "
                                  "Default 0.")
    eval_interval: int = Field(default=100, ge=1, le=10_000_000,
                               description="evalInterval is the number of steps between "
                                           "evaluations. Default 100.")
    eval_batches: int = Field(default=20, ge=1, le=100_000,
                              description="evalBatches is the number of batches per evaluation. "
                                          "Default 20.")
    compile: bool = Field(default=False,
                          description="compile applies torch.compile to each transformer block. "
                                      "Default off.")
    loss_chunks: int = Field(
        default=1, ge=1, le=64,
        description="lossChunks computes the cross-entropy in this many chunks of positions, "
                    "each recomputed in the backward: the float32 logits of a large vocabulary "
                    "never exist all at once. Default 1.")
    activation_checkpointing: Literal["none", "full", "selective"] = Field(
        default="none",
        description="activationCheckpointing recomputes blocks' activations in the backward "
                    "instead of keeping them: full (every block) or selective (every other "
                    "block) trade compute for memory. Default none.")


class Strategy(StrEnum):
    DDP = "ddp"
    FSDP = "fsdp"


class ParallelismSpec(ApiModel):
    """How the work is spread: nodes × processes, with DDP or FSDP."""

    cel_rules = (
        Rule("!(has(self.gpusPerNode) && has(self.procsPerNode))",
             "set gpusPerNode (GPU) or procsPerNode (CPU), not both", reason="FieldValueInvalid"),
    )

    nodes: int = Field(default=1, ge=1, le=1024,
                       description="nodes is the number of pods; each runs one torchrun agent. "
                                   "Default 1.")
    gpus_per_node: int | None = Field(
        default=None, ge=1, le=16,
        description="gpusPerNode is the nvidia.com/gpu each pod requests; torchrun starts one "
                    "process per GPU.")
    procs_per_node: int | None = Field(
        default=None, ge=1, le=256,
        description="procsPerNode is the number of CPU processes per pod when no GPU is "
                    "requested. Default 1.")
    strategy: Strategy = Field(default=Strategy.DDP,
                               description="strategy is ddp or fsdp (FSDP2 fully_shard). "
                                           "Default ddp.")

    @property
    def procs(self) -> int:
        """Processes per node, the value torchrun's --nproc-per-node gets."""
        return self.gpus_per_node or self.procs_per_node or 1

    @property
    def world_size(self) -> int:
        return self.nodes * self.procs


class CheckpointSpec(ApiModel):
    uri: Uri | None = Field(
        default=None,
        description="uri is where checkpoints go: a path or pvc://<claim>/<path>. Default: "
                    "<output>/checkpoints.")
    interval_steps: int = Field(default=500, ge=1, le=10_000_000,
                                description="intervalSteps is the number of steps between "
                                            "checkpoints. Default 500.")
    keep: int = Field(default=2, ge=1, le=100,
                      description="keep is how many complete checkpoints are kept. Default 2.")
    resume: bool = Field(default=True,
                         description="resume continues from the latest complete checkpoint on "
                                     "start. Default true.")
    async_save: bool = Field(
        default=True,
        description="asyncSave writes checkpoints in the background: training pauses only to "
                    "copy the state to host memory. A checkpoint counts once every rank has "
                    "written it. Default true.")


class OutputSpec(ApiModel):
    cel_rules = (
        # Checked here, not after training: the model is written where the trainer can write.
        Rule("self.uri.startsWith('/') || self.uri.matches('^(pvc|s3|gs)://[^/]')",
             "uri must be an absolute path, pvc://<claim>/<path>, s3://<bucket>/<path> or "
             "gs://<bucket>/<path>", field_path=".uri", reason="FieldValueInvalid"),
    )

    uri: Uri = Field(description="uri is where the trained model is written, in Hugging Face "
                                 "format: a path or pvc://<claim>/<path>.")
    registry: RegisterSpec | None = Field(
        default=None, alias="register",
        description="register adds the model to MLflow's registry when the job succeeds "
                    "(needs tracking.mlflow).")


class ExitCodePolicy(ApiModel):
    """Which exit codes are worth a retry. By default 1-127 fail at once and 128+ are retried."""

    retry: list[Annotated[int, Field(ge=1, le=255)]] = Field(
        default_factory=list, max_length=64,
        description="retry lists exit codes below 128 that are retried anyway.")
    fail: list[Annotated[int, Field(ge=1, le=255)]] = Field(
        default_factory=list, max_length=64,
        description="fail lists exit codes of 128 and above that fail at once.")


class StopRequest(ApiModel):
    reason: str = Field(default="StopRequested", max_length=64,
                        pattern=r"^[A-Z][A-Za-z0-9]*$",
                        description="reason is the CamelCase reason the job ends with. Default "
                                    "StopRequested.")
    message: str = Field(default="", max_length=1024,
                         description="message explains the stop to a person.")


class RunPolicy(ApiModel):
    backoff_limit: int = Field(default=3, ge=0, le=1000,
                               description="backoffLimit is the number of gang restarts before "
                                           "the job fails. Default 3.")
    exit_codes: ExitCodePolicy = Field(default_factory=ExitCodePolicy,
                                       description="exitCodes overrides which exit codes retry.")
    active_deadline_seconds: int | None = Field(
        default=None, ge=1, le=31_536_000,
        description="activeDeadlineSeconds fails the job this long after it started.")
    ttl_seconds_after_finished: int | None = Field(
        default=None, ge=0, le=31_536_000,
        description="ttlSecondsAfterFinished deletes the finished job after this long.")
    suspend: bool = Field(default=False,
                          description="suspend deletes the pods and holds the job; false "
                                      "resumes it from its checkpoint. Default false.")
    max_gpu_hours: float | None = Field(
        default=None, alias="maxGPUHours", gt=0, le=10_000_000,
        description="maxGPUHours stops the job with reason BudgetExhausted when reached.")
    stop: StopRequest | None = Field(
        default=None,
        description="stop ends the job now, gracefully: its pods get SIGTERM (the trainer "
                    "writes a checkpoint) and the job ends in phase Stopped with this reason. "
                    "A TuningJob stops the trials its pruner gives up on this way (Pruned).")


class Toleration(ApiModel):
    key: str | None = Field(default=None, max_length=316, description="key is the taint key.")
    operator: Literal["Exists", "Equal"] | None = Field(default=None,
                                                         description="operator: Exists or Equal.")
    value: str | None = Field(default=None, max_length=63, description="value is the taint value.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="effect is the taint effect to tolerate; empty means all.")
    toleration_seconds: int | None = Field(default=None,
                                           description="tolerationSeconds bounds NoExecute.")


class SchedulingSpec(ApiModel):
    node_selector: dict[str, Annotated[str, Field(max_length=63)]] = Field(
        default_factory=dict, max_length=32,
        description="nodeSelector is copied to every pod.")
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32,
                                          description="tolerations are copied to every pod.")
    affinity: KubeObject | None = Field(default=None,
                                        description="affinity is a core/v1 Affinity for every pod.")
    priority_class_name: ObjectName | None = Field(
        default=None, description="priorityClassName is the pods' PriorityClass.")
    scheduler_name: ObjectName | None = Field(
        default=None, description="schedulerName picks another scheduler (e.g. for gangs).")
    queue_name: ObjectName | None = Field(
        default=None,
        description="queueName is passed to Kueue as the kueue.x-k8s.io/queue-name label.")


class EnvVar(ApiModel):
    name: str = Field(min_length=1, max_length=256, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$",
                      description="name of the variable.")
    value: str | None = Field(default=None, max_length=32768, description="value of the variable.")
    value_from: KubeObject | None = Field(default=None,
                                          description="valueFrom is a core/v1 EnvVarSource.")


_reserved = ", ".join(f"'{n}'" for n in RESERVED_ENV)
_prefixes = " || ".join(f"e.name.startsWith('{p}')" for p in RESERVED_ENV_PREFIXES)
_ENV_RULE: dict[str, Any] = {"x-kubernetes-validations": [{
    "rule": f"self.all(e, !(e.name in [{_reserved}]) && !({_prefixes}))",
    "message": "env may not set torchrun's variables (PET_*, TORCHELASTIC_*, MASTER_ADDR, "
               "MASTER_PORT, WORLD_SIZE, RANK, ...): the operator sets them",
    "reason": "FieldValueForbidden",
}]}


def _quantity(value: Any) -> int | str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("must be of type integer or string (a quantity: 2, \"500m\", \"16Gi\")")
    return value


# A resource quantity as Kubernetes writes it: 2, "500m", "16Gi".
Quantity = Annotated[Any, AfterValidator(_quantity),
                     WithJsonSchema({"x-kubernetes-int-or-string": True})]
_GPU_SET_ELSEWHERE = ("nvidia.com/gpu comes from spec.parallelism.gpusPerNode (one process per "
                      "GPU); set it there, not in template.resources")


class ResourceRequirements(ApiModel):
    """core/v1 ResourceRequirements of the trainer container, less its GPUs."""

    cel_rules = (
        Rule("!has(self.limits) || !('nvidia.com/gpu' in self.limits)", _GPU_SET_ELSEWHERE,
             field_path=".limits", reason="FieldValueForbidden"),
        Rule("!has(self.requests) || !('nvidia.com/gpu' in self.requests)", _GPU_SET_ELSEWHERE,
             field_path=".requests", reason="FieldValueForbidden"),
    )

    limits: dict[str, Quantity] | None = Field(
        default=None, max_length=32,
        description="limits: the most of each resource the trainer may use (cpu, memory, ...).")
    requests: dict[str, Quantity] | None = Field(
        default=None, max_length=32,
        description="requests: what the scheduler reserves for the trainer. Default: the "
                    "operator's cpu and memory defaults when neither is set.")
    claims: list[KubeObject] | None = Field(
        default=None, max_length=16, description="claims: DynamicResourceAllocation claims.")


class PodTemplate(ApiModel):
    """Overrides for the trainer pods. The operator sets everything torchrun needs."""

    image: str | None = Field(default=None, max_length=1024,
                              description="image is the trainer image. Default: the operator's "
                                          "configured trainer image.")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        default=None, description="imagePullPolicy of the trainer container.")
    image_pull_secrets: list[ObjectName] = Field(default_factory=list, max_length=16,
                                                 description="imagePullSecrets names Secrets.")
    service_account_name: ObjectName | None = Field(
        default=None, description="serviceAccountName runs the pods as this ServiceAccount.")
    env: list[EnvVar] = Field(
        default_factory=list, max_length=128,
        description="env adds variables to the trainer; torchrun's (PET_*, MASTER_ADDR, ...) are "
                    "reserved.", json_schema_extra=_ENV_RULE)
    resources: ResourceRequirements | None = Field(
        default=None,
        description="resources are the trainer's core/v1 ResourceRequirements; nvidia.com/gpu "
                    "is set from parallelism.gpusPerNode.")
    volumes: list[KubeObject] = Field(default_factory=list, max_length=64,
                                      description="volumes are extra core/v1 Volumes.")
    volume_mounts: list[KubeObject] = Field(default_factory=list, max_length=64,
                                            description="volumeMounts mount them in the trainer.")


class LoraSpec(ApiModel):
    rank: int = Field(default=8, ge=1, le=1024, description="rank of the LoRA update. Default 8.")
    alpha: int = Field(default=16, ge=1, le=4096,
                         description="alpha scales the update by alpha / rank. Default 16.")
    dropout: float = Field(default=0.05, ge=0, lt=1, description="dropout on the LoRA input.")
    target_modules: list[Annotated[str, Field(max_length=128)]] = Field(
        default_factory=list, max_length=64,
        description="targetModules names the modules adapted. Default: the architecture's "
                    "attention projections.")
    quantize: Literal["none", "nf4"] = Field(
        default="none",
        description="quantize nf4 loads the frozen base in 4 bits through bitsandbytes "
                    "(QLoRA: NormalFloat4, double-quantized, computing in bf16); the adapter "
                    "stays float32. With strategy ddp. Default none.")


# What a DPO trainer reports that a search may rank its trials by, besides eval_loss (there,
# the held-out DPO loss): the share of held-out pairs whose chosen response it rewards more.
DPO_OBJECTIVES = ("preference_accuracy",)


class DpoSpec(ApiModel):
    """Preference tuning: the model learns to rank each chosen response above its rejected one
    more than the frozen base (the reference) does."""

    beta: float = Field(default=0.1, gt=0, le=100,
                        description="beta: how far the tuned model may move from the reference "
                                    "(the KL penalty's inverse weight). Default 0.1.")
    loss: Literal["sigmoid", "ipo", "simpo"] = Field(
        default="sigmoid",
        description="loss is sigmoid (the DPO paper's), ipo (a squared loss that does not "
                    "overfit deterministic preferences) or simpo (reference-free: length-"
                    "normalised log-likelihoods and a target margin). Default sigmoid.")
    target_margin: float = Field(default=0.5, ge=0, le=100,
                                 description="targetMargin is SimPO's gamma (simpo only). "
                                             "Default 0.5.")
    weights: Literal["lora", "full"] = Field(
        default="lora",
        description="weights trained: a LoRA adapter (the reference is the same model with "
                    "the adapter off: no second copy) or every weight (the reference is a "
                    "frozen copy, sharded like the model). Default lora.")


class AdaptationSpec(ApiModel):
    """How a pre-trained model is adapted: all its weights, a LoRA adapter, or preference
    tuning (DPO) of either."""

    type: Literal["full", "lora", "dpo"] = Field(
        default="lora", description="type is full, lora, or dpo (preference tuning of a LoRA "
                                    "adapter or of every weight: see dpo). Default lora.")
    lora: LoraSpec = Field(default_factory=LoraSpec, description="lora settings, for lora.")
    dpo: DpoSpec = Field(default_factory=DpoSpec, description="dpo settings, for dpo.")
    merge: bool = Field(default=False,
                        description="merge writes merged safetensors weights instead of the "
                                    "adapter alone. Default false.")

    @property
    def uses_lora(self) -> bool:
        """Whether a LoRA adapter is what is trained."""
        return self.type == "lora" or (self.type == "dpo" and self.dpo.weights == "lora")


class ConfigMapFile(ApiModel):
    name: ObjectName = Field(description="name of the ConfigMap.")
    key: str = Field(max_length=253, pattern=r"^[-._a-zA-Z0-9]+$",
                     description="key of the file in it (train.py).")


class CodeSpec(ApiModel):
    """Where a custom trainer's code is: the directory its command runs in."""

    cel_rules = (
        Rule("has(self.path) != has(self.configMap)", "set one of path or configMap",
             reason="FieldValueInvalid"),
    )

    path: Uri | None = Field(
        default=None, description="path is a directory in the image, or pvc://<claim>/<dir>.")
    config_map: ConfigMapFile | None = Field(
        default=None, alias="configMap",
        description="configMap holds a single-file script, mounted as <code dir>/<key>.")


class TrainerSpec(ApiModel):
    """What the pods run: Mentor's own trainer, or the user's code under the same launcher."""

    cel_rules = (
        Rule("self.type == 'custom' || (!has(self.command) && !has(self.args) && "
             "!has(self.code) && !has(self.env) && !has(self.pip))",
             "command, args, code, env and pip are for a custom trainer (type: custom)",
             reason="FieldValueForbidden"),
        Rule("self.type == 'builtin' || has(self.command)",
             "a custom trainer needs command: its script (train.py) or -m and a module",
             field_path=".command", reason="FieldValueRequired"),
    )

    type: Literal["builtin", "custom"] = Field(
        default="builtin",
        description="type is builtin (Mentor's trainer: model, data and optimization say what "
                    "it does) or custom (command runs under torchrun). Default builtin.")
    command: list[Annotated[str, Field(max_length=4096)]] | None = Field(
        default=None, min_length=1, max_length=64,
        description="command is what torchrun runs: a script (train.py, relative to the code "
                    "directory) or -m and a module, as torchrun takes them.")
    args: list[Annotated[str, Field(max_length=4096)]] | None = Field(
        default=None, max_length=256, description="args follow the command.")
    code: CodeSpec | None = Field(
        default=None, description="code is where the script is; default: the image's working "
                                  "directory.")
    env: list[EnvVar] | None = Field(
        default=None, max_length=128, json_schema_extra=_ENV_RULE,
        description="env adds variables to the trainer, as template.env does.")
    pip: list[Annotated[str, Field(min_length=1, max_length=512, pattern=r"^[^-\s]\S*$")]] | \
        None = Field(
            default=None, max_length=32,
            description="pip lists requirements (numpy==2.1, a wheel's path) installed before "
                        "the script starts, once per job into <output>/.mentor/pip, where the "
                        "pods can reach a package index. An image built FROM the trainer image "
                        "is the production path.")

    @property
    def custom(self) -> bool:
        return self.type == "custom"


# Processes of one node, as the trainer counts them: GPUs, else CPU processes, else 1.
_NODES = "(has(self.parallelism) ? self.parallelism.nodes : 1)"
_PROCS = ("(has(self.parallelism) && has(self.parallelism.gpusPerNode) ? "
          "self.parallelism.gpusPerNode : (has(self.parallelism) && "
          "has(self.parallelism.procsPerNode) ? self.parallelism.procsPerNode : 1))")


def quantize_rules(method: str) -> tuple[Rule, ...]:
    """A quantized base is frozen and replicated: only a LoRA adapter trains on it, and FSDP
    does not shard bitsandbytes' packed weights."""
    section = f"self.{method}"
    quantized = (f"(has({section}) && has({section}.lora) && has({section}.lora.quantize) && "
                 f"{section}.lora.quantize != 'none')")
    lora = (f"(!has({section}.type) || {section}.type == 'lora' || ({section}.type == 'dpo' && "
            f"(!has({section}.dpo) || !has({section}.dpo.weights) || "
            f"{section}.dpo.weights == 'lora')))")
    return (
        Rule(f"!{quantized} || {lora}",
             "a quantized base is frozen: quantize is for a LoRA adapter (type lora, or dpo "
             "with weights lora)", field_path=f".{method}.lora.quantize",
             reason="FieldValueInvalid"),
        Rule(f"!{quantized} || !has(self.parallelism) || !has(self.parallelism.strategy) || "
             "self.parallelism.strategy != 'fsdp'",
             "a quantized base is replicated, not sharded: use strategy ddp",
             field_path=".parallelism.strategy", reason="FieldValueInvalid"),
    )


def preference_rules(method: str) -> tuple[Rule, ...]:
    """DPO learns from preference data, and only DPO can: `method` is the section that says how
    the model is adapted (a TrainingJob's adaptation, a TuningJob's method)."""
    dpo = f"(has(self.{method}) && has(self.{method}.type) && self.{method}.type == 'dpo')"
    preference = "(has(self.data) && has(self.data.format) && self.data.format == 'preference')"
    return (
        Rule(f"!{dpo} || {preference}",
             "dpo learns from preference pairs: set data.format: preference",
             field_path=".data", reason="FieldValueInvalid"),
        Rule(f"!{preference} || {dpo}",
             f"preference data is for preference tuning: set {method}.type: dpo",
             field_path=".data.format", reason="FieldValueInvalid"),
    )


class TrainingSections(ApiModel):
    """The sections that a job and the trainer share."""

    cel_rules: ClassVar[tuple[Rule, ...]] = (
        Rule("!has(self.adaptation) || (has(self.model) && has(self.model.from))",
             "adaptation tunes a pre-trained model: set model.from", field_path=".adaptation",
             reason="FieldValueInvalid"),
        *preference_rules("adaptation"),
        *quantize_rules("adaptation"),
        # Refused at admission, before the pods take their GPUs to find it out.
        Rule(f"!has(self.optimization) || self.optimization.globalBatchSize % "
             f"({_NODES} * {_PROCS} * self.optimization.microBatchSize) == 0",
             "globalBatchSize must be a multiple of nodes × processes per node × "
             "microBatchSize", field_path=".optimization.globalBatchSize",
             reason="FieldValueInvalid"),
    )

    model: ModelSpec | None = Field(
        default=None, description="model is what is trained (the built-in trainer's).")
    adaptation: AdaptationSpec | None = Field(
        default=None,
        description="adaptation tunes a pre-trained model (model.from): all its weights (full) "
                    "or a LoRA adapter. Unset: every weight is trained.")
    data: DataSpec | None = Field(
        default=None, description="data is what it learns from (the built-in trainer's).")
    optimization: OptimizationSpec | None = Field(
        default=None, description="optimization: how long and how fast (the built-in "
                                  "trainer's).")
    parallelism: ParallelismSpec = Field(default_factory=ParallelismSpec,
                                         description="parallelism: nodes, processes, strategy.")
    checkpointing: CheckpointSpec = Field(default_factory=CheckpointSpec,
                                          description="checkpointing: where, how often, resume.")
    output: OutputSpec = Field(description="output is where the trained model goes.")
    tracking: TrackingSpec | None = Field(
        default=None, description="tracking records the job in MLflow and TensorBoard as well. "
                                  "Default: the chart's tracking settings.")


class TrainerConfig(TrainingSections):
    """What the built-in trainer needs to run: the part of the spec mounted into the pods as a
    file. `mentor_trainer` parses it with this same model, so the operator and the trainer
    cannot disagree about its meaning. (A custom trainer's pods get the same file, without the
    sections it does not use: mentor_trainer.api reads its output and checkpoint paths.)
    """

    model: ModelSpec = Field(description="model is what is trained.")
    data: DataSpec = Field(description="data is what it learns from.")
    optimization: OptimizationSpec = Field(description="optimization: how long and how fast.")


class TrainingJobSpec(TrainingSections):
    """A TrainingJob teaches a model from data, from scratch or from a checkpoint, with
    Mentor's trainer or the user's own code."""

    cel_rules = (
        *TrainingSections.cel_rules,
        Rule("(has(self.trainer) && self.trainer.type == 'custom') || (has(self.model) && "
             "has(self.data) && has(self.optimization))",
             "the built-in trainer needs model, data and optimization (or set trainer.type: "
             "custom)", reason="FieldValueRequired"),
    )

    trainer: TrainerSpec = Field(default_factory=TrainerSpec,
                                 description="trainer: Mentor's own (builtin), or your code.")
    run_policy: RunPolicy = Field(default_factory=RunPolicy,
                                  description="runPolicy: retries, deadlines, budget, suspend.")
    scheduling: SchedulingSpec = Field(default_factory=SchedulingSpec,
                                       description="scheduling: where the pods may run.")
    template: PodTemplate = Field(default_factory=PodTemplate,
                                  description="template overrides the trainer pods.")

    def trainer_config(self) -> TrainingSections:
        """The config file of the pods: a TrainerConfig for the built-in trainer; for a custom
        one, the sections it has (its output and checkpoints above all)."""
        shared = set(TrainingSections.model_fields)
        kind = TrainingSections if self.trainer.custom else TrainerConfig
        return kind.model_validate(self.model_dump(include=shared, by_alias=True))
