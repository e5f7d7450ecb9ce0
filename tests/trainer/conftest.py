"""Fixtures of the trainer tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from runner import config, run


@pytest.fixture(scope="session")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny char model trained once by the real trainer, in Hugging Face format."""
    work = tmp_path_factory.mktemp("pretrained")
    out = work / "model"
    run(config(out, optimization={"steps": 150, "globalBatchSize": 32, "microBatchSize": 16,
                                  "evalInterval": 50, "evalBatches": 8},
               checkpointing={"intervalSteps": 1000}), work)
    return out
