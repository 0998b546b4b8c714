"""The container image: Dockerfile lint, its shape, and its install steps run here.

Docker cannot build in the test environment, so the builder stage's RUN instruction is executed
verbatim against a build context assembled from the Dockerfile's own COPY lines, with the stage's
ENV paths pointed into a temp dir. The resulting venv is then run the way the final stage's
ENTRYPOINT and HEALTHCHECK run it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from tooling import REPO, free_port, require_tool

import exporter

DOCKERFILE = REPO / "Dockerfile"
CHART_VALUES = REPO / "helm" / "retargeting-exporter" / "values.yaml"
DEFAULT_PORT = 9817
IMAGE_UID = 65532


# --- a small Dockerfile reader ------------------------------------------------------------------


@dataclass
class Stage:
    """One FROM ... block: its instructions in order, as (KEYWORD, arguments) pairs."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def one(self, keyword: str) -> str:
        found = self.all(keyword)
        assert len(found) == 1, f"expected one {keyword} in stage {self.name or self.base}"
        return found[0]

    def env(self, outer: dict[str, str] | None = None) -> dict[str, str]:
        """The stage's ENV, with ``$VAR``/``${VAR}`` expanded from earlier values and ``outer``."""
        env = dict(outer or {})
        for args in self.all("ENV"):
            for pair in shlex.split(args):
                key, _, value = pair.partition("=")
                env[key] = expand(value, env)
        return env

    def args(self) -> dict[str, str]:
        return dict(a.partition("=")[::2] for a in self.all("ARG"))


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)


def expand(value: str, env: dict[str, str]) -> str:
    return re.sub(
        r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: env.get(m.group(1), m.group(0)), value
    )


def parse_dockerfile(text: str) -> Dockerfile:
    """Join continuation lines, drop comments, and group the instructions by stage."""
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not current):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            parts = args.split()
            base = expand(parts[0], global_args)
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        elif not stages and keyword == "ARG":
            key, _, value = args.partition("=")
            global_args[key] = value
        else:
            stages[-1].instructions.append((keyword, args))
    return Dockerfile(global_args, stages)


def dockerfile() -> Dockerfile:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


def image_user() -> tuple[int, int]:
    """The final stage's USER as numeric (uid, gid)."""
    user = dockerfile().final.one("USER")
    assert re.fullmatch(r"\d+:\d+", user), f"USER {user!r} must be numeric uid:gid"
    uid, gid = user.split(":")
    return int(uid), int(gid)


def entrypoint() -> list[str]:
    value = dockerfile().final.one("ENTRYPOINT")
    parsed = json.loads(value)  # exec form: signals reach the exporter, no shell in between
    assert isinstance(parsed, list)
    return [str(p) for p in parsed]


def config_file_path() -> str:
    """Where the image's ENTRYPOINT tells the exporter to read its config."""
    flags = [a for a in entrypoint() if a.startswith("--config.file=")]
    assert len(flags) == 1, entrypoint()
    return flags[0].partition("=")[2]


def healthcheck_command() -> list[str]:
    value = dockerfile().final.one("HEALTHCHECK")
    _options, _, command = value.partition(" CMD ")
    assert command, f"HEALTHCHECK without CMD: {value}"
    parsed = json.loads(command)
    assert isinstance(parsed, list)
    return [str(p) for p in parsed]


# --- lint and shape --------------------------------------------------------------------------


