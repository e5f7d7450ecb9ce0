"""Preference tuning (DPO) in the trainer: the losses against the papers' formulas written out
pair by pair, the pairs' encoding, and real torchrun runs (full weights sharded by FSDP with
its frozen reference, resumed from a checkpoint as if never stopped)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from runner import chat_tokenizer, config, losses, metrics, run

from mentor.api.training import DataFormat, DataSpec, DpoSpec
from mentor_trainer import data, preference
from mentor_trainer.tokenizer import ByteTokenizer
from testdata import preference_pairs

pytestmark = pytest.mark.trainer


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def papers_loss(loss: str, beta: float, gamma: float, pi_c: float, pi_r: float, ref_c: float,
                ref_r: float, len_c: int, len_r: int) -> float:
    """One pair's loss as each paper writes it: DPO eq. 7, IPO eq. 17, SimPO eq. 6."""
    h = math.log(math.exp(pi_c) * math.exp(ref_r) / (math.exp(pi_r) * math.exp(ref_c)))
    if loss == "sigmoid":
        return -math.log(_sigmoid(beta * h))
    if loss == "ipo":
        return (h - 1 / (2 * beta)) ** 2
    return -math.log(_sigmoid(beta / len_c * pi_c - beta / len_r * pi_r - gamma))


@pytest.mark.parametrize("loss", ["sigmoid", "ipo", "simpo"])
def test_the_losses_are_the_papers(loss: str) -> None:
    spec = DpoSpec(beta=0.3, loss=loss, targetMargin=0.7)
    g = torch.Generator().manual_seed(0)
    policy = -torch.rand(8, generator=g, dtype=torch.float64) * 20  # 4 chosen, 4 rejected
    reference = -torch.rand(8, generator=g, dtype=torch.float64) * 20
    lengths = torch.randint(1, 30, (8,), generator=g)
    total, stats = preference.batch_loss(policy, reference, lengths, spec)
    expected = [papers_loss(loss, 0.3, 0.7, float(policy[i]), float(policy[i + 4]),
                            float(reference[i]), float(reference[i + 4]), int(lengths[i]),
                            int(lengths[i + 4])) for i in range(4)]
    assert float(total) == pytest.approx(sum(expected), rel=1e-9)
    _, margins = preference.pair_losses(policy, reference, lengths, spec)
    assert float(stats[1]) == sum(1.0 if m > 0 else 0.5 if m == 0 else 0.0 for m in margins)
    if loss != "simpo":  # the implicit rewards: beta times each response's log-ratio
        rewards = [0.3 * (float(policy[i]) - float(reference[i])) for i in range(8)]
        assert float(stats[0]) == pytest.approx(sum(rewards[i] - rewards[i + 4]
                                                    for i in range(4)))


def test_the_reference_itself_ranks_half_the_pairs_and_is_at_zero_kl() -> None:
    logits = torch.randn(4, 6, 11, generator=torch.Generator().manual_seed(1))
    targets = torch.randint(0, 11, (4, 6))
    targets[:, :2] = data.IGNORE  # the prompts: read, never scored
    probs = preference.log_probs(logits)
    logps, lengths = preference.sequence_logps(probs, targets)
    by_hand = [sum(float(probs[r, t, targets[r, t]]) for t in range(2, 6)) for r in range(4)]
    assert logps.tolist() == pytest.approx(by_hand) and lengths.tolist() == [4] * 4
    kl = preference.token_kl(probs, probs, targets)
    loss, stats = preference.batch_loss(logps, logps, lengths, DpoSpec(), kl)
    summary = preference.summary(stats, 2, kl=True)
    assert summary == {"reward_margin": 0.0, "preference_accuracy": 0.5, "kl": 0.0}
    assert float(loss) == pytest.approx(2 * math.log(2))
    other = preference.log_probs(torch.randn(4, 6, 11))
    assert float(preference.token_kl(probs, other, targets)) > 0


