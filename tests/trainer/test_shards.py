"""Token shards: tokenized once, cached beside the data, identical to the in-memory stream."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest

from mentor.api.training import DataSpec
from mentor_trainer import data, shards
from mentor_trainer.tokenizer import ByteTokenizer, CharTokenizer
from testdata import SHAKESPEARE


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    root.mkdir()
    text = SHAKESPEARE.read_text()
    for i in range(3):
        (root / f"part-{i}.txt").write_text(text[i * 50_000:(i + 1) * 50_000])
    return root


def test_the_shard_holds_exactly_the_in_memory_token_stream(corpus: Path, tmp_path: Path) -> None:
    spec = DataSpec(source=str(corpus))
    for tokenizer in (ByteTokenizer(), None):
        path = shards.prepare(spec, tokenizer, tmp_path / "fallback")
        shard = shards.open_shard(path)
        used = tokenizer or shard.tokenizer()
        assert isinstance(used, ByteTokenizer | CharTokenizer)
        expected = data.encode(data.read_texts(spec), used).numpy()
        assert np.array_equal(np.asarray(shard.tokens, dtype=np.int64), expected)
        assert shard.tokens.dtype == np.uint16 and shard.meta["documents"] == 3
        assert path.parent == corpus / ".mentor-tokens"  # beside the data
    # The cache never reads itself as data.
    assert data.read_texts(spec) == [p.read_text() for p in sorted(corpus.glob("*.txt"))]


def test_a_ready_shard_is_reused_and_changed_data_gets_a_new_one(corpus: Path,
                                                                  tmp_path: Path) -> None:
    spec = DataSpec(source=str(corpus))
    first = shards.prepare(spec, ByteTokenizer(), tmp_path)
    written = (first / shards.TOKENS).stat().st_mtime_ns
    assert shards.prepare(spec, ByteTokenizer(), tmp_path) == first
    assert (first / shards.TOKENS).stat().st_mtime_ns == written  # not tokenized again
    with (corpus / "part-0.txt").open("a") as f:
        f.write("more text")
    changed = shards.prepare(spec, ByteTokenizer(), tmp_path)
    assert changed != first
    assert shards.open_shard(changed).meta["tokens"] == \
        shards.open_shard(first).meta["tokens"] + len("more text")


def test_read_only_data_is_cached_under_the_output(corpus: Path, tmp_path: Path) -> None:
    if os.geteuid() == 0:  # root writes anywhere: a data file's parent that is a file instead
        source = tmp_path / "ro" / "input.txt"
        source.parent.mkdir()
        shutil.copy(SHAKESPEARE, source)
        (source.parent / ".mentor-tokens").write_text("not a directory")
    else:
        source = corpus
        corpus.chmod(stat.S_IRUSR | stat.S_IXUSR)
    path = shards.prepare(DataSpec(source=str(source)), ByteTokenizer(), tmp_path / "out")
    assert path.parent == tmp_path / "out"


def test_packed_windows_read_from_the_map_as_from_a_tensor(corpus: Path, tmp_path: Path) -> None:
    spec = DataSpec(source=str(corpus), sequence_length=32)
    shard = shards.open_shard(shards.prepare(spec, ByteTokenizer(), tmp_path))
    tensor = data.encode(data.read_texts(spec), ByteTokenizer())
    mapped, _ = data.split(shard.tokens, 0.1, 32)
    plain, _ = data.split(tensor, 0.1, 32)
    assert len(mapped) == len(plain)
    for a, b in zip(mapped.batch([0, 5, 17]), plain.batch([0, 5, 17]), strict=True):
        assert a.dtype == b.dtype and a.equal(b)


def test_a_record_without_its_fields_is_a_bad_config_naming_them(tmp_path: Path) -> None:
    from mentor_trainer.errors import BadConfig

    source = tmp_path / "data.jsonl"
    source.write_text('{"prompt": "q"}\n')
    spec = DataSpec(source=str(source), format="prompt-response")
    with pytest.raises(BadConfig, match=r"data\.jsonl:1: not a JSON object with fields "
                                        r"'prompt' and 'response'"):
        data.read_records(spec)
    with pytest.raises(BadConfig, match="not a JSON object with field 'text'"):
        data.read_texts(DataSpec(source=str(source), format="jsonl", field="text"))
