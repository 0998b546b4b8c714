"""The shipped package on its own: sdist and wheel from `python -m build`, `twine check`, and
the wheel installed into a fresh virtualenv running `--version` and `--demo --once`, away from
the source tree (so the fake API behind --demo must be in the wheel).

Dependencies come from PyPI (or pip's cache), as for a user installing the wheel.
"""

from __future__ import annotations

import email.parser
import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tooling import REPO

import exporter

pytestmark = pytest.mark.e2e

# The demo's accounts: two fail on purpose, so `--demo --once` exits 1 (README: Quick start).
DEMO_UP = {"demo-fashion": 1, "demo-electronics": 1, "demo-garden": 1}
DEMO_DOWN = {"demo-inactive": 0, "demo-revoked": 0}


def run(*argv: str | Path, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    built = run(sys.executable, "-m", "build", "--outdir", out, REPO, cwd=out)
    assert built.returncode == 0, built.stdout + built.stderr
    return out


def test_sdist_and_wheel_pass_twine_check(dist: Path) -> None:
    [sdist] = dist.glob("retargeting_exporter-*.tar.gz")
    [wheel] = dist.glob("retargeting_exporter-*.whl")
    assert sdist.name == f"retargeting_exporter-{exporter.__version__}.tar.gz"
    assert wheel.name.startswith(f"retargeting_exporter-{exporter.__version__}-py3-none-any")
    checked = run(sys.executable, "-m", "twine", "check", "--strict", sdist, wheel, cwd=dist)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_wheel_holds_the_package_and_no_tests(dist: Path) -> None:
    [wheel] = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        [metadata] = [n for n in names if n.endswith(".dist-info/METADATA")]
        fields = email.parser.Parser().parsestr(archive.read(metadata).decode())
    assert fields["Version"] == exporter.__version__  # the one version, from exporter/__init__.py
    top = {name.split("/", 1)[0] for name in names}
    assert top == {"exporter", f"retargeting_exporter-{exporter.__version__}.dist-info"}
    assert not [n for n in names if "test" in n.rsplit("/", 1)[-1] or "/tests/" in n]
    assert "exporter/fakeapi/server.py" in names  # --demo needs it
    assert "exporter/py.typed" in names


def test_the_installed_wheel_runs_alone(dist: Path, tmp_path: Path) -> None:
    [wheel] = dist.glob("*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    installed = run(env_dir / "bin" / "python", "-m", "pip", "install", "-q", wheel, cwd=tmp_path)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    exe = env_dir / "bin" / "retargeting-exporter"

    version = run(exe, "--version", cwd=tmp_path, timeout=60)
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith(f"retargeting-exporter {exporter.__version__} ")

    # Where the module comes from: the venv, not this checkout.
    where = run(
        env_dir / "bin" / "python",
        "-c",
        "import exporter; print(exporter.__file__)",
        cwd=tmp_path,
        timeout=60,
    )
    assert where.stdout.startswith(str(env_dir)), where.stdout

    once = run(exe, "--demo", "--once", cwd=tmp_path, timeout=120)
    assert once.returncode == 1, once.stderr  # the two failing demo accounts, by design
    up = {
        s.labels["account"]: s.value
        for family in text_string_to_metric_families(once.stdout)
        for s in family.samples
        if s.name == "retargeting_up"
    }
    assert up == DEMO_UP | DEMO_DOWN
    assert 'retargeting_impressions{account="demo-fashion"' in once.stdout
    assert "some accounts failed" in once.stderr
    assert "accounts=demo-inactive,demo-revoked" in once.stderr