def test_pairs_are_encoded_with_the_prompt_read_and_the_responses_learned(
        tmp_path: Path) -> None:
    records = [{"q": "To be, ", "good": "or not", "bad": "ro ton"},
               {"q": "Once more ", "good": "unto", "bad": "tuno"}]
    source = tmp_path / "pairs.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records))
    spec = DataSpec(source=str(source), format=DataFormat.PREFERENCE, promptField="q",
                    chosenField="good", rejectedField="bad", sequenceLength=16)
    tokenizer = ByteTokenizer()
    pairs = data.encode_pairs(data.read_pairs(spec), spec, tokenizer)
    inputs, targets = pairs.batch([1, 0])
    assert inputs.shape == targets.shape == (4, 16)  # chosen rows, then rejected rows

    def learned(row: int) -> bytes:
        return bytes(t for t in targets[row].tolist() if t != data.IGNORE and t < 256)

    assert [learned(r) for r in range(4)] == [b"unto", b"or not", b"tuno", b"ro ton"]
    source.write_text('{"q": "x", "bad": "y"}\n')
    with pytest.raises(data.BadConfig, match="not a JSON object with fields 'q' and 'good'"):
        data.read_pairs(spec)


def _dpo(base: Path, out: Path, pairs: Path, **dpo: object) -> dict[str, object]:
    return config(out, model={"from": str(base), "tokenizer": None, "size": None},
                  data={"source": str(pairs), "format": "preference", "validationSplit": 0.1},
                  optimization={"steps": 10, "evalInterval": 5, "learningRate": 1e-3},
                  checkpointing={"intervalSteps": 5},
                  adaptation={"type": "dpo", "dpo": {"beta": 0.5, **dpo}})


def test_full_weight_dpo_under_fsdp_resumes_as_if_never_stopped(pretrained: Path,
                                                                 tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(p) + "\n" for p in preference_pairs(200)))
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    cfg = _dpo(pretrained, straight, pairs, weights="full")
    cfg["parallelism"]["strategy"] = "fsdp"
    run(cfg, tmp_path)
    records = metrics(straight)
    evals = [r for r in records if "eval_loss" in r]
    assert evals[0]["eval_loss"] == pytest.approx(math.log(2))  # the tuned model is the reference
    assert evals[0]["metrics"]["preference_accuracy"] == 0.5
    assert evals[-1]["metrics"]["eval_kl"] > 0
    steps = [r for r in records if "loss" in r]
    assert {"reward_margin", "reward_accuracy"} <= set(steps[-1]["metrics"])
    assert (straight / "model.safetensors").exists(), "full weights: a whole model"

    # The run again, from its step-5 checkpoint alone: steps 6 to 10 are the same.
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(straight / "checkpoints" / "step-00000005",
                    resumed / "checkpoints" / "step-00000005")
    cfg["output"]["uri"] = str(resumed)
    run(cfg, tmp_path)
    a, b = losses(straight), losses(resumed)
    assert sorted(b) == list(range(6, 11))
    for step in range(6, 11):
        assert a[step] == pytest.approx(b[step], rel=1e-5, abs=1e-5), step


def test_chat_prompts_render_through_the_template_and_only_the_replies_are_learned(
        tmp_path: Path) -> None:
    from mentor_trainer.tokenizer import HFTokenizer

    tokenizer = HFTokenizer(str(chat_tokenizer(tmp_path / "tok")))
    source = tmp_path / "pairs.jsonl"
    source.write_text(json.dumps({
        "prompt": [{"role": "user", "content": "hello how are you"}],
        "chosen": {"role": "assistant", "content": "fine thanks"},
        "rejected": "hi"}) + "\n")
    spec = DataSpec(source=str(source), format=DataFormat.PREFERENCE, sequenceLength=16)
    _, targets = data.encode_pairs(data.read_pairs(spec), spec, tokenizer).batch([0])
    replies = [tokenizer.decode([t for t in row.tolist() if t != data.IGNORE]).split()
               for row in targets]
    assert replies == [["<|assistant|>", "fine", "thanks", "<|end|>"],
                       ["<|assistant|>", "hi", "<|end|>"]]
