"""Tuning on one GPU: Mentor's LoRA, QLoRA and DPO against a plain PEFT + transformers loop.

One script for a lent machine. It makes a Llama-style base model with random weights (nothing
is downloaded), random text, and random preference pairs, then runs, each on the same model,
data, batch and sequence length:

- LoRA: Mentor's trainer (the real one, through its launcher) and a plain loop (transformers'
  model in bf16 + peft's LoRA + AdamW under bf16 autocast): tokens/s and peak GPU memory;
- QLoRA: the same with the base in nf4 through bitsandbytes on both sides;
- DPO against SFT: Mentor's seconds per step of each (a DPO step scores a chosen and a rejected
  response and runs the reference: about 1.5x the tokens' work of SFT's forward-backward).

It prints one table with the device's name. `--cpu --tiny` runs the same code on a small
model on CPU (a check that the script works; its figures mean nothing):

    python benchmarks/tuning_gpu.py [--shape 16,16,2048,5632] [--seq 1024] [--micro 8]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

RANK, ALPHA = 16, 32
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_base(work: Path, shape: tuple[int, ...], seq: int) -> tuple[Path, int]:
    """A Llama-style model with random weights and Mentor's byte tokenizer, saved in bf16."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from mentor_trainer.tokenizer import ByteTokenizer

    layers, heads, width, mlp = shape
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=257, hidden_size=width, intermediate_size=mlp, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=seq,
        tie_word_embeddings=True, eos_token_id=256, bos_token_id=256, use_cache=False))
    base = work / "base"
    model.to(torch.bfloat16).save_pretrained(base, safe_serialization=True)
    ByteTokenizer().save(base)
    return base, sum(p.numel() for p in model.parameters())


def make_data(work: Path, seq: int, pairs: int) -> tuple[Path, Path]:
    rng = random.Random(0)

    def text(n: int) -> str:
        return "".join(chr(rng.randrange(32, 127)) for _ in range(n))

    (work / "text.txt").write_text(text(4_000_000))
    half = seq // 2 - 2
    with (work / "pairs.jsonl").open("w") as f:
        for _ in range(pairs):
            f.write(json.dumps({"prompt": text(half), "chosen": text(half),
                                "rejected": text(half)}) + "\n")
    return work / "text.txt", work / "pairs.jsonl"


def mentor(work: Path, name: str, base: Path, data: dict[str, Any], adaptation: dict[str, Any],
           args: argparse.Namespace) -> dict[str, float]:
    """Mentor's trainer on one device: median tokens/s and seconds per step (warm-up steps
    left out) and peak GPU memory, from its metrics log."""
    out = work / name
    config = {
        "model": {"from": str(base)}, "adaptation": adaptation,
        "data": {**data, "sequenceLength": args.seq, "validationSplit": 0.001},
        "optimization": {"steps": args.steps, "globalBatchSize": args.micro,
                         "microBatchSize": args.micro, "learningRate": 1e-4,
                         "precision": "bf16" if not args.cpu else "fp32",
                         "evalInterval": 10**6, "evalBatches": 1},
        "parallelism": {"nodes": 1, **({"procsPerNode": 1} if args.cpu else
                                       {"gpusPerNode": 1})},
        "checkpointing": {"intervalSteps": 10**6},
        "output": {"uri": str(out)},
    }
    (work / f"{name}.json").write_text(json.dumps(config))
    subprocess.run([sys.executable, "-m", "mentor_trainer.launch", "--standalone",
                    "--nproc-per-node=1", "-m", "mentor_trainer", "--config",
                    str(work / f"{name}.json")], check=True,
                   env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS",
                                                                         "8")},
                   stdout=subprocess.DEVNULL)
    steps = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    steps = [r for r in steps if "loss" in r][3:]
    return {"tokens_per_second": statistics.median(r["tokens_per_second"] for r in steps),
            "seconds_per_step": statistics.median(r["seconds_per_step"] for r in steps),
            "memory_gib": max((r.get("gpu_memory_gib") or 0.0) for r in steps)}


