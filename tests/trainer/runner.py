"""Helpers that run the real trainer through torchrun (via mentor-torchrun), CPU and gloo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from testdata import SHAKESPEARE

LAUNCHER = str(Path(sys.executable).with_name("mentor-torchrun"))


def config(out: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    """A small char-level job on tinyshakespeare; sections override parts of it."""
    base: dict[str, Any] = {
        "model": {"size": "tiny", "tokenizer": "char"},
        "data": {"source": str(SHAKESPEARE), "sequenceLength": 64},
        "optimization": {"steps": 20, "globalBatchSize": 16, "microBatchSize": 8,
                         "learningRate": 3e-3, "warmupSteps": 5, "evalInterval": 10,
                         "evalBatches": 4},
        "parallelism": {"procsPerNode": 2},
        "checkpointing": {"intervalSteps": 10},
        "output": {"uri": str(out)},
    }
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return base


def launch(cfg: dict[str, Any], work: Path, env: dict[str, str] | None = None,
           **popen: Any) -> subprocess.Popen[str]:
    """Start torchrun with as many processes as the config asks for."""
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"config-{len(list(work.glob('config-*.json')))}.json"
    path.write_text(json.dumps(cfg))
    nproc = cfg["parallelism"].get("procsPerNode", 1)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.Popen(
        [LAUNCHER, "--standalone", f"--nproc-per-node={nproc}", "-m", "mentor_trainer",
         "--config", str(path)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def run(cfg: dict[str, Any], work: Path, expect: int = 0,
        env: dict[str, str] | None = None) -> str:
    proc = launch(cfg, work, env)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == expect, f"exit {proc.returncode}, expected {expect}:\n{out[-3000:]}"
    return out


def metrics(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def losses(out: Path) -> dict[int, float]:
    """Training loss by step; a step logged twice (before a crash, after resume) keeps the last."""
    return {r["step"]: r["loss"] for r in metrics(out) if "loss" in r}


def eval_losses(out: Path) -> dict[int, float]:
    return {r["step"]: r["eval_loss"] for r in metrics(out) if "eval_loss" in r}


def chat_tokenizer(directory: Path) -> Path:
    """A small word-level Hugging Face tokenizer with a chat template, made here."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<|user|>", "<|assistant|>", "<|end|>", "hello", "hi", "how", "are", "you",
             "fine", "thanks", "\n", "[UNK]"]
    inner = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    inner.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=inner, eos_token="<|end|>",
                                  unk_token="[UNK]")
    tok.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> "
                         "{% endfor %}")
    tok.save_pretrained(directory)
    return directory
