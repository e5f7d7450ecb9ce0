"""`mentor run`: the same YAML on this machine, with no cluster."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from testdata import SHAKESPEARE

pytestmark = pytest.mark.e2e

MENTOR = str(Path(sys.executable).with_name("mentor"))
QUICKSTART = Path(__file__).resolve().parents[2] / "examples" / "quickstart.yaml"


def job_file(tmp: Path, **optimization: object) -> Path:
    job = yaml.safe_load(QUICKSTART.read_text())
    job["spec"]["data"]["source"] = "pvc://datasets/tiny/input.txt"
    job["spec"]["optimization"].update(optimization)
    path = tmp / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


@pytest.fixture
def pvc_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "pvc"
    (root / "datasets" / "tiny").mkdir(parents=True)
    shutil.copy(SHAKESPEARE, root / "datasets" / "tiny" / "input.txt")
    monkeypatch.setenv("MENTOR_PVC_ROOT", str(root))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return root


def test_bad_yaml_gets_the_api_servers_field_paths(tmp_path: Path, pvc_root: Path) -> None:
    job = yaml.safe_load(QUICKSTART.read_text())
    job["spec"]["optimization"]["epochs"] = 1
    job["spec"]["template"] = {"env": [{"name": "PET_NNODES", "value": "2"}]}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(job))
    result = subprocess.run([MENTOR, "run", str(path)], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 2
    assert "spec.optimization: set exactly one of steps or epochs" in result.stderr
    assert "spec.template.env: env may not set torchrun's variables" in result.stderr
    assert not (pvc_root / "models").exists(), "nothing ran"


def test_run_interrupt_and_resume(tmp_path: Path, pvc_root: Path) -> None:
    path = job_file(tmp_path, steps=60, evalInterval=30)
    output = pvc_root / "models" / "quickstart"
    proc = subprocess.Popen([MENTOR, "run", "--no-progress", str(path)], env=os.environ.copy(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not (output / "metrics.jsonl").exists() or \
            (output / "metrics.jsonl").read_text().count('"loss"') < 5:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    first, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, first
    assert "run the same command again to resume" in first
    saved = sorted((output / "checkpoints").glob("step-*"))
    assert saved, first
    stopped_at = int(saved[-1].name.split("-")[1])

    second = subprocess.run([MENTOR, "run", "--no-progress", str(path)], capture_output=True,
                            text=True, check=False)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "succeeded" in second.stdout and "step          60/60" in second.stdout
    assert "final loss" in second.stdout and "tokens/s" in second.stdout
    log_line = next(ln for ln in second.stdout.splitlines() if "trainer log" in ln)
    log = Path(log_line.split()[-1]).read_text()  # TorchX's log of this run's replica
    assert f"(step {stopped_at})" in log, "the second run resumed from the checkpoint"
    assert (output / "model.safetensors").exists()
