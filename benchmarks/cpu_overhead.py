"""How much the trainer costs over a bare PyTorch loop, on CPU.

Both run the same model (the `small` GPT-2 preset: 6 layers, width 384), the same packed
Shakespeare batches and AdamW, in one process. The trainer adds its data schedule, per-step
re-seeding, LR schedule, gradient clipping, NaN check and metrics log; the ratio of the median
step times is the overhead. Goal: ≤ 1.03.

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


def bare_loop(text: Path, steps: int, seq: int, batch: int) -> list[float]:
    """The loop a researcher would write: nothing but forward, backward, step."""
    raw = text.read_text()
    tokenizer = CharTokenizer.fit(raw)
    tokens = torch.tensor(tokenizer.encode(raw))
    packed = data.Packed(tokens, seq)
    config = TrainerConfig.model_validate({
        "model": {"size": "small", "tokenizer": "char"}, "data": {"source": str(text)},
        "optimization": {"steps": steps}, "output": {"uri": "/unused"}})
    model = new_model(config.model, tokenizer.vocab_size, seq, seed=0, eos_id=tokenizer.eos_id)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.01)
    generator = torch.Generator().manual_seed(0)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        indices = torch.randint(len(packed), (batch,), generator=generator).tolist()
        x, y = packed.batch(indices)
        logits = model(input_ids=x).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)),
                                                 y.reshape(-1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return times


def trainer_loop(text: Path, steps: int, seq: int, batch: int) -> list[float]:
    with tempfile.TemporaryDirectory() as out:
        config = TrainerConfig.model_validate({
            "model": {"size": "small", "tokenizer": "char"},
            "data": {"source": str(text), "sequenceLength": seq, "validationSplit": 0.01},
            "optimization": {"steps": steps, "globalBatchSize": batch, "microBatchSize": batch,
                             "learningRate": 3e-4, "evalInterval": 10**6, "precision": "fp32"},
            "checkpointing": {"intervalSteps": 10**6},
            "output": {"uri": out},
        })
        trainer = Trainer(config, World(rank=0, local_rank=0, size=1,
                                        device=torch.device("cpu")))
        trainer.train()
        records = [json.loads(line) for line in (Path(out) / "metrics.jsonl").open()]
        return [r["seconds_per_step"] for r in records if "loss" in r]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--text", type=Path, default=DEFAULT_TEXT)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    warmup = 5
    bare = bare_loop(args.text, args.steps, args.seq, args.batch)[warmup:]
    mentor = trainer_loop(args.text, args.steps + 1, args.seq, args.batch)[warmup:-1]
    b, m = statistics.median(bare), statistics.median(mentor)
    print(f"threads {torch.get_num_threads()}, model small, batch {args.batch}×{args.seq}, "
          f"{len(bare)} timed steps each")
    print(f"bare PyTorch loop  median {b * 1000:.1f} ms/step")
    print(f"mentor trainer     median {m * 1000:.1f} ms/step")
    print(f"overhead ratio     {m / b:.3f}  (goal ≤ 1.03)")


if __name__ == "__main__":
    main()
