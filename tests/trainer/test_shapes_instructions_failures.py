"""The trainer beyond raw text: explicit model shapes, instruction and chat tuning with the loss
on the answers only, LoRA merged under FSDP, and failures that say what to change."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from runner import chat_tokenizer, config, losses, metrics, run

from mentor.api.training import DataSpec, ModelSpec
from mentor_trainer import data
from mentor_trainer.models import new_model
from mentor_trainer.tokenizer import ByteTokenizer, HFTokenizer


def test_explicit_shapes_build_the_model_asked_for() -> None:
    spec = ModelSpec.model_validate({"architecture": "llama", "shape": {
        "layers": 3, "heads": 4, "kvHeads": 2, "width": 64, "mlpWidth": 96}})
    model: Any = new_model(spec, vocab_size=300, seq_len=32, seed=0)
    config = model.config
    assert (config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads,
            config.hidden_size, config.intermediate_size) == (3, 4, 2, 64, 96)
    assert config.use_cache is False
    gpt2: Any = new_model(ModelSpec.model_validate({"shape": {"layers": 4, "heads": 2,
                                                              "width": 32}}), 257, 16, 0)
    assert (gpt2.config.n_layer, gpt2.config.n_head, gpt2.config.n_embd) == (4, 2, 32)


def test_a_sequence_longer_than_the_pretrained_model_is_refused_at_start(
        pretrained: Path, tmp_path: Path) -> None:
    cfg = config(tmp_path / "out", data={"sequenceLength": 4096})
    cfg["model"] = {"from": str(pretrained)}
    out = run(cfg, tmp_path, expect=2)
    assert "data.sequenceLength 4096 exceeds the 64 positions" in out


def _instructions(path: Path, count: int = 96) -> Path:
    rows = [{"prompt": f"Q: what is {a} plus {b}?\nA: ", "response": f"{a + b}."}
            for a in range(12) for b in range(8)][:count]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_prompt_response_examples_learn_only_the_response() -> None:
    spec = DataSpec.model_validate({"source": "x", "format": "prompt-response",
                                    "sequenceLength": 24})
    records = [{"prompt": "Q: 1+1?\nA: ", "response": "2."}]
    examples = data.encode_examples(records, spec, ByteTokenizer())
    inputs, targets = examples.batch([0])
    learned = [t for t in targets[0].tolist() if t != data.IGNORE]
    assert bytes(t for t in learned if t < 256) == b"2." and learned[-1] == 256  # then EOS
    assert inputs.shape == (1, 24)
    prompt = len(b"Q: 1+1?\nA: ")
    assert targets[0, :prompt - 1].eq(data.IGNORE).all()  # no loss on the prompt
    assert targets[0, prompt + 2:].eq(data.IGNORE).all()  # nor on the padding


def test_instruction_tuning_trains_on_answers(tmp_path: Path) -> None:
    source = _instructions(tmp_path / "sums.jsonl")
    out = tmp_path / "out"
    cfg = config(out, model={"size": "tiny", "tokenizer": "byte"},
                 data={"source": str(source), "format": "prompt-response",
                       "sequenceLength": 32, "validationSplit": 0.125},
                 optimization={"steps": 30, "evalInterval": 15})
    run(cfg, tmp_path)
    evals = [m["eval_loss"] for m in metrics(out) if "eval_loss" in m]
    assert len(evals) == 2 and evals[-1] < evals[0]
    first = losses(out)
    assert first[30] < first[1]


def test_the_loss_is_a_mean_over_every_learned_token_of_the_step(tmp_path: Path) -> None:
    # Examples of very different answer lengths: one process and two ranks must agree, which
    # holds only if the loss is normalised by the global count of answer tokens.
    rows = [{"prompt": "say: ", "response": "x" * (1 + (i * 7) % 20)} for i in range(64)]
    source = tmp_path / "uneven.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = {"model": {"size": "tiny", "tokenizer": "byte"},
              "data": {"source": str(source), "format": "prompt-response",
                       "sequenceLength": 32, "validationSplit": 0.0},
              "optimization": {"steps": 6, "globalBatchSize": 16, "microBatchSize": 4,
                               "evalInterval": 100}}
    one = config(tmp_path / "one", parallelism={"procsPerNode": 1}, **common)
    two = config(tmp_path / "two", parallelism={"procsPerNode": 2}, **common)
    run(one, tmp_path / "w1")
    run(two, tmp_path / "w2")
    a, b = losses(tmp_path / "one"), losses(tmp_path / "two")
    for step in a:
        assert a[step] == pytest.approx(b[step], rel=1e-4), step


def test_chat_turns_render_through_the_template_and_only_the_assistant_is_learned(
        tmp_path: Path) -> None:
    tokenizer = HFTokenizer(str(chat_tokenizer(tmp_path / "tok")))
    spec = DataSpec.model_validate({"source": "x", "format": "chat", "sequenceLength": 16})
    record = {"messages": [{"role": "user", "content": "hello how are you"},
                           {"role": "assistant", "content": "fine thanks"}]}
    examples = data.encode_examples([record], spec, tokenizer)
    _, targets = examples.batch([0])
    learned = [t for t in targets[0].tolist() if t != data.IGNORE]
    assert tokenizer.decode(learned).split() == ["<|assistant|>", "fine", "thanks", "<|end|>"]


def test_chat_on_a_tokenizer_without_a_template_is_a_bad_config(tmp_path: Path) -> None:
    source = tmp_path / "chat.jsonl"
    source.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    out = run(config(tmp_path / "out", model={"size": "tiny", "tokenizer": "byte"},
                     data={"source": str(source), "format": "chat"}), tmp_path, expect=2)
    assert "format chat needs a tokenizer with a chat template" in out


def test_a_checkpoint_of_a_different_run_is_refused_on_resume(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run(config(out, optimization={"steps": 10}, checkpointing={"intervalSteps": 10}),
        tmp_path / "a")
    changed = config(out, optimization={"steps": 20, "globalBatchSize": 32},
                     checkpointing={"intervalSteps": 10})
    text = run(changed, tmp_path / "b", expect=2)
    assert "was written by a run with globalBatchSize 16 (now 32)" in text
    assert "resuming would change what its steps mean" in text


def test_lora_merged_under_fsdp_exports_plain_weights(pretrained: Path, tmp_path: Path) -> None:
    out = tmp_path / "merged"
    cfg = config(out, parallelism={"procsPerNode": 2, "strategy": "fsdp"},
                 optimization={"steps": 6, "evalInterval": 6})
    cfg["model"] = {"from": str(pretrained)}
    cfg["adaptation"] = {"type": "lora", "merge": True,
                         "lora": {"rank": 4, "alpha": 8, "dropout": 0.0}}
    run(cfg, tmp_path)
    from safetensors.torch import load_file

    weights = load_file(str(out / "model.safetensors"))
    assert weights and not any("lora" in k for k in weights)
    base = load_file(str(pretrained / "model.safetensors"))
    changed = [k for k in base if k in weights and not torch.equal(base[k], weights[k])]
    assert changed, "the merged adapter changed the attention weights"


def test_activation_checkpointing_and_a_chunked_loss_give_the_same_losses(
        tmp_path: Path) -> None:
    runs = {"plain": {}, "ac": {"activationCheckpointing": "full"},
            "selective": {"activationCheckpointing": "selective"}, "chunked": {"lossChunks": 4}}
    for name, options in runs.items():
        run(config(tmp_path / name, optimization={"steps": 4, **options}), tmp_path / f"w-{name}")
    plain = losses(tmp_path / "plain")
    for name in ("ac", "selective", "chunked"):
        assert losses(tmp_path / name) == pytest.approx(plain, rel=1e-5), name


def _bpe_tokenizer(directory: Path, bos: bool) -> Path:
    """A small byte-level BPE tokenizer trained here; with `bos`, it begins texts with <s>, as
    Llama's do."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from testdata import SHAKESPEARE

    inner = Tokenizer(models.BPE())
    inner.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    inner.decoder = decoders.ByteLevel()
    inner.train_from_iterator([SHAKESPEARE.read_text()[:300_000]], trainers.BpeTrainer(
        vocab_size=512, special_tokens=["<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    if bos:
        inner.post_processor = processors.TemplateProcessing(
            single="<s> $A", special_tokens=[("<s>", inner.token_to_id("<s>"))])
    PreTrainedTokenizerFast(tokenizer_object=inner, bos_token="<s>", eos_token="</s>") \
        .save_pretrained(directory)
    return directory


def test_documents_begin_and_end_as_the_tokenizer_expects(tmp_path: Path) -> None:
    llama = HFTokenizer(str(_bpe_tokenizer(tmp_path / "llama", bos=True)))
    plain = HFTokenizer(str(_bpe_tokenizer(tmp_path / "plain", bos=False)))
    assert (llama.bos_id, llama.eos_id) == (0, 1) and plain.bos_id is None
    stream = data.encode(["to be", "or not"], llama).tolist()
    first, second = llama.encode("to be"), llama.encode("or not")
    assert stream == [0, *first, 1, 0, *second, 1]
    assert data.encode(["to be"], plain).tolist() == [*plain.encode("to be"), 1]
    assert data.encode(["ab", "c"], ByteTokenizer()).tolist() == [97, 98, 256, 99, 256]


def test_a_new_model_trains_with_a_hugging_face_tokenizer(tmp_path: Path) -> None:
    tokenizer = _bpe_tokenizer(tmp_path / "tok", bos=True)
    out = tmp_path / "out"
    cfg = config(out, optimization={"steps": 12, "evalInterval": 6})
    cfg["model"] = {"architecture": "llama", "tokenizerFrom": str(tokenizer),
                    "tokenizer": "pretrained",
                    "shape": {"layers": 2, "heads": 4, "kvHeads": 2, "width": 64}}
    run(cfg, tmp_path)
    saved = json.loads((out / "config.json").read_text())
    assert saved["vocab_size"] == 512 and saved["num_key_value_heads"] == 2
    assert (saved["bos_token_id"], saved["eos_token_id"]) == (0, 1)
    assert (out / "tokenizer.json").exists()  # saved beside the model
    evals = [m["eval_loss"] for m in metrics(out) if "eval_loss" in m]
    assert evals[-1] < evals[0]


def test_lora_checkpoints_leave_the_frozen_base_out_and_resume(pretrained: Path,
                                                               tmp_path: Path) -> None:
    from torch.distributed.checkpoint import FileSystemReader

    out = tmp_path / "lora"
    cfg = config(out, optimization={"steps": 6, "evalInterval": 6},
                 checkpointing={"intervalSteps": 3})
    cfg["model"] = {"from": str(pretrained)}
    cfg["adaptation"] = {"type": "lora", "lora": {"rank": 4, "alpha": 8, "dropout": 0.0}}
    run(cfg, tmp_path / "a")
    saved = FileSystemReader(str(out / "checkpoints" / "step-00000006")).read_metadata()
    model_keys = [k for k in saved.state_dict_metadata if k.startswith("model.")]
    # Only the adapter, and GPT-2's output matrix, which is tied to its (frozen) embedding.
    assert [k for k in model_keys if "lora_" not in k] == \
        ["model.base_model.model.lm_head.weight"], model_keys
    assert len(model_keys) == 5
    longer = {**cfg, "optimization": {**cfg["optimization"], "steps": 9}}
    text = run(longer, tmp_path / "b")
    assert "resumed from" in text and "step 6" in text
    assert max(losses(out)) == 9


def test_async_checkpoints_are_complete_and_equal_to_blocking_ones(tmp_path: Path) -> None:
    for mode, asynchronous in (("async", True), ("blocking", False)):
        run(config(tmp_path / mode, optimization={"steps": 9},
                   checkpointing={"intervalSteps": 3, "keep": 2, "asyncSave": asynchronous}),
            tmp_path / f"w-{mode}")
    kept = {m: sorted(p.name for p in (tmp_path / m / "checkpoints").iterdir())
            for m in ("async", "blocking")}
    assert kept["async"] == kept["blocking"] == ["step-00000006", "step-00000009"]
    reported = [r for r in metrics(tmp_path / "async") if "checkpoint" in r]
    assert [r["step"] for r in reported] == [3, 6, 9]  # each once complete, with its hold time
    assert all(r["seconds"] >= 0 for r in reported)
    assert losses(tmp_path / "async") == losses(tmp_path / "blocking")
