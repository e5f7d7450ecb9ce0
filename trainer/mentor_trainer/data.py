"""Data: read, tokenize, split, pack into sequences, and order them deterministically.

Which samples make up step s is a pure function of (seed, step, global batch), so a resumed run
sees exactly the data an uninterrupted one would, and one process sees the same global batch as
many. Each rank takes its contiguous share of the global batch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mentor.api.training import DataFormat, DataSpec
from mentor_trainer.errors import BadConfig, DataNotFound
from mentor_trainer.tokenizer import Tokenizer

TEXT_SUFFIXES = (".txt", ".text", ".md")
JSONL_SUFFIXES = (".jsonl", ".json")


CACHE = ".mentor-tokens"  # token shards cached beside the data (mentor_trainer.shards)


def _files(path: Path, suffixes: tuple[str, ...]) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in suffixes
                       and CACHE not in p.relative_to(path).parts)
        if found:
            return found
    raise DataNotFound(f"no data at {path} (looked for {', '.join(suffixes)} files)")


def _read(uri: str) -> Iterator[tuple[str, str]]:
    """(name, content) of every file behind a URI, one at a time: a local path, or s3:// and
    others via fsspec."""
    if "://" not in uri:
        for p in _files(Path(uri), TEXT_SUFFIXES + JSONL_SUFFIXES):
            yield str(p), p.read_text(encoding="utf-8", errors="replace")
        return
    yield from _read_remote(uri)


def _read_remote(uri: str) -> list[tuple[str, str]]:
    import fsspec

    try:
        fs, root = fsspec.core.url_to_fs(uri)
        paths = [root] if fs.isfile(root) else sorted(fs.find(root))
    except (FileNotFoundError, ImportError, ValueError) as e:
        raise DataNotFound(f"cannot read {uri}: {e}") from e
    if not paths:
        raise DataNotFound(f"no data at {uri}")
    return [(p, fs.cat_file(p).decode("utf-8", errors="replace")) for p in paths]


def read_texts(spec: DataSpec) -> list[str]:
    """The documents of the data source, in a stable order."""
    return list(iter_texts(spec))


def iter_texts(spec: DataSpec) -> Iterator[str]:
    """The documents of the data source, in a stable order, one at a time."""
    if spec.format == DataFormat.HF_DISK:
        try:
            from datasets import load_from_disk
        except ImportError as e:
            raise BadConfig("format hf-disk needs the `datasets` package in the image") from e
        path = spec.source.removeprefix("hf://")
        if not Path(path).exists():
            raise DataNotFound(f"no dataset saved at {path}")
        ds = load_from_disk(path)
        if hasattr(ds, "keys"):  # a DatasetDict: take its train split
            ds = ds["train"]
        key = spec.field or "text"
        if key not in ds.column_names:
            raise BadConfig(f"dataset at {path} has no column {key!r} ({ds.column_names})")
        for row in ds:
            yield str(row[key])
        return
    files = _read(spec.source)
    if spec.format == DataFormat.TEXT:
        for _, content in files:
            yield content
        return
    for record in _records(files, (str(spec.field),)):
        yield str(record[str(spec.field)])


def _records(files: Iterable[tuple[str, str]], keys: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    for name, content in files:
        for n, line in enumerate(content.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict) or any(k not in record for k in keys):
                    raise KeyError(keys)
            except (json.JSONDecodeError, KeyError) as e:
                fields = "field" if len(keys) == 1 else "fields"
                raise BadConfig(f"{name}:{n}: not a JSON object with {fields} "
                                f"{' and '.join(repr(k) for k in keys)}") from e
            yield record


INSTRUCTIONS = (DataFormat.PROMPT_RESPONSE, DataFormat.CHAT)


def read_records(spec: DataSpec) -> list[dict[str, Any]]:
    """The examples of an instruction (prompt-response) or chat data source, in order."""
    keys = (spec.prompt_field, spec.response_field) if spec.format == DataFormat.PROMPT_RESPONSE \
        else (spec.field or "messages",)
    return list(_records(_read(spec.source), keys))


def record_texts(records: list[dict[str, Any]], spec: DataSpec) -> list[str]:
    """The text of every example (to fit a char tokenizer on)."""
    if spec.format == DataFormat.PROMPT_RESPONSE:
        return [str(r[spec.prompt_field]) + str(r[spec.response_field]) for r in records]
    return [str(m.get("content", "")) for r in records for m in r[spec.field or "messages"]]


def _segments(record: dict[str, Any], spec: DataSpec,
              tokenizer: Tokenizer) -> list[tuple[list[int], bool]]:
    """An example as (tokens, learned?) segments: the prompt (or every turn but the
    assistant's) is read, never learned."""
    if spec.format == DataFormat.PROMPT_RESPONSE:
        begin = [tokenizer.bos_id] if tokenizer.bos_id is not None else []
        end = [tokenizer.eos_id] if tokenizer.eos_id is not None else []
        return [(begin + tokenizer.encode(str(record[spec.prompt_field])), False),
                (tokenizer.encode(str(record[spec.response_field])) + end, True)]
    render = getattr(tokenizer, "chat", None)
    if render is None:
        raise BadConfig("format chat needs a tokenizer with a chat template (a pretrained "
                        "Hugging Face tokenizer); use prompt-response with byte or char")
    messages = record[spec.field or "messages"]
    segments, before = [], ""
    for i, message in enumerate(messages):
        text = render(messages[:i + 1])
        if not text.startswith(before):
            raise BadConfig("the chat template does not render a conversation as the "
                            "rendering of its first turns plus the next one")
        segments.append((tokenizer.encode(text[len(before):]),
                         message.get("role") == "assistant"))
        before = text
    return segments


@dataclass
class Examples:
    """One example per row, cut or padded to seq_len + 1 tokens; `learned` marks the tokens
    the loss is computed on (a target that is not learned is ignored)."""

    tokens: torch.Tensor
    learned: torch.Tensor
    seq_len: int

    def __len__(self) -> int:
        return len(self.tokens)

    def batch(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        rows, learned = self.tokens[indices], self.learned[indices]
        targets = rows[:, 1:].masked_fill(~learned[:, 1:], IGNORE)
        return rows[:, :-1], targets


IGNORE = -100  # a target the loss leaves out (cross_entropy's ignore_index)


def encode_examples(records: list[dict[str, Any]], spec: DataSpec,
                    tokenizer: Tokenizer) -> Examples:
    width = spec.sequence_length + 1
    pad = tokenizer.eos_id if tokenizer.eos_id is not None else 0
    tokens = torch.full((len(records), width), pad, dtype=torch.long)
    learned = torch.zeros((len(records), width), dtype=torch.bool)
    for row, record in enumerate(records):
        ids: list[int] = []
        mask: list[bool] = []
        for segment, learn in _segments(record, spec, tokenizer):
            ids.extend(segment)
            mask.extend([learn] * len(segment))
        ids, mask = ids[:width], mask[:width]
        tokens[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        learned[row, :len(mask)] = torch.tensor(mask, dtype=torch.bool)
    return Examples(tokens, learned, spec.sequence_length)


def split_examples(examples: Examples, fraction: float) -> tuple[Examples, Examples]:
    """The last `fraction` of the examples is held out."""
    cut = len(examples) - int(len(examples) * fraction)
    if cut == 0:
        raise BadConfig(f"the data holds {len(examples)} examples: too few to train on")
    return (Examples(examples.tokens[:cut], examples.learned[:cut], examples.seq_len),
            Examples(examples.tokens[cut:], examples.learned[cut:], examples.seq_len))


def read_pairs(spec: DataSpec) -> list[dict[str, Any]]:
    """The preference records: a prompt (text, or chat messages), a chosen and a rejected
    response (text, or an assistant message)."""
    return list(_records(_read(spec.source),
                         (spec.prompt_field, spec.chosen_field, spec.rejected_field)))


def pair_texts(records: list[dict[str, Any]], spec: DataSpec) -> list[str]:
    """The text of every pair (to fit a char tokenizer on)."""
    return [_text(r[spec.prompt_field]) + _text(r[spec.chosen_field]) +
            _text(r[spec.rejected_field]) for r in records]


def _text(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("content", ""))
    if isinstance(value, list):
        return "".join(_text(m) for m in value)
    return str(value)


@dataclass
class Pairs:
    """Preference pairs: row i of `chosen` and of `rejected` answer the same prompt. A batch is
    its chosen rows then its rejected rows, so that one forward scores both."""

    chosen: Examples
    rejected: Examples

    def __len__(self) -> int:
        return len(self.chosen)

    def batch(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        chosen, rejected = self.chosen.batch(indices), self.rejected.batch(indices)
        return torch.cat([chosen[0], rejected[0]]), torch.cat([chosen[1], rejected[1]])


def encode_pairs(records: list[dict[str, Any]], spec: DataSpec, tokenizer: Tokenizer) -> Pairs:
    """Each side of each pair as an instruction example (the prompt read, the response
    learned): a text prompt as prompt-response, a list of messages through the chat template."""
    def side(field_name: str) -> Examples:
        chats = [isinstance(r[spec.prompt_field], list) for r in records]
        if any(chats) and not all(chats):
            raise BadConfig(f"{spec.source}: every prompt is text, or every prompt is a list "
                            "of chat messages, not a mix")
        if chats and chats[0]:
            as_chat = spec.model_copy(update={"format": DataFormat.CHAT, "field": "messages"})
            chats_of = [{"messages": [*r[spec.prompt_field], _assistant(r[field_name])]}
                        for r in records]
            return encode_examples(chats_of, as_chat, tokenizer)
        as_instruction = spec.model_copy(update={"format": DataFormat.PROMPT_RESPONSE,
                                                 "prompt_field": "p", "response_field": "r"})
        rows = [{"p": _text(r[spec.prompt_field]), "r": _text(r[field_name])} for r in records]
        return encode_examples(rows, as_instruction, tokenizer)

    return Pairs(side(spec.chosen_field), side(spec.rejected_field))


def _assistant(response: Any) -> dict[str, Any]:
    return response if isinstance(response, dict) else {"role": "assistant",
                                                        "content": str(response)}


def split_pairs(pairs: Pairs, fraction: float) -> tuple[Pairs, Pairs]:
    """The last `fraction` of the pairs is held out."""
    chosen, rejected = (split_examples(e, fraction) for e in (pairs.chosen, pairs.rejected))
    return Pairs(chosen[0], rejected[0]), Pairs(chosen[1], rejected[1])


def encode(texts: list[str], tokenizer: Tokenizer) -> torch.Tensor:
    """The documents as one token stream, each begun by the tokenizer's begin-of-text (for
    models that expect one, as Llama) and ended by its end-of-text, so that one document never
    runs into the next."""
    begin = [tokenizer.bos_id] if tokenizer.bos_id is not None else []
    separator = [tokenizer.eos_id] if tokenizer.eos_id is not None else []
    ids: list[int] = []
    for text in texts:
        ids.extend(begin)
        ids.extend(tokenizer.encode(text))
        ids.extend(separator)
    return torch.tensor(ids, dtype=torch.long)


@dataclass
class Packed:
    """Non-overlapping windows of seq_len + 1 tokens (inputs and shifted targets), read from a
    tensor or from a memory-mapped token shard (only the rows asked for are read)."""

    tokens: Any  # torch.Tensor or a numpy array (a memory map)
    seq_len: int

    def __len__(self) -> int:
        return max(0, (len(self.tokens) - 1) // self.seq_len)

    def batch(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        windows = [self.tokens[i * self.seq_len: i * self.seq_len + self.seq_len + 1]
                   for i in indices]
        if isinstance(self.tokens, torch.Tensor):
            rows = torch.stack(windows)
        else:
            rows = torch.from_numpy(np.stack(windows).astype(np.int64))
        return rows[:, :-1], rows[:, 1:]


def split(tokens: Any, fraction: float, seq_len: int) -> tuple[Packed, Packed]:
    """The last `fraction` of the tokens is held out: contiguous, so no window straddles both."""
    cut = len(tokens) - int(len(tokens) * fraction)
    train, val = Packed(tokens[:cut], seq_len), Packed(tokens[cut:], seq_len)
    if len(train) == 0:
        raise BadConfig(f"the data holds {len(tokens)} tokens: too few for one sequence of "
                        f"{seq_len}; lower data.sequenceLength")
    return train, val


@dataclass
class Schedule:
    """Which samples each rank reads at each step: a pure function of (seed, step)."""

    samples: int
    global_batch: int
    micro_batch: int
    world_size: int
    rank: int
    seed: int
    _perms: dict[int, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        per_rank, rest = divmod(self.global_batch, self.world_size)
        if rest or per_rank % self.micro_batch:
            raise BadConfig(
                f"globalBatchSize {self.global_batch} must be a multiple of world size "
                f"{self.world_size} × microBatchSize {self.micro_batch}")
        self.per_rank = per_rank
        self.accumulation = per_rank // self.micro_batch

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(self.seed * 7919 + epoch)
            self._perms = {epoch: torch.randperm(self.samples, generator=g)}
        return self._perms[epoch]

    def micro_batches(self, step: int) -> list[list[int]]:
        """This rank's micro-batches of sample indices for optimizer step `step` (0-based)."""
        start = step * self.global_batch + self.rank * self.per_rank
        indices = []
        for p in range(start, start + self.per_rank):
            epoch, offset = divmod(p, self.samples)
            indices.append(int(self._perm(epoch)[offset]))
        m = self.micro_batch
        return [indices[i:i + m] for i in range(0, len(indices), m)]

    def epoch_of(self, step: int) -> float:
        return step * self.global_batch / self.samples