def plain_peft(base: Path, text: Path, quantize: bool, args: argparse.Namespace
               ) -> dict[str, float]:
    """The loop a user writes with transformers and peft alone, on the same model and batch."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    device = torch.device("cpu" if args.cpu else "cuda")
    options: dict[str, Any] = {"dtype": torch.bfloat16 if not args.cpu else torch.float32}
    if quantize:
        options["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=True)
        options["device_map"] = {"": device}
    model = AutoModelForCausalLM.from_pretrained(base, attn_implementation="sdpa", **options)
    if not quantize:
        model = model.to(device)
    model = get_peft_model(model, LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0,
                                             target_modules=TARGETS, task_type="CAUSAL_LM"))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    tokens = torch.tensor(list(text.read_bytes()[:args.micro * (args.seq + 1) * args.steps]))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for step in range(args.steps):
        rows = tokens[step * args.micro * (args.seq + 1):(step + 1) * args.micro * (args.seq + 1)]
        batch = rows.view(args.micro, args.seq + 1).to(device)
        started = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=not args.cpu):
            loss = model(input_ids=batch[:, :-1], labels=batch[:, 1:]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        float(loss)  # one sync a step, as Mentor's loop
        times.append(time.perf_counter() - started)
    seconds = statistics.median(times[3:])
    memory = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else 0.0
    return {"tokens_per_second": args.micro * args.seq / seconds, "seconds_per_step": seconds,
            "memory_gib": memory}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", default="16,16,2048,5632",
                        help="layers,heads,width,mlpWidth of the base (default: ~0.9B)")
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--micro", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--cpu", action="store_true", help="a check of the script, on CPU")
    parser.add_argument("--tiny", action="store_true", help="a 2-layer model, short sequences")
    args = parser.parse_args()
    if args.tiny:
        args.shape, args.seq, args.micro, args.steps = "2,4,128,256", 64, 4, 6
    shape = tuple(int(v) for v in args.shape.split(","))
    assert len(shape) == 4, "--shape is layers,heads,width,mlpWidth"
    work = Path(tempfile.mkdtemp(prefix="mentor-tuning-bench-"))
    base, params = make_base(work, shape, args.seq)
    text, pairs = make_data(work, args.seq, pairs=args.micro * (args.steps + 2))
    lora = {"rank": RANK, "alpha": ALPHA, "dropout": 0.0, "targetModules": TARGETS}
    results = {
        "LoRA, Mentor": mentor(work, "lora", base, {"source": str(text)},
                               {"type": "lora", "lora": lora}, args),
        "LoRA, PEFT loop": plain_peft(base, text, False, args),
        "QLoRA, Mentor": mentor(work, "qlora", base, {"source": str(text)},
                                {"type": "lora", "lora": {**lora, "quantize": "nf4"}}, args),
        "QLoRA, PEFT loop": plain_peft(base, text, True, args),
        "DPO (LoRA), Mentor": mentor(work, "dpo", base,
                                     {"source": str(pairs), "format": "preference"},
                                     {"type": "dpo", "lora": lora}, args),
    }
    device = "CPU (a check of the script)" if args.cpu else torch.cuda.get_device_name(0)
    print(f"device {device}; base llama {args.shape}, {params / 1e6:,.1f}M parameters"
          f", seq {args.seq}, micro-batch {args.micro}, LoRA rank {RANK} on {len(TARGETS)} "
          f"projections, {args.steps} steps (the first 3 left out)")
    print(f"{'run':<22}{'tokens/s':>12}{'s/step':>10}{'peak GiB':>10}")
    for name, r in results.items():
        print(f"{name:<22}{r['tokens_per_second']:>12,.0f}{r['seconds_per_step']:>10.3f}"
              f"{r['memory_gib']:>10.2f}")
    dpo, sft = results["DPO (LoRA), Mentor"], results["LoRA, Mentor"]
    print(f"DPO step / SFT step: {dpo['seconds_per_step'] / sft['seconds_per_step']:.2f}x "
          "(a DPO sample is two sequences and the reference's forward)")


if __name__ == "__main__":
    main()
