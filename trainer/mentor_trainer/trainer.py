"""The training loop. `Trainer.train()` reads top to bottom: resume, then step, evaluate and
checkpoint until the last step, then write the model.

Repeatability: the data of step s and the random state of step s are functions of (seed, step,
rank), and the learning rate is a function of the step, so a run resumed from a checkpoint
computes the same losses as one that never stopped.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from mentor.api.training import (
    OBJECTIVE_ENV,
    DataFormat,
    Optimizer,
    Precision,
    Schedule,
    TrainerConfig,
)
from mentor_trainer import checkpoint, data, mfu, preference, shards
from mentor_trainer.dist import World, all_reduce_max, barrier
from mentor_trainer.errors import BadConfig, NonFiniteLoss
from mentor_trainer.models import (
    frozen_dtype,
    load_pretrained,
    max_positions,
    new_model,
    parameter_count,
)
from mentor_trainer.parallelize import parallelize, shard_frozen
from mentor_trainer.reporting import Reporter
from mentor_trainer.tokenizer import CharTokenizer, Tokenizer, known_tokenizer

log = logging.getLogger("mentor_trainer")
# MENTOR_PROFILE_STEP=N: step N (counted from 1) runs under torch.profiler, and rank 0 writes
# the operators that took its time to <output>/profile.txt: where a step's time goes, for the
# GPU benchmarks (benchmarks/gpu_throughput.py --profile-step) or a slow job.
PROFILE_STEP = "MENTOR_PROFILE_STEP"
PROFILE_ROWS = 30


class Stopped(Exception):
    """SIGTERM arrived; a checkpoint was written."""


def _cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The summed loss of the learned targets, in float32 whatever the logits' precision."""
    return F.cross_entropy(logits.float(), targets, ignore_index=data.IGNORE, reduction="sum")


def lr_at(step: int, total: int, config: TrainerConfig) -> float:
    """The learning rate of 0-based step `step`: linear warmup, then the chosen decay to 10%."""
    opt = config.optimization
    peak, warmup = opt.learning_rate, opt.warmup_steps
    if step < warmup:
        return peak * (step + 1) / warmup
    if opt.schedule == Schedule.CONSTANT or total <= warmup:
        return peak
    progress = (step - warmup) / max(1, total - warmup)
    floor = 0.1 * peak
    if opt.schedule == Schedule.LINEAR:
        return floor + (peak - floor) * (1 - progress)
    return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * progress))


