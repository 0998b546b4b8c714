"""The Dockerfile and .dockerignore as files: hadolint's verdict, the build context's allow-list,
and the final stage's USER, EXPOSE and ENTRYPOINT for the chart's tests (tests/test_helm.py),
which run without building the image.

What the image does (it builds, its user, entrypoint, port, healthcheck, contents) is proved by
building and running it: tests/test_image.py, which also checks that what :func:`dockerfile`
reads here is what the built image says.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tooling import REPO, require_tool

DOCKERFILE = REPO / "Dockerfile"


@dataclass(frozen=True)
class FinalStage:
    """The instructions after the Dockerfile's last FROM, as (KEYWORD, arguments) pairs."""

    instructions: list[tuple[str, str]]

    def one(self, keyword: str) -> str:
        found = [args for kw, args in self.instructions if kw == keyword]
        assert len(found) == 1, f"expected one {keyword} in the final stage, found {found}"
        return found[0]


@dataclass(frozen=True)
class Dockerfile:
    final: FinalStage


def dockerfile() -> Dockerfile:
    """The final stage: comments dropped, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    lines = [line.strip() for line in text.splitlines()]
    instructions = [
        (keyword.upper(), args.strip())
        for keyword, _, args in (line.partition(" ") for line in lines)
        if keyword and not keyword.startswith("#")
    ]
    last_from = max(i for i, (kw, _) in enumerate(instructions) if kw == "FROM")
    return Dockerfile(FinalStage(instructions[last_from + 1 :]))


def image_user() -> tuple[int, int]:
    """The final stage's USER as numeric (uid, gid)."""
    user = dockerfile().final.one("USER")
    assert re.fullmatch(r"\d+:\d+", user), f"USER {user!r} must be numeric uid:gid"
    uid, gid = user.split(":")
    return int(uid), int(gid)


def config_file_path() -> str:
    """Where the ENTRYPOINT tells the exporter to read its config."""
    entrypoint = json.loads(dockerfile().final.one("ENTRYPOINT"))
    flags = [str(a) for a in entrypoint if str(a).startswith("--config.file=")]
    assert len(flags) == 1, entrypoint
    return flags[0].partition("=")[2]


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