def test_hadolint_is_clean() -> None:
    hadolint = require_tool("hadolint", str(Path(sys.executable).parent / "hadolint"))
    config = REPO / ".hadolint.yaml"
    cmd = [hadolint, "--no-color"]
    if config.exists():
        cmd += ["--config", str(config)]
    result = subprocess.run(
        [*cmd, str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    """The lint test can fail: hadolint flags a root image built with curl and pip cache."""
    hadolint = require_tool("hadolint", str(Path(sys.executable).parent / "hadolint"))
    bad = tmp_path / "Dockerfile"
    bad.write_text(
        "FROM python\nRUN apt-get update && apt-get install -y curl\nRUN pip install x\n"
    )
    result = subprocess.run(
        [hadolint, "--no-color", str(bad)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode != 0
    assert "DL3006" in result.stdout  # untagged base image


def test_multi_stage_on_the_same_slim_python() -> None:
    parsed = dockerfile()
    assert [s.name for s in parsed.stages] == ["builder", None]
    bases = {s.base for s in parsed.stages}
    # The venv copied out of the builder links to the builder's interpreter: same image both.
    assert len(bases) == 1, bases
    (base,) = bases
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", base), base


def test_final_stage_holds_only_the_venv() -> None:
    parsed = dockerfile()
    final, builder = parsed.final, parsed.stage("builder")
    # No RUN in the final stage: nothing is installed there, so no compilers, no pip cache.
    assert final.all("RUN") == []
    copies = final.all("COPY")
    venv = builder.env()["VIRTUAL_ENV"]
    assert copies == [f"--from=builder {venv} {venv}"]
    assert final.env()["VIRTUAL_ENV"] == venv
    assert final.env()["PATH"].startswith(f"{venv}/bin:")
    assert builder.env().get("PIP_NO_CACHE_DIR") == "1"
    run = builder.one("RUN")
    assert "--without-pip" in run, "the image's venv must not carry pip"


def test_runs_as_the_charts_non_root_numeric_user() -> None:
    uid, gid = image_user()
    assert (uid, gid) == (IMAGE_UID, IMAGE_UID)
    values = yaml.safe_load(CHART_VALUES.read_text(encoding="utf-8"))
    for context in (values["podSecurityContext"], values["securityContext"]):
        assert context["runAsUser"] == uid
        assert context["runAsGroup"] == gid
        assert context["runAsNonRoot"] is True


def test_read_only_friendly_environment() -> None:
    env = dockerfile().final.env()
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"


def test_port_entrypoint_and_config_path() -> None:
    final = dockerfile().final
    assert final.one("EXPOSE") == str(DEFAULT_PORT)
    assert entrypoint() == [
        "retargeting-exporter",
        "--config.file=/etc/retargeting-exporter/config.yaml",
    ]


def test_healthcheck_uses_python_not_curl() -> None:
    command = healthcheck_command()
    assert command[:2] == ["python", "-c"]
    assert f"http://127.0.0.1:{DEFAULT_PORT}/-/healthy" in command[2]
    assert "curl" not in dockerfile().final.one("HEALTHCHECK")


def test_oci_labels() -> None:
    parsed = dockerfile()
    final = parsed.final
    args = final.args()
    labels: dict[str, str] = {}
    for line in final.all("LABEL"):
        for pair in shlex.split(line):
            key, _, value = pair.partition("=")
            labels[key] = expand(value, args)
    assert labels["org.opencontainers.image.version"] == exporter.__version__
    assert labels["org.opencontainers.image.licenses"] == "MIT"
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert 'license = "MIT"' in pyproject
    source = re.search(r'^Source = "([^"]+)"', pyproject, re.MULTILINE)
    assert source is not None
    assert labels["org.opencontainers.image.source"] == source.group(1)


def test_dockerignore_lets_every_copy_source_through() -> None:
    """.dockerignore is an allow-list; each COPY source from the context must be on it."""
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "the .dockerignore is meant as an allow-list"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    for source in context_sources():
        assert source.rstrip("/") in allowed, f"COPY {source} is excluded by .dockerignore"
    for excluded in (".venv", "tests", ".git"):
        assert excluded not in allowed


def context_sources() -> list[str]:
    """The paths the builder stage COPYs from the build context."""
    sources: list[str] = []
    for args in dockerfile().stage("builder").all("COPY"):
        parts = shlex.split(args)
        assert not any(p.startswith("--from") for p in parts)
        sources += parts[:-1]
    return sources


# --- the install steps, done here --------------------------------------------------------------


@dataclass
class BuiltImage:
    """What the builder produced, rebased into a temp dir, and how the final stage runs it."""

    root: Path
    venv: Path
    env: dict[str, str]
    files: set[Path]  # the venv's files right after the build

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*entrypoint(), *args],
            env=self.env,
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def rebase(path: str, root: Path) -> str:
    return str(root / path.lstrip("/"))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> BuiltImage:
    """Run the builder stage's RUN instruction verbatim, as `docker build` would."""
    root = tmp_path_factory.mktemp("image")
    parsed = dockerfile()
    builder = parsed.stage("builder")

    # The build context, as the COPY lines assemble it under WORKDIR.
    workdir = Path(rebase(builder.one("WORKDIR"), root))
    workdir.mkdir(parents=True)
    for args in builder.all("COPY"):
        *sources, dest = shlex.split(args)
        target = workdir / dest
        for source in sources:
            src = REPO / source
            if src.is_dir():
                shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, target / src.name)

    # The builder's ENV, absolute paths moved under root. The pip cache stays on here (it only
    # makes the test faster; the image build sets PIP_NO_CACHE_DIR).
    env = {k: v for k, v in os.environ.items() if k in {"HOME", "LANG", "TMPDIR"}}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.defpath])
    for key, value in builder.env().items():
        env[key] = rebase(value, root) if value.startswith("/") else value
    env.pop("PIP_NO_CACHE_DIR", None)
    run = builder.one("RUN")
    result = subprocess.run(
        ["/bin/sh", "-c", run],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"RUN {run}\n{result.stdout}\n{result.stderr}"

    # COPY --from=builder: the venv sits at the same path in the final stage.
    venv = Path(rebase(builder.env()["VIRTUAL_ENV"], root))
    final_env = parsed.final.env({"PATH": os.defpath})
    run_env = {k: v for k, v in os.environ.items() if k in {"HOME", "LANG"}}
    for key, value in final_env.items():
        run_env[key] = value.replace(builder.env()["VIRTUAL_ENV"], str(venv))
    return BuiltImage(root=root, venv=venv, env=run_env, files=venv_files(venv))


def venv_files(venv: Path) -> set[Path]:
    return {p for p in venv.rglob("*") if p.is_file()}


def test_venv_holds_the_package_without_pip(built: BuiltImage) -> None:
    site = next(built.venv.glob("lib/python3*/site-packages"))
    assert (site / "exporter" / "__init__.py").is_file()
    assert not list(site.glob("pip*")), "pip must not be in the image's venv"
    assert not list(site.glob("setuptools*"))
    # Bytecode is compiled at install time, so a read-only root filesystem costs nothing.
    assert list((site / "exporter" / "__pycache__").glob("*.pyc"))


def test_version(built: BuiltImage) -> None:
    result = built.run("--version")
    assert result.returncode == 0, result.stderr
    assert exporter.__version__ in result.stdout + result.stderr


def get_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


@pytest.fixture
def demo_server(built: BuiltImage) -> Iterator[int]:
    """`docker run IMAGE --demo`: the ENTRYPOINT plus --demo, on a free port."""
    port = free_port()
    process = subprocess.Popen(
        [*entrypoint(), "--demo", f"--web.listen-address=127.0.0.1:{port}"],
        env=built.env,
        cwd=built.root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while get_status(f"http://127.0.0.1:{port}/-/healthy") != 200:
            if process.poll() is not None:
                pytest.fail(f"the exporter exited with {process.returncode}: {process.stderr}")
            if time.monotonic() > deadline:
                pytest.fail("/-/healthy did not answer 200 within 20s")
            time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


def healthcheck_on(built: BuiltImage, port: int) -> subprocess.CompletedProcess[str]:
    """The HEALTHCHECK's command, aimed at ``port`` instead of the default."""
    command = [
        part.replace(f"127.0.0.1:{DEFAULT_PORT}", f"127.0.0.1:{port}")
        for part in healthcheck_command()
    ]
    return subprocess.run(
        command, env=built.env, capture_output=True, text=True, timeout=30, check=False
    )


def test_demo_answers_healthy_and_healthcheck_passes(built: BuiltImage, demo_server: int) -> None:
    assert get_status(f"http://127.0.0.1:{demo_server}/-/healthy") == 200
    result = healthcheck_on(built, demo_server)
    assert result.returncode == 0, result.stderr
    # Nothing was written into the image's files while it ran (read-only root filesystem).
    assert venv_files(built.venv) == built.files


def test_healthcheck_fails_when_nothing_listens(built: BuiltImage) -> None:
    result = healthcheck_on(built, free_port())
    assert result.returncode == 1  # Docker's "unhealthy"; 2 is reserved