class Trainer:
    def __init__(self, config: TrainerConfig, world: World) -> None:
        self.config, self.world = config, world
        self.output = Path(config.output.uri)
        self.checkpoints = Path(config.checkpointing.uri or self.output / "checkpoints")
        self.reporter = Reporter(self.output, enabled=world.is_main, config=config.wire())
        self.stop_requested = False
        self.lora = False
        adaptation = config.adaptation
        self.dpo = adaptation.dpo if adaptation and adaptation.type == "dpo" else None
        self.reference: torch.nn.Module | None = None  # full-weight DPO's frozen base
        self._held: tuple[int, float] = (0, 0.0)
        self.async_saves = checkpoint.AsyncCheckpointer(
            self.checkpoints, world, config.checkpointing.keep) \
            if config.checkpointing.async_save else None
        self.gpus = world.size if world.device.type == "cuda" else 0
        self.autocast = (world.device.type == "cuda"
                         and config.optimization.precision == Precision.BF16)
        self._build()

    # -- setup

    def _tokens(self) -> tuple[Tokenizer, Any]:
        """The corpus as a memory-mapped token shard, tokenized once by rank 0 (cached beside
        the data, or under the output when the data is read-only); the others wait for it."""
        cfg, known = self.config.data, known_tokenizer(self.config)
        fallback = self.output / ".mentor" / "tokens"
        path = shards.prepare(cfg, known, fallback) if self.world.is_main \
            else shards.wait_for(cfg, known, fallback)
        shard = shards.open_shard(path)
        tokenizer = known or shard.tokenizer()
        assert tokenizer is not None
        return tokenizer, shard.tokens

    def _build(self) -> None:
        """Data, model, parallelism and optimizer, in that order: the model's vocabulary
        comes from the data's tokenizer, and the optimizer takes the parallel model's
        parameters."""
        self._build_data()
        self._build_model()
        self.model = parallelize(self.base, self.config, self.world, self.autocast)
        if self.reference is not None:
            self.reference = shard_frozen(self.reference, self.config, self.world,
                                          self.autocast)
        self._build_optimizer()

    def _build_data(self) -> None:
        cfg, world, opt = self.config, self.world, self.config.optimization
        self.train_data: data.Packed | data.Examples | data.Pairs
        self.val_data: data.Packed | data.Examples | data.Pairs
        if cfg.data.format == DataFormat.PREFERENCE:  # a pair a sample, loss on the responses
            pairs = data.read_pairs(cfg.data)
            self.tokenizer = known_tokenizer(self.config) or \
                CharTokenizer.fit("".join(data.pair_texts(pairs, cfg.data)))
            self.train_data, self.val_data = data.split_pairs(
                data.encode_pairs(pairs, cfg.data, self.tokenizer), cfg.data.validation_split)
        elif cfg.data.format in data.INSTRUCTIONS:  # one example a sample, loss on the answers
            records = data.read_records(cfg.data)
            self.tokenizer = known_tokenizer(self.config) or \
                CharTokenizer.fit("".join(data.record_texts(records, cfg.data)))
            examples = data.encode_examples(records, cfg.data, self.tokenizer)
            self.train_data, self.val_data = data.split_examples(examples,
                                                                 cfg.data.validation_split)
        else:
            self.tokenizer, tokens = self._tokens()
            self.train_data, self.val_data = data.split(tokens, cfg.data.validation_split,
                                                        cfg.data.sequence_length)
        self.schedule = data.Schedule(len(self.train_data), opt.global_batch_size,
                                      opt.micro_batch_size, world.size, world.rank, opt.seed)
        if opt.steps:
            self.total_steps = opt.steps
        else:
            assert opt.epochs is not None
            self.total_steps = max(1, math.ceil(opt.epochs * len(self.train_data)
                                                / opt.global_batch_size))

    def _build_model(self) -> None:
        """A new model or a pre-trained one (with LoRA, if asked), on the device, with the
        FLOPs per token its MFU is measured by."""
        cfg, opt = self.config, self.config.optimization
        self.lora = bool(cfg.adaptation and cfg.adaptation.uses_lora)
        self.quantize = cfg.adaptation.lora.quantize if cfg.adaptation and self.lora else "none"
        if cfg.model.from_:
            # A LoRA base is frozen: in bf16 where the steps compute in bf16 anyway, or packed
            # in 4 bits (QLoRA) on its device.
            model = load_pretrained(cfg.model.from_, frozen_dtype(self.world.device, opt.precision)
                                    if self.lora else torch.float32, self.quantize,
                                    self.world.device)
            limit = max_positions(model)
            if limit is not None and cfg.data.sequence_length > limit:
                raise BadConfig(f"data.sequenceLength {cfg.data.sequence_length} exceeds the "
                                f"{limit} positions of the model at {cfg.model.from_}; lower "
                                "data.sequenceLength")
            config: Any = getattr(model, "config", None)
            if config is not None:
                config.use_cache = False  # training never reuses past keys and values
        else:
            model = new_model(cfg.model, self.tokenizer.vocab_size, cfg.data.sequence_length,
                              opt.seed, self.tokenizer.eos_id, self.tokenizer.bos_id)
        if self.dpo and not self.lora and self.dpo.loss != "simpo":
            assert cfg.model.from_ is not None
            reference = load_pretrained(cfg.model.from_,
                                        frozen_dtype(self.world.device, opt.precision))
            self.reference = reference.requires_grad_(False).eval().to(self.world.device)
        if self.lora:
            torch.manual_seed(opt.seed)  # the adapter's initial weights: the same every run
            model = self._with_lora(model)
            if self.async_saves:
                self.async_saves.frozen = False
        self.base = model if self.quantize != "none" else model.to(self.world.device)
        self.params = parameter_count(self.base)
        layers, width = mfu.dimensions(self.base)
        self.flops_per_token = mfu.flops_per_token(self.base, layers, width,
                                                   cfg.data.sequence_length)
        self.peak = mfu.peak_flops(self.world.device)
        if self.world.is_main:
            trained = sum(p.numel() for p in self.base.parameters() if p.requires_grad)
            frozen = {p.dtype for p in self.base.parameters() if not p.requires_grad}
            held = "nf4 (bitsandbytes)" if self.quantize != "none" else \
                ", ".join(sorted(str(d).removeprefix("torch.") for d in frozen))
            log.info("model: %s parameters, %s trained%s", f"{self.params:,}", f"{trained:,}",
                     f"; the frozen ones in {held}" if frozen else "")

    def _build_optimizer(self) -> None:
        opt = self.config.optimization
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        if opt.optimizer == Optimizer.ADAMW:
            self.optimizer: torch.optim.Optimizer = torch.optim.AdamW(
                trainable, lr=opt.learning_rate, weight_decay=opt.weight_decay,
                betas=(0.9, 0.95), fused=self.world.device.type == "cuda")
        else:
            self.optimizer = torch.optim.SGD(trainable, lr=opt.learning_rate, momentum=0.9,
                                             weight_decay=opt.weight_decay)

    # -- the loop

    def train(self) -> dict[str, Any]:
        step = self._resume()
        if step == 0 and self.config.model.from_:
            # Where a pre-trained model starts on this data: the baseline a tuning beats (and
            # the first point a TuningJob's pruner compares).
            self._evaluate_and_record(0)
        previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        loss = eval_loss = float("nan")
        tokens_per_step = self.config.optimization.global_batch_size * \
            self.config.data.sequence_length * (2 if self.dpo else 1)  # a pair: two sequences
        tick, started, trained_tokens = time.perf_counter(), time.perf_counter(), 0
        try:
            while step < self.total_steps:
                if all_reduce_max(self.world, float(self.stop_requested)):
                    self._checkpoint(step, wait=True)
                    raise Stopped(f"stopped by SIGTERM at step {step}; checkpoint written")
                with self._profiled(step + 1):
                    loss, grad_norm, lr, stats = self._step(step)
                step += 1
                now = time.perf_counter()
                seconds_per_step, tick = now - tick, now
                tps = tokens_per_step / seconds_per_step
                trained_tokens += tokens_per_step
                self.reporter.record({
                    "step": step, "total_steps": self.total_steps, "loss": loss,
                    "learning_rate": lr, "grad_norm": grad_norm, "tokens_per_second": tps,
                    "mfu": self._mfu(tps), "epoch": self.schedule.epoch_of(step),
                    "seconds_per_step": seconds_per_step, "gpus": self.gpus,
                    **({"gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)}
                       if self.gpus else {}),
                    **({"metrics": stats} if stats else {}),
                })
                if step % self.config.optimization.eval_interval == 0 or step == self.total_steps:
                    eval_loss = self._evaluate_and_record(step)
                interval = self.config.checkpointing.interval_steps
                if step % interval == 0 or step == self.total_steps:
                    self._checkpoint(step, wait=step == self.total_steps)
        except BaseException:
            self.reporter.close(timeout=5.0)  # what was recorded reaches its files and servers
            raise
        finally:
            signal.signal(signal.SIGTERM, previous)
        self.export()
        self.reporter.close()
        elapsed = time.perf_counter() - started
        return {"step": step, "loss": loss, "eval_loss": eval_loss,
                "tokens_per_second": trained_tokens / elapsed if elapsed else 0.0}

    @contextlib.contextmanager
    def _profiled(self, step: int) -> Any:
        """Step `step` under torch.profiler when MENTOR_PROFILE_STEP names it; its table (by
        self time on the device, or on the CPU without one) to <output>/profile.txt."""
        if os.environ.get(PROFILE_STEP) != str(step):
            yield
            return
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU]
        if self.world.device.type == "cuda":
            activities.append(ProfilerActivity.CUDA)
        with profile(activities=activities) as profiler:
            yield
            if self.world.device.type == "cuda":
                torch.cuda.synchronize()
        if self.world.is_main:
            by = "self_cuda_time_total" if self.world.device.type == "cuda" else \
                "self_cpu_time_total"
            self.output.mkdir(parents=True, exist_ok=True)
            (self.output / "profile.txt").write_text(
                f"step {step}, sorted by {by}\n"
                + profiler.key_averages().table(sort_by=by, row_limit=PROFILE_ROWS))

    def _evaluate_and_record(self, step: int) -> float:
        """Evaluate, and report the held-out loss with its metrics (a TuningJob's trial also
        reports the one its search ranks by as its objective)."""
        loss, metrics = self.evaluate()
        if not math.isnan(loss):
            record: dict[str, Any] = {"step": step, "eval_loss": loss}
            if metrics:
                record["metrics"] = metrics
                objective = os.environ.get(OBJECTIVE_ENV)
                if objective in metrics:
                    record["objective"] = metrics[objective]
            self.reporter.record(record)
        return loss

    def _on_sigterm(self, signum: int, frame: object) -> None:
        self.stop_requested = True

    def _resume(self) -> int:
        if not self.config.checkpointing.resume:
            return 0
        found = checkpoint.latest(self.checkpoints)
        if found is None:
            return 0
        step, path = found
        written = checkpoint.info(path)
        changed = [f"{k} {written[k]} (now {v})" for k, v in self.identity().items()
                   if k in written and written[k] != v]
        if changed:
            raise BadConfig(f"the checkpoint {path} was written by a run with "
                            f"{', '.join(changed)}: resuming would change what its steps mean; "
                            "write to a new output (or checkpointing.uri), or set "
                            "checkpointing.resume: false to start over")
        checkpoint.load(path, self.model, self.optimizer, frozen=not self.lora)
        log.info("resumed from %s (step %d)", path, step)
        return step

    def identity(self) -> dict[str, Any]:
        """What a step means in this run: a checkpoint of a run that differs in any of these
        cannot be resumed as if nothing changed."""
        cfg = self.config
        return {"globalBatchSize": cfg.optimization.global_batch_size,
                "sequenceLength": cfg.data.sequence_length, "data": cfg.data.source,
                "trainingSamples": len(self.train_data), "vocabSize": self.tokenizer.vocab_size,
                "seed": cfg.optimization.seed}

    def _checkpoint(self, step: int, wait: bool = False) -> None:
        """Save; in the background unless `wait` (SIGTERM, the last step) or asyncSave is off.
        A checkpoint is reported once complete; `seconds` is how long training was held."""
        started = time.perf_counter()
        info = {"total_steps": self.total_steps, **self.identity()}
        if self.async_saves is None:
            path = checkpoint.save(self.checkpoints, step, self.model, self.optimizer,
                                   self.world, self.config.checkpointing.keep, info,
                                   frozen=not self.lora)
            self._report_checkpoint(step, path, time.perf_counter() - started)
            return
        self._finish_checkpoint()
        self.async_saves.save(step, self.model, self.optimizer, info)
        self._held = (step, time.perf_counter() - started)
        if wait:
            self._finish_checkpoint()

    def _finish_checkpoint(self) -> None:
        if self.async_saves is None:
            return
        path = self.async_saves.wait()
        if path is not None:
            step, held = self._held
            self._report_checkpoint(step, path, held)

    def _report_checkpoint(self, step: int, path: Path, held: float) -> None:
        self.reporter.record({"step": step, "checkpoint": str(path), "seconds": round(held, 3)})

    def _logits(self, model: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        ctx = torch.autocast("cuda", dtype=torch.bfloat16) if self.autocast \
            else contextlib.nullcontext()
        with ctx:
            logits: torch.Tensor = model(input_ids=inputs).logits
        return logits

    def _loss(self, inputs: torch.Tensor,
              targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The batch's summed loss, and (DPO) its summed preference statistics."""
        if self.dpo is None:
            return self._forward_loss(inputs, targets), None
        measure_kl = not torch.is_grad_enabled() and self.dpo.loss != "simpo"  # evaluation
        if self.dpo.loss == "simpo":  # reference-free
            reference = torch.zeros(targets.size(0), device=targets.device)
        else:
            reference_probs = self._reference_log_probs(inputs)
            reference = preference.sequence_logps(reference_probs, targets)[0]
            if not measure_kl:
                del reference_probs  # the policy's graph needs the memory more
        probs = preference.log_probs(self._logits(self.model, inputs))
        policy, lengths = preference.sequence_logps(probs, targets)
        kl = preference.token_kl(probs, reference_probs, targets) if measure_kl else None
        return preference.batch_loss(policy, reference, lengths, self.dpo, kl)

    @torch.no_grad()
    def _reference_log_probs(self, inputs: torch.Tensor) -> torch.Tensor:
        """The reference's next-token log-probabilities: the frozen copy's (full weights), or
        the model's own with its LoRA adapter off; dropout off either way."""
        if self.reference is not None:
            return preference.log_probs(self._logits(self.reference, inputs))
        training = self.base.training
        self.base.eval()
        adapter_off: Any = self.base.disable_adapter  # a PeftModel's
        try:
            with adapter_off():
                logits = self._logits(self.base, inputs)
        finally:
            self.base.train(training)
        return preference.log_probs(logits)

    def _units(self, targets: torch.Tensor) -> torch.Tensor:
        """What the loss is a mean over: learned tokens, or (DPO) pairs."""
        if self.dpo is not None:
            return torch.tensor(targets.size(0) // 2)
        return (targets != data.IGNORE).sum()

    def _forward_loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The summed loss over the learned targets."""
        logits = self._logits(self.model, inputs)
        flat, rows = targets.reshape(-1), logits.reshape(-1, logits.size(-1))
        chunks = self.config.optimization.loss_chunks
        if chunks == 1:
            total = _cross_entropy(rows, flat)
        else:  # each chunk's float32 softmax is made again in the backward, never kept
            from torch.utils.checkpoint import checkpoint as recompute

            total = torch.stack([recompute(_cross_entropy, r, t, use_reentrant=False)
                                 for r, t in zip(rows.chunk(chunks), flat.chunk(chunks),
                                                 strict=True)]).sum()
        return total

    def _step(self, step: int) -> tuple[float, float | None, float, dict[str, float]]:
        cfg, world = self.config, self.world
        self.model.train()
        torch.manual_seed((cfg.optimization.seed * 1_000_003 + step) * 4099 + world.rank)
        batches = [self.train_data.batch(ix) for ix in self.schedule.micro_batches(step)]
        # The loss is a mean over every learned target of the step, on every rank: padding and
        # masked prompts weigh nothing, and a micro-batch with few answers is not inflated.
        count = torch.stack([self._units(t) for _, t in batches]).sum() \
            .to(world.device, torch.float32)
        if world.size > 1:
            import torch.distributed as td

            td.all_reduce(count)
        count = count.clamp(min=1)
        scale = world.size / count  # DDP and FSDP average the ranks' gradients
        totals = torch.zeros(1 + (len(preference.STATS) if self.dpo else 0), device=world.device)
        for i, (host_inputs, host_targets) in enumerate(batches):
            inputs = host_inputs.to(world.device, non_blocking=True)
            targets = host_targets.to(world.device, non_blocking=True)
            with self._sync(i == len(batches) - 1):
                loss, stats = self._loss(inputs, targets)
                (loss * scale).backward()  # type: ignore[no-untyped-call]
            totals[0] += loss.detach()
            if stats is not None:
                totals[1:] += stats
        if world.size > 1:
            td.all_reduce(totals)
        mean = (totals[0] / count).float()
        norm: torch.Tensor | None = None
        if cfg.optimization.grad_clip:
            norm = torch.nn.utils.clip_grad_norm_(
                [p for p in self.model.parameters() if p.requires_grad],
                cfg.optimization.grad_clip)
            if hasattr(norm, "full_tensor"):  # FSDP: a DTensor
                norm = norm.full_tensor()
        lr = lr_at(step, self.total_steps, cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        # The step's one host sync, with the optimizer's work already queued: the loss and the
        # gradient norm read together. A non-finite loss stops the run before any checkpoint.
        value, grad_norm, *sums = torch.cat([
            torch.stack([mean, (norm if norm is not None else mean).float()]), totals[1:],
            count.view(1)]).tolist()
        if not math.isfinite(value):
            raise NonFiniteLoss(f"loss is {value} at step {step + 1}")
        return value, (grad_norm if norm is not None else None), lr, self._train_stats(sums)

    def _train_stats(self, sums: list[float]) -> dict[str, float]:
        """DPO's statistics of the step's batch: its reward margin and accuracy."""
        if self.dpo is None:
            return {}
        means = preference.summary(torch.tensor(sums[:-1]), sums[-1], kl=False)
        means["reward_accuracy"] = means.pop("preference_accuracy")
        return means

    def _sync(self, sync: bool) -> contextlib.AbstractContextManager[Any]:
        """Skip the gradient all-reduce on all but the last micro-batch of a step."""
        no_sync: Any = getattr(self.model, "no_sync", None)  # DDP
        if no_sync is not None and not sync:
            return no_sync()  # type: ignore[no-any-return]
        set_sync: Any = getattr(self.model, "set_requires_gradient_sync", None)  # FSDP2
        if set_sync is not None:
            set_sync(sync)
        return contextlib.nullcontext()

    @torch.no_grad()
    def evaluate(self) -> tuple[float, dict[str, float]]:
        """The held-out loss and (DPO) the held-out preference accuracy, reward margin and KL."""
        if len(self.val_data) == 0:
            return float("nan"), {}
        self.model.eval()
        m = self.config.optimization.micro_batch_size
        batches = [list(range(i, min(i + m, len(self.val_data))))
                   for i in range(0, len(self.val_data), m)][:self.config.optimization.eval_batches]
        # Every rank runs the same number of forwards (FSDP gathers weights in each): whole rounds
        # of world-size batches, or, with fewer batches than ranks, each rank one of them.
        world = self.world.size
        if len(batches) >= world:
            batches = batches[:len(batches) - len(batches) % world]
            mine = batches[self.world.rank::world]
        else:
            mine = [batches[self.world.rank % len(batches)]]
        totals = torch.zeros(2 + (len(preference.STATS) if self.dpo else 0),
                             device=self.world.device, dtype=torch.float64)
        for indices in mine:
            inputs, targets = (t.to(self.world.device) for t in self.val_data.batch(indices))
            loss, stats = self._loss(inputs, targets)
            totals[0] += loss.double()
            totals[1] += self._units(targets).double()
            if stats is not None:
                totals[2:] += stats.double()
        if world > 1:
            import torch.distributed as td

            td.all_reduce(totals)
        if not totals[1]:
            return float("nan"), {}
        metrics: dict[str, float] = {}
        if self.dpo is not None:
            held_out = preference.summary(totals[2:].float(), float(totals[1]),
                                          kl=self.dpo.loss != "simpo")
            metrics = {"preference_accuracy": held_out["preference_accuracy"],
                       **{f"eval_{k}": v for k, v in held_out.items()
                          if k != "preference_accuracy"}}
        return float(totals[0] / totals[1]), metrics

    def _mfu(self, tokens_per_second: float) -> float | None:
        if self.peak is None:
            return None
        return self.flops_per_token * tokens_per_second / (self.peak * self.world.size)

    # -- the result

    def export(self) -> None:
        """Write the model in Hugging Face format (all ranks join the gather, rank 0 writes)."""
        full = get_model_state_dict(self.model, options=StateDictOptions(
            full_state_dict=True, cpu_offload=True))
        if self.world.is_main:
            self._write(full)
        barrier(self.world)  # no rank tears the group down while rank 0 still writes

    def _with_lora(self, model: torch.nn.Module) -> Any:
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

        assert self.config.adaptation is not None
        lora = self.config.adaptation.lora
        if getattr(model, "is_quantized", False):  # norms and head in float32, inputs' grads on
            model = prepare_model_for_kbit_training(  # type: ignore[no-untyped-call]
                model, use_gradient_checkpointing=False)
        return get_peft_model(model, LoraConfig(
            r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
            target_modules=lora.target_modules or None, task_type="CAUSAL_LM"))

    def _write(self, full: dict[str, Any]) -> None:
        self.output.mkdir(parents=True, exist_ok=True)
        adaptation = self.config.adaptation
        base: Any = self.base
        if adaptation and self.lora:
            if adaptation.merge:
                # Merged on a plain copy of the base on the CPU (the trained model may be
                # sharded, or its base packed in 4 bits): the adapter's weights go into it; a
                # quantized base comes back as bf16.
                assert self.config.model.from_ is not None
                plain = self._with_lora(load_pretrained(
                    self.config.model.from_,
                    torch.bfloat16 if self.quantize != "none" else torch.float32))
                adapter = {k: v for k, v in full.items() if "lora_" in k}
                loaded = plain.load_state_dict(adapter, strict=False)
                assert adapter and not loaded.unexpected_keys, loaded.unexpected_keys
                plain.merge_and_unload().save_pretrained(self.output, safe_serialization=True)
            else:
                base.save_pretrained(self.output, state_dict=full, safe_serialization=True)
        else:
            base.save_pretrained(self.output, state_dict=full, safe_serialization=True)
        self.tokenizer.save(self.output)
        log.info("model written to %s", self.output)


def check_world(config: TrainerConfig, world: World) -> None:
    expected = config.parallelism.world_size
    if world.size != expected:
        raise BadConfig(f"parallelism asks for {expected} processes but torchrun started "
                        f"{world.size}")
