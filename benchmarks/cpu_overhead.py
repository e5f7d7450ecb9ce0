"""How much the trainer costs over a bare PyTorch loop, on CPU.

Both run the same model (the `small` GPT-2 preset: 6 layers, width 384), the same packed
Shakespeare batches, AdamW at a constant learning rate and the same threads, in one process. The
trainer adds its data schedule, per-step re-seeding, loss normalisation, NaN check and metrics
log. It prints both tokens/s (goal: the trainer at least 0.95× the bare loop) and both final
eval losses on the same held-out windows (goal: within 2%).

    .venv/bin/python benchmarks/cpu_overhead.py [--steps 30] [--text PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from mentor.api.training import TrainerConfig
from mentor_trainer import data
from mentor_trainer.dist import World
from mentor_trainer.models import new_model
from mentor_trainer.tokenizer import CharTokenizer
from mentor_trainer.trainer import Trainer

DEFAULT_TEXT = Path(__file__).resolve().parents[1] / "tests/data/tinyshakespeare.txt"


def bare_loop(text: Path, steps: int, seq: int, batch: int) -> tuple[list[float], float]:
    """The loop a researcher would write: nothing but forward, backward, step."""
    raw = text.read_text()
    tokenizer = CharTokenizer.fit(raw)
    train, val = data.split(torch.tensor(tokenizer.encode(raw)), 0.01, seq)
    config = TrainerConfig.model_validate({
        "model": {"size": "small", "tokenizer": "char"}, "data": {"source": str(text)},
        "optimization": {"steps": steps}, "output": {"uri": "/unused"}})
    model = new_model(config.model, tokenizer.vocab_size, seq, seed=0, eos_id=tokenizer.eos_id)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.01,
                                  betas=(0.9, 0.95))
    generator = torch.Generator().manual_seed(0)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        indices = torch.randint(len(train), (batch,), generator=generator).tolist()
        x, y = train.batch(indices)
        logits = model(input_ids=x).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)),
                                                 y.reshape(-1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    model.eval()
    total = count = 0.0
    with torch.no_grad():  # the trainer's evaluation: its first 20 held-out batches
        for start in range(0, min(len(val), 20 * batch), batch):
            x, y = val.batch(list(range(start, min(start + batch, len(val)))))
            logits = model(input_ids=x).logits
            total += float(torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="sum"))
            count += y.numel()
    return times, total / count


def trainer_loop(text: Path, steps: int, seq: int, batch: int) -> tuple[list[float], float]:
    with tempfile.TemporaryDirectory() as out:
        config = TrainerConfig.model_validate({
            "model": {"size": "small", "tokenizer": "char"},
            "data": {"source": str(text), "sequenceLength": seq, "validationSplit": 0.01},
            "optimization": {"steps": steps, "globalBatchSize": batch, "microBatchSize": batch,
                             "learningRate": 3e-4, "schedule": "constant", "gradClip": None,
                             "evalInterval": 10**6, "precision": "fp32"},
            "checkpointing": {"intervalSteps": 10**6},
            "output": {"uri": out},
        })
        trainer = Trainer(config, World(rank=0, local_rank=0, size=1,
                                        device=torch.device("cpu")))
        trainer.train()
        records = [json.loads(line) for line in (Path(out) / "metrics.jsonl").open()]
        return [r["seconds_per_step"] for r in records if "loss" in r], \
            next(r["eval_loss"] for r in reversed(records) if "eval_loss" in r)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--text", type=Path, default=DEFAULT_TEXT)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    warmup = 5
    bare, bare_eval = bare_loop(args.text, args.steps, args.seq, args.batch)
    mentor, mentor_eval = trainer_loop(args.text, args.steps, args.seq, args.batch)
    b, m = statistics.median(bare[warmup:]), statistics.median(mentor[warmup:-1])
    tokens = args.batch * args.seq
    print(f"threads {torch.get_num_threads()}, model small, batch {args.batch}×{args.seq}, "
          f"{args.steps} steps each, medians after {warmup} warm-up steps")
    print(f"bare PyTorch loop  {b * 1000:.1f} ms/step  {tokens / b:,.0f} tok/s  "
          f"eval loss {bare_eval:.4f}")
    print(f"mentor trainer     {m * 1000:.1f} ms/step  {tokens / m:,.0f} tok/s  "
          f"eval loss {mentor_eval:.4f}")
    print(f"throughput ratio   {b / m:.3f}  (goal ≥ 0.95)")
    print(f"eval loss ratio    {mentor_eval / bare_eval:.3f}  (goal within 2%)")

if __name__ == "__main__":
    main()
