"""The Dockerfile, checked statically: no image builder runs on the CI machines (see README)."""

from __future__ import annotations

import re
from pathlib import Path

DOCKERFILE = (Path(__file__).resolve().parents[2] / "Dockerfile").read_text()


def stage(name: str) -> str:
    match = re.search(rf"^FROM \S+ AS {name}\n(.*?)(?=^FROM |\Z)", DOCKERFILE, re.M | re.S)
    assert match, f"no stage {name}"
    return match.group(1)


def test_base_images_are_pinned_to_exact_tags() -> None:
    for image in re.findall(r"^ARG \w+_IMAGE=(\S+)$", DOCKERFILE, re.M):
        name, _, tag = image.rpartition(":")
        assert name and re.search(r"\d+\.\d+", tag), f"{image} is not pinned"
        assert tag != "latest"


def test_operator_and_trainer_targets_run_as_non_root() -> None:
    for name, entrypoint in (("operator", '["mentor"]'), ("trainer", '["mentor-torchrun"]')):
        body = stage(name)
        user = re.search(r"^USER (\d+):(\d+)$", body, re.M)
        assert user and int(user.group(1)) != 0, f"{name} runs as root"
        assert f"ENTRYPOINT {entrypoint}" in body


def test_the_trainer_uid_matches_the_pods_security_context() -> None:
    from mentor.controller.settings import Settings

    uid = Settings.from_env().trainer_uid  # the default: the image's own user
    assert re.search(rf"^USER {uid}:{uid}$", stage("trainer"), re.M)


def test_the_operator_image_has_no_torch() -> None:
    assert "[trainer]" not in stage("operator")
    assert "torch" not in stage("operator").lower()


def test_the_trainer_image_can_compile_kernels() -> None:
    # torch.compile (Inductor, Triton) builds C kernels at run time: the image needs a compiler
    # before it drops root.
    body = stage("trainer")
    assert re.search(r"apt-get install [^\n]*\bgcc\b", body)
    assert body.index("gcc") < body.index("USER ")
