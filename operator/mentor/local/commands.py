"""The `mentor` commands that work on this machine, with no cluster: run, generate, report of a
local output, data.

Each raises `CommandFailed` with the one line the user sees; mentor.cli prints it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SAMPLE_TOKENS = 200  # what the quickstart's summary lets the model say


class CommandFailed(Exception):
    """A command that cannot go on; its message is the one line the user sees."""


def load_job(file: Path | None) -> Any:
    """A job from its YAML, validated as the API server would; every error is one line."""
    from mentor.api.validation import InvalidJob, UnreadableDocument
    from mentor.local import training as local

    try:
        return local.load(file)
    except InvalidJob as e:
        raise CommandFailed(f"{file or 'the quickstart'} is invalid:\n" +
                            "\n".join(f"  {error}" for error in e.errors)) from None
    except UnreadableDocument as e:
        raise CommandFailed(str(e)) from None


def output_of(target: Path) -> tuple[Path, str]:
    """A job's output directory and name, from its YAML or from the directory itself."""
    from mentor.local import training as local

    if target.is_file():
        job = load_job(target)
        return Path(local.local_path(job.spec.output.uri) or "."), job.metadata.name
    if not target.is_dir():
        raise CommandFailed(f"{target}: no such job file or output directory")
    return target, target.name


def report_job(target: Path, png: Path | None) -> int:
    from mentor.api.kinds import TuningJob
    from mentor.report import history as report
    from mentor.report import plots
    from mentor.report import trials as shown

    output, name = output_of(target)
    if (output / "tuning.json").exists():
        from mentor.local.tuning import read_summary

        trials, winner, metric = read_summary(output / "tuning.json")
        print(shown.table(name, trials, winner, metric))
        print(f"  picture       "
              f"{plots.plot_trials(name, trials, winner, png or output / 'report.png')}")
        return 0
    if target.is_file() and isinstance(load_job(target), TuningJob):
        raise CommandFailed(f"no search summary at {output / 'tuning.json'}: has the job run? "
                            f"(mentor run {target})")
    log = output / "metrics.jsonl"
    if not log.exists():
        raise CommandFailed(f"no metrics log at {log}: has the job run?")
    history = report.read_history(log)
    print(report.summary(name, history))
    for line in report.tracking_lines(output):
        print(line)
    if history.steps:  # the picture last: scripts take the path from the last line
        print(f"  picture       {plots.plot(name, history, png or output / 'report.png')}")
    return 0


def model_of(target: Path) -> Path:
    """The model a job wrote: its output, or a search's best trial's (from its summary)."""
    output, _ = output_of(target)
    if (output / "tuning.json").exists():
        from mentor.local.tuning import read_summary

        trials, winner, _ = read_summary(output / "tuning.json")
        best = next((t for t in trials if t.name == winner and t.model_uri), None)
        if best is None:
            raise CommandFailed(f"{output}: no trial of this search succeeded, so there is no "
                                "model to sample")
        return Path(str(best.model_uri))
    return output


def generate(target: Path, prompt: str, tokens: int, temperature: float, seed: int) -> str:
    from mentor_trainer.errors import DataNotFound
    from mentor_trainer.generate import load, sample

    output = model_of(target)
    try:
        model, tokenizer = load(output)
    except DataNotFound as e:
        raise CommandFailed(str(e)) from None
    try:
        return prompt + sample(model, tokenizer, prompt, tokens, temperature, seed)
    except ValueError as e:
        raise CommandFailed(str(e)) from None


def fetch_data(dataset: str, to: Path | None) -> None:
    from mentor.local.sample_data import (
        Unavailable,
        fetch_shakespeare,
        preferences,
        python_source,
    )
    from mentor.local.training import local_path

    def local(name: str) -> Path:
        return Path(local_path(f"pvc://datasets/{name}") or ".")

    target = to or local(dataset)
    try:
        if dataset == "shakespeare":
            files, what = fetch_shakespeare(target), "plays"
        elif dataset == "preferences":  # cut from the plays, fetched first if need be
            files = preferences(target, fetch_shakespeare(local("shakespeare")))
            what = "file of preference pairs (a play's line, its true end, and it misspelt)"
        else:
            files, what = python_source(target), "modules of Python's own source"
    except Unavailable as e:
        raise CommandFailed(str(e)) from None
    size = sum(f.stat().st_size for f in files)
    print(f"{len(files)} {what} ({size / 1e6:.1f} MB) in {target}")


