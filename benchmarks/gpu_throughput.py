"""Tokens per second and MFU of the trainer on one NVIDIA GPU (H100/H200), bf16.

It runs the real trainer (mentor_trainer.trainer.Trainer, through torchrun when --nproc > 1) on a
Llama-style decoder at sequence length 2048, on random text it writes itself, and prints the
median tokens/s, MFU, peak GPU memory and checkpoint blocking time of the timed steps, with the
device's name. MFU is the trainer's: (6 × non-embedding parameters + 12 × layers × width × seq)
× tokens/s over the exact card's dense bf16 peak (mentor_trainer.speed).

With --vocab N it first trains a byte-level BPE tokenizer of N tokens on that text (the
`tokenizers` package, no download) and the model uses it (model.tokenizerFrom): a real
vocabulary's embedding and softmax cost, which a byte vocabulary hides.

    python benchmarks/gpu_throughput.py --vocab 32768 --shape 16,12,1536,4096 --seq 2048 \
        --micro 8 --steps 30 [--compile] [--ac selective] [--loss-chunks 4] \
        [--strategy ddp|fsdp] [--profile-step 15]

It prints MFU both ways: with the attention term (the trainer's) and 6N alone (the older
convention, which torchtitan's and most papers' figures use). --profile-step N runs step N under
torch.profiler (MENTOR_PROFILE_STEP) and prints the operators that took its device time.
benchmarks/gpu_suite.sh runs the issue's whole matrix as one prepared script.
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
from pathlib import Path
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="xlarge", choices=["large", "xlarge"],
                        help="large: ~300M parameters as Llama; xlarge: ~700M")
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--micro", type=int, default=8)
    parser.add_argument("--accumulate", type=int, default=1)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--nproc", type=int, default=1)
    parser.add_argument("--strategy", default="fsdp", choices=["ddp", "fsdp"])
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--chars", type=int, default=40_000_000, help="random text to train on")
    parser.add_argument("--vocab", type=int, default=0,
                        help="train a BPE tokenizer of this many tokens (0: bytes)")
    parser.add_argument("--shape", default="",
                        help="layers,heads,width,mlpWidth instead of --size (head_dim = "
                             "width / heads)")
    parser.add_argument("--ac", default="none", choices=["none", "full", "selective"],
                        help="activation checkpointing")
    parser.add_argument("--loss-chunks", type=int, default=1,
                        help="the output layer and loss in this many chunks of the sequence")
    parser.add_argument("--profile-step", type=int, default=0,
                        help="profile this step and print its costliest operators")
    parser.add_argument("--tokenizer", default="",
                        help="a tokenizer directory made by an earlier run (with --vocab)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mentor-gpu-bench-"))
    rng = random.Random(0)
    text = "".join(chr(rng.randrange(32, 127)) for _ in range(args.chars))
    (work / "data.txt").write_text(text)
    model: dict[str, object] = {"architecture": "llama", "tokenizer": "byte"}
    if args.shape:
        layers, heads, width, mlp = (int(v) for v in args.shape.split(","))
        model["shape"] = {"layers": layers, "heads": heads, "width": width, "mlpWidth": mlp}
    else:
        model["size"] = args.size
    if args.vocab or args.tokenizer:
        model["tokenizer"] = "pretrained"
        model["tokenizerFrom"] = args.tokenizer or _bpe(work, args.vocab)
    config = {
        "model": model,
        "data": {"source": str(work / "data.txt"), "sequenceLength": args.seq,
                 "validationSplit": 0.001},
        "optimization": {"steps": args.steps,
                         "globalBatchSize": args.micro * args.accumulate * args.nproc,
                         "microBatchSize": args.micro, "learningRate": 3e-4,
                         "precision": "bf16", "evalInterval": 10**6, "compile": args.compile,
                         "activationCheckpointing": args.ac, "lossChunks": args.loss_chunks},
        "parallelism": {"nodes": 1, "gpusPerNode": args.nproc, "strategy": args.strategy},
        "checkpointing": {"intervalSteps": max(10, args.steps // 2)},
        "output": {"uri": str(work / "out")},
    }
    (work / "config.json").write_text(json.dumps(config))
    # `python -m mentor_trainer.launch` is mentor-torchrun, without needing it installed.
    subprocess.run([sys.executable, "-m", "mentor_trainer.launch", "--standalone",
                    f"--nproc-per-node={args.nproc}", "-m", "mentor_trainer", "--config",
                    str(work / "config.json")], check=True,
                   env={**os.environ, "OMP_NUM_THREADS": "8",
                        **({"MENTOR_PROFILE_STEP": str(args.profile_step)}
                           if args.profile_step else {})})
    records = [json.loads(line) for line in (work / "out" / "metrics.jsonl").open()]
    steps = [r for r in records if "loss" in r][5:-1]  # warm-up (and compile) excluded
    import torch

    tensors = _model_params(work / "out")
    params = sum(t.numel() for t in tensors.values())
    # The trainer's MFU counts 6 × non-embedding parameters + 12 × layers × width × seq per
    # token; 6N alone is the same figure without the attention term.
    dense = 6 * sum(t.numel() for name, t in tensors.items() if "embed" not in name)
    layers = len({name.split(".layers.")[1].split(".")[0] for name in tensors
                  if ".layers." in name}) or 1
    width = next(t.shape[-1] for name, t in tensors.items() if "embed" in name)
    attention = 12 * layers * width * args.seq
    tps = statistics.median(r["tokens_per_second"] for r in steps)
    mfu = [r["mfu"] for r in steps if r.get("mfu")]
    print(f"device {torch.cuda.get_device_name(0)} × {args.nproc}")
    memory = max((r.get("gpu_memory_gib") or 0) for r in steps) if steps else 0
    blocking = [r["seconds"] for r in records if "checkpoint" in r and "seconds" in r]
    print(f"model llama-{args.shape or args.size}, {params / 1e6:.0f}M parameters, "
          f"vocab {args.vocab or 257}, seq {args.seq}, micro {args.micro}, {args.strategy}, "
          f"compile={args.compile}, activation checkpointing {args.ac}, "
          f"loss chunks {args.loss_chunks}")
    print(f"tokens/s {tps:,.0f} (median of {len(steps)} steps)")
    if mfu:
        median = statistics.median(mfu)
        print(f"MFU {median:.1%} with the attention term; "
              f"{median * dense / (dense + attention):.1%} as 6N alone")
    else:
        print("MFU unknown for this device")
    print(f"peak GPU memory {memory:.1f} GiB; checkpoint blocking "
          + (", ".join(f"{b:.2f} s" for b in blocking) or "none written"))
    if args.profile_step:
        print((work / "out" / "profile.txt").read_text())
    if args.vocab and not args.tokenizer:
        print(f"tokenizer {work / 'tokenizer'} (--tokenizer for the next runs)")


def _bpe(work: Path, vocab: int) -> str:
    """A byte-level BPE tokenizer of `vocab` tokens trained on the benchmark's text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    inner = Tokenizer(models.BPE())
    inner.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    inner.decoder = decoders.ByteLevel()
    inner.train([str(work / "data.txt")], trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    directory = work / "tokenizer"
    PreTrainedTokenizerFast(tokenizer_object=inner, eos_token="<|endoftext|>").save_pretrained(
        directory)
    return str(directory)


def _model_params(output: Path) -> dict[str, Any]:
    from safetensors import safe_open

    with safe_open(str(output / "model.safetensors"), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118


if __name__ == "__main__":
    main()
