"""The installed dependency set is consistent, with TorchX's nightly and urllib3 2."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

import pytest


def test_pip_check_is_clean() -> None:
    result = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_torchx_is_the_pinned_nightly_alone_beside_urllib3_2() -> None:
    requirements = metadata.requires("mentor") or []
    pinned = next(r for r in requirements if r.startswith("torchx-nightly"))
    assert pinned.startswith("torchx-nightly==")
    assert metadata.version("torchx-nightly") == pinned.split("==")[1]
    with pytest.raises(metadata.PackageNotFoundError):
        metadata.version("torchx")  # 0.7.0 would pull urllib3<1.27 back in
    assert int(metadata.version("urllib3").split(".")[0]) == 2
    assert int(metadata.version("kubernetes").split(".")[0]) >= 37