def prepare_data(file: Path | None) -> None:
    """Tokenize a job's data once into its token shard, as rank 0 of the job would."""
    import time

    from tqdm import tqdm

    from mentor.api.kinds import TrainingJob
    from mentor.api.training import DataFormat, TrainerConfig
    from mentor.local import training as local
    from mentor_trainer import data, shards
    from mentor_trainer.errors import TrainerError
    from mentor_trainer.tokenizer import known_tokenizer

    job = load_job(file)
    if not isinstance(job, TrainingJob):
        job = _first_trial(job)  # every trial reads the same data with the base's tokenizer
    config = local.local_config(job)
    if not isinstance(config, TrainerConfig):
        raise CommandFailed(f"{file}: a custom trainer reads its data itself; data prepare is "
                            "for the built-in trainer's")
    if config.data.format in (*data.INSTRUCTIONS, DataFormat.PREFERENCE):
        raise CommandFailed(f"{file}: {config.data.format} data is read whole by each run; "
                            "data prepare makes token shards of text (text, jsonl, hf-disk)")
    started = time.monotonic()
    try:
        with tqdm(unit="B", unit_scale=True, desc="tokenizing") as bar:
            path = shards.prepare(config.data, known_tokenizer(config),
                                  Path(config.output.uri) / ".mentor" / "tokens", bar.update)
    except TrainerError as e:
        raise CommandFailed(str(e)) from None
    shard = shards.open_shard(path)
    print(f"{shard.meta['tokens']:,} tokens of {shard.meta['documents']:,} documents "
          f"({shard.tokens.dtype}) in {path} ({time.monotonic() - started:.1f} s; "
          "ready, or found ready)")


def _first_trial(job: Any) -> Any:
    """A TuningJob's first trial as the TrainingJob it runs."""
    from mentor.api.kinds import TrainingJob
    from mentor.builders.trials import trial_name, trial_spec
    from mentor.local import tuning as local_tuning

    try:
        base = local_tuning.base_uri(job)
    except local_tuning.TuningFailed as e:
        raise CommandFailed(str(e)) from None
    name = trial_name(job.metadata.name, 0)
    return TrainingJob.model_validate({"metadata": {"name": name},
                                       "spec": trial_spec(job.spec, name, base, {}, None)})


def run_locally(file: Path | None, progress: bool, fresh: bool, cpu: bool = False) -> int:
    from mentor.local import preflight

    job = load_job(file)
    try:
        job, said = preflight.on_this_machine(job, cpu)
        preflight.check_inputs(job, file.parent if file else None)
    except preflight.NotRunnable as e:
        raise CommandFailed(str(e)) from None
    if said:
        print(said)
    try:
        return _run(job, file, progress, fresh)
    except OSError as e:  # a read-only or full output: one line, not a traceback
        raise CommandFailed(f"cannot write {e.filename}: {e.strerror}; give spec.output.uri "
                            "a place you can write (pvc:// paths live under "
                            "$MENTOR_PVC_ROOT)") from None


def _run(job: Any, file: Path | None, progress: bool, fresh: bool) -> int:
    from mentor.api.kinds import TuningJob
    from mentor.local import reruns
    from mentor.local import training as local
    from mentor.report import history as report

    if isinstance(job, TuningJob):
        from mentor.local import tuning as local_tuning

        try:
            return local_tuning.run(job, progress=progress, fresh=fresh,
                                    file=str(file or "<the job's file>"),
                                    here=file.parent if file else None)
        except local_tuning.TuningFailed as e:
            raise CommandFailed(str(e)) from None
    try:
        prior = local.prepare(job, fresh)
    except reruns.Refused as e:
        raise CommandFailed(str(e)) from None
    if prior is not None and prior.finished and prior.history is not None:
        print(f"{job.kind} {job.metadata.name}: already finished, nothing to train "
              "(--fresh starts over). Its figures:")
        print("  " + report.summary(job.metadata.name, prior.history).replace("\n", "\n  "))
        return 0
    outcome = local.run(job, progress=progress, here=file.parent if file else None)
    print(local.summary(job, outcome))
    if outcome.exit_code == 0:
        from mentor.local.tuning import record_run

        record_run(job)  # a TuningJob's trainingJobRef finds this model
        if not job.spec.trainer.custom:  # a model Mentor wrote, which it knows how to sample
            print(_sample_lines(file, Path(local.local_path(job.spec.output.uri) or ".")))
    return outcome.exit_code


def _sample_lines(file: Path | None, output: Path) -> str:
    """The end of a successful run's summary: a few lines the model wrote."""
    from mentor_trainer.generate import load, sample

    model, tokenizer = load(output)
    text = sample(model, tokenizer, "", SAMPLE_TOKENS)
    command = f"mentor generate {file or output}"
    lines = [ln for ln in text.strip("\n").splitlines() if ln.strip()][:8]
    return "\n".join([f"  sample        ({command} for more)", *(f"    | {ln}" for ln in lines)])
