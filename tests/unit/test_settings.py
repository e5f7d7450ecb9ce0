"""The operator's settings: checked once at start-up, each bad one named on one line."""

from __future__ import annotations

import pytest

from mentor.controller.settings import Settings, SettingsError


def test_the_defaults_need_no_environment() -> None:
    settings = Settings.from_env({})
    assert (settings.workers, settings.trainer_uid, settings.namespaces) == (8, 1000, ())
    assert settings.leader_election and len(settings.report_key) == 32


def test_every_variable_is_read_under_its_documented_name() -> None:
    settings = Settings.from_env({
        "MENTOR_WORKERS": "3", "MENTOR_NAMESPACES": "team-a, team-b,",
        "MENTOR_POD_NAMESPACE": "ops",
        "MENTOR_TRAINER_RUN_AS_USER": "", "MENTOR_TRAINER_IMAGE_PULL_SECRETS": "regcred",
        "MENTOR_GPU_PRICES": '{"NVIDIA-H100-80GB-HBM3": 4.5}', "MENTOR_LEADER_ELECTION": "false",
        "MENTOR_REPORT_KEY": "k", "MENTOR_SHM_SIZE": "",
        "MENTOR_GPU_RESOURCES": '{"nvidia.com/gpu": 1, "nvidia.com/mig-1g.10gb": 0.142857}'})
    assert settings.workers == 3 and settings.namespaces == ("team-a", "team-b")
    assert settings.lease_namespace == "ops" and settings.trainer_uid is None
    assert settings.trainer_pull_secrets == ("regcred",)
    assert settings.gpu_prices == {"NVIDIA-H100-80GB-HBM3": 4.5}
    assert not settings.leader_election and settings.report_key == b"k"
    assert settings.shm_size == ""
    assert settings.gpu_resources == {"nvidia.com/gpu": 1, "nvidia.com/mig-1g.10gb": 0.142857}


@pytest.mark.parametrize(("variable", "value", "said"), [
    ("MENTOR_WORKERS", "eight", "MENTOR_WORKERS='eight': Input should be a valid integer"),
    ("MENTOR_WORKERS", "0", "MENTOR_WORKERS='0': Input should be greater than or equal to 1"),
    ("MENTOR_RESYNC_SECONDS", "-1", "MENTOR_RESYNC_SECONDS='-1': Input should be greater than 0"),
    ("MENTOR_HTTP_PORT", "70000", "MENTOR_HTTP_PORT='70000': Input should be less than"),
    ("MENTOR_GPU_PRICES", "{oops", "MENTOR_GPU_PRICES='{oops': Value error"),
    ("MENTOR_GPU_RESOURCES", '{"nvidia.com/gpu": 0}',
     "MENTOR_GPU_RESOURCES=0: Input should be greater than 0"),
    ("MENTOR_LEADER_ELECTION", "perhaps", "MENTOR_LEADER_ELECTION='perhaps': Input should be"),
    ("MENTOR_TRAINER_RUN_AS_USER", "-5", "MENTOR_TRAINER_RUN_AS_USER='-5': Input should be"),
])
def test_a_bad_variable_is_one_line_naming_it(variable: str, value: str, said: str) -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({variable: value})
    assert str(refused.value).startswith(said)
    assert "\n" not in str(refused.value)


def test_mentor_operator_refuses_a_bad_setting_before_it_starts(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from mentor.cli import main

    monkeypatch.setenv("MENTOR_WORKERS", "eight")
    assert main(["operator"]) == 2
    assert capsys.readouterr().err == \
        "mentor operator: MENTOR_WORKERS='eight': Input should be a valid integer, unable to " \
        "parse string as an integer\n"
