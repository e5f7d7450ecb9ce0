"""Data formats, the trainer's own /metrics, and training that does not need the operator."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest
from controlplane import free_port
from runner import SHAKESPEARE, config, launch, losses, run

pytestmark = pytest.mark.trainer


def test_jsonl_with_a_field(tmp_path: Path) -> None:
    lines = SHAKESPEARE.read_text().split("\n\n")[:400]
    source = tmp_path / "lines.jsonl"
    source.write_text("\n".join(json.dumps({"text": t, "id": i}) for i, t in enumerate(lines)))
    out = tmp_path / "out"
    run(config(out, data={"source": str(source), "format": "jsonl", "field": "text"},
               optimization={"steps": 3, "evalInterval": 3}, parallelism={"procsPerNode": 1}),
        tmp_path)
    assert len(losses(out)) == 3


def test_a_profiled_step_says_where_its_time_went(tmp_path: Path) -> None:
    """MENTOR_PROFILE_STEP=2: the second step runs under torch.profiler, and its operators'
    table, the costliest first, is in the output; the other steps are not profiled."""
    out = tmp_path / "out"
    run(config(out, optimization={"steps": 3, "evalInterval": 3},
               parallelism={"procsPerNode": 1}), tmp_path, env={"MENTOR_PROFILE_STEP": "2"})
    profile = (out / "profile.txt").read_text()
    assert profile.startswith("step 2, sorted by self_cpu_time_total")
    rows = [line.split()[0] for line in profile.splitlines()[4:] if "%" in line]
    assert len(rows) >= 10 and rows[0] in ("aten::mm", "aten::addmm"), \
        f"the matrix products lead a GPT-2 step:\n{profile}"
    assert "Optimizer.step#AdamW.step" in rows, profile
    assert len(losses(out)) == 3, "profiling one step changes nothing else"


def test_a_dataset_saved_to_disk(tmp_path: Path) -> None:
    from datasets import Dataset

    paragraphs = SHAKESPEARE.read_text().split("\n\n")[:400]
    Dataset.from_dict({"content": paragraphs}).save_to_disk(str(tmp_path / "ds"))
    out = tmp_path / "out"
    run(config(out, data={"source": str(tmp_path / "ds"), "format": "hf-disk",
                          "field": "content"},
               optimization={"steps": 3, "evalInterval": 3}, parallelism={"procsPerNode": 1}),
        tmp_path)
    assert len(losses(out)) == 3


def test_rank0_serves_metrics_and_an_unreachable_operator_does_not_matter(
    tmp_path: Path,
) -> None:
    out, port = tmp_path / "out", free_port()
    env = {"MENTOR_METRICS_PORT": str(port), "MENTOR_JOB_NAME": "m", "MENTOR_JOB_NAMESPACE": "ns",
           "MENTOR_JOB_KIND": "TrainingJob",
           # nothing listens there: every report fails, training must not notice
           "MENTOR_REPORT_URL": f"http://127.0.0.1:{free_port()}", "MENTOR_REPORT_TOKEN": "t"}
    proc = launch(config(out, optimization={"steps": 100_000}), tmp_path, env)
    deadline = time.monotonic() + 300
    while not (out / "metrics.jsonl").exists() or len(losses(out)) < 3:
        assert time.monotonic() < deadline and proc.poll() is None, "training stalled"
        time.sleep(0.2)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        page = r.read().decode()
    proc.terminate()
    proc.communicate(timeout=120)
    labels = '{job_name="m",kind="TrainingJob",namespace="ns"}'
    step = next(float(line.split()[-1]) for line in page.splitlines()
                if line.startswith(f"mentor_trainer_step{labels}"))
    assert step >= 3
    assert f"mentor_trainer_loss{labels}" in page


def test_a_report_is_retried_through_a_failover_and_a_refused_one_is_not() -> None:
    """A standby answers 503 while the Lease moves: the report waits and gets through. A 400
    (a malformed report) is final. Once, every failed report was dropped at the first try."""
    import http.server
    import threading

    from mentor_trainer.reporting import OperatorReporter

    answers = [503, 503, 202, 400]
    seen: list[dict[str, object]] = []

    class Endpoint(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(answers.pop(0) if answers else 500)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        reporter = OperatorReporter(f"http://127.0.0.1:{server.server_port}/v1/progress/ns/j",
                                    "t", {"name": "j"})
        reporter.RETRY_SECONDS = (0.05, 0.05, 0.05)
        reporter.send({"step": 10, "eval_loss": 1.5})
        reporter.send({"step": 11, "bad": True})
        assert reporter.flush(timeout=10)
    finally:
        server.shutdown()
    assert [r["step"] for r in seen] == [10, 10, 10, 11], "three tries, then the next report"
    assert answers == [], "the refused report was not tried again"
