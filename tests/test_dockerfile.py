"""The Dockerfile and .dockerignore as files: hadolint's verdict and the build context's allow-list.

What the image does (it builds, its user, entrypoint, port, healthcheck, contents) is proved by
building and running it: tests/test_image.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tooling import REPO, require_tool

DOCKERFILE = REPO / "Dockerfile"


def hadolint() -> str:
    return require_tool("hadolint", str(Path(sys.executable).parent / "hadolint"))


def test_hadolint_is_clean() -> None:
    cmd = [hadolint(), "--no-color"]
    config = REPO / ".hadolint.yaml"
    if config.exists():
        cmd += ["--config", str(config)]
    result = subprocess.run(
        [*cmd, str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    """The lint test can fail: hadolint flags a root image built with curl and pip cache."""
    bad = tmp_path / "Dockerfile"
    bad.write_text(
        "FROM python\nRUN apt-get update && apt-get install -y curl\nRUN pip install x\n"
    )
    result = subprocess.run(
        [hadolint(), "--no-color", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "DL3006" in result.stdout  # untagged base image


def test_dockerignore_is_an_allow_list() -> None:
    """Only the package sources go to the builder: no .venv, .git, tests or local configs.

    (That the allowed paths are enough is proved by the real build in tests/test_image.py.)
    """
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "the .dockerignore is meant as an allow-list"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "LICENSE", "exporter"}
