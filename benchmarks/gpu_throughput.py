"""Tokens per second and MFU of the trainer on one NVIDIA GPU (H100/H200), bf16.

It runs the real trainer (mentor_trainer.trainer.Trainer, through torchrun when --nproc > 1) on a
Llama-style decoder of about 350M–1B parameters at sequence length 2048, on random byte text it
writes itself, and prints the median tokens/s and MFU of the timed steps with the device's name.
MFU counts 6 × parameters FLOPs per token against the dense bf16 peak (989 TFLOP/s for H100 and
H200 SXM).

    python benchmarks/gpu_throughput.py --size xlarge --seq 2048 --micro 8 --steps 40 [--compile]
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
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mentor-gpu-bench-"))
    rng = random.Random(0)
    text = "".join(chr(rng.randrange(32, 127)) for _ in range(args.chars))
    (work / "data.txt").write_text(text)
    config = {
        "model": {"architecture": "llama", "size": args.size, "tokenizer": "byte"},
        "data": {"source": str(work / "data.txt"), "sequenceLength": args.seq,
                 "validationSplit": 0.001},
        "optimization": {"steps": args.steps,
                         "globalBatchSize": args.micro * args.accumulate * args.nproc,
                         "microBatchSize": args.micro, "learningRate": 3e-4,
                         "precision": "bf16", "evalInterval": 10**6, "compile": args.compile},
        "parallelism": {"nodes": 1, "gpusPerNode": args.nproc, "strategy": args.strategy},
        "checkpointing": {"intervalSteps": 10**6},
        "output": {"uri": str(work / "out")},
    }
    (work / "config.json").write_text(json.dumps(config))
    # `python -m mentor_trainer.launch` is mentor-torchrun, without needing it installed.
    subprocess.run([sys.executable, "-m", "mentor_trainer.launch", "--standalone",
                    f"--nproc-per-node={args.nproc}", "-m", "mentor_trainer", "--config",
                    str(work / "config.json")], check=True,
                   env={**os.environ, "OMP_NUM_THREADS": "8"})
    records = [json.loads(line) for line in (work / "out" / "metrics.jsonl").open()]
    steps = [r for r in records if "loss" in r][5:-1]  # warm-up (and compile) excluded
    import torch

    params = sum(p.numel() for p in _model_params(work / "out"))
    tps = statistics.median(r["tokens_per_second"] for r in steps)
    mfu = [r["mfu"] for r in steps if r.get("mfu")]
    print(f"device {torch.cuda.get_device_name(0)} × {args.nproc}")
    print(f"model llama-{args.size}, {params / 1e6:.0f}M parameters, seq {args.seq}, "
          f"micro {args.micro}, {args.strategy}, compile={args.compile}")
    print(f"tokens/s {tps:,.0f} (median of {len(steps)} steps)")
    print(f"MFU {statistics.median(mfu):.1%}" if mfu else "MFU unknown for this device")


def _model_params(output: Path) -> list[object]:
    from safetensors import safe_open

    with safe_open(str(output / "model.safetensors"), "pt") as f:
        return [f.get_tensor(k) for k in f.keys()]  # noqa: SIM118


if __name__ == "__main__":
    main()
