#!/usr/bin/env bash
# The issue's GPU figures as one prepared script for a lent H100/H200 (about 10 minutes):
#   MFU with and without the attention term, for FSDP2 and DDP, with and without compile,
#   with and without selective activation checkpointing + a chunked loss (32k vocabulary,
#   0.5B parameters, seq 2048); each run's checkpoint blocking time; one profiled step of the
#   goal configuration; LoRA tuning throughput beside a plain PEFT loop.
# The most important runs go first: a run that would pass the time left is skipped, said so.
#   bash benchmarks/gpu_suite.sh [seconds, default 540]   (results also under $OUT if set)
set -uo pipefail
cd "$(dirname "$0")/.."
budget=${1:-540}
start=$SECONDS
out=${OUT:-$(mktemp -d)}
export PYTHONPATH="$PWD/operator:$PWD/trainer${PYTHONPATH:+:$PYTHONPATH}"
python3 - <<'PY' || exit 1
import importlib, sys
missing = [m for m in ("torch", "transformers", "peft", "pydantic", "tokenizers", "safetensors")
           if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"missing on this machine: {', '.join(missing)}")
import torch
print(f"device {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
PY
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv,noheader
common=(--shape 16,12,1536,4096 --seq 2048 --micro 8 --steps 20 --chars 8000000)
tokenizer=""
run() {  # name, seconds it may take, arguments
  local name=$1 needs=$2; shift 2
  if (( SECONDS - start + needs > budget )); then
    echo "== $name: skipped, $((budget - SECONDS + start)) s left"; return
  fi
  echo "== $name"
  local vocab=(--vocab 32768)
  [ -n "$tokenizer" ] && vocab=(--tokenizer "$tokenizer")
  timeout "$needs" python3 benchmarks/gpu_throughput.py "${common[@]}" "${vocab[@]}" "$@" \
    2>&1 | tee "$out/$name.log" | grep -v "^\s*$" | grep -E -v "^(INFO|WARNING|W[0-9])" | tail -45
  [ -z "$tokenizer" ] && tokenizer=$(sed -n 's/^tokenizer \(\S*\) .*/\1/p' "$out/$name.log")
}
run fsdp-compile-ac-chunks 150 --strategy fsdp --compile --ac selective --loss-chunks 4 --profile-step 12
run fsdp-compile 90 --strategy fsdp --compile
run ddp-compile 90 --strategy ddp --compile
run fsdp 60 --strategy fsdp
run ddp 60 --strategy ddp
run ddp-compile-ac-chunks 90 --strategy ddp --compile --ac selective --loss-chunks 4
run fsdp-ac-chunks 60 --strategy fsdp --ac selective --loss-chunks 4
if (( SECONDS - start + 120 <= budget )); then
  echo "== LoRA tuning beside a plain PEFT loop"
  timeout 120 python3 benchmarks/tuning_gpu.py --steps 12 2>&1 | tee "$out/tuning.log" | tail -20
else
  echo "== LoRA tuning: skipped, $((budget - SECONDS + start)) s left"
fi
echo "== done in $((SECONDS - start)) s; logs in $out"
