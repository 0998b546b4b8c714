"""The container image, built from the repository's Dockerfile with buildah and run as a user would.

There is no Docker daemon here and Docker Hub is out of reach, so the base image is made locally:
a Debian bookworm root filesystem from debootstrap holding Debian's Python 3.11, imported into
buildah's storage and passed as the Dockerfile's ``PYTHON_IMAGE``. It is built once per machine
and kept in :func:`cache_dir` (the image itself is built afresh by every run). The build runs
with ``--pull=never``, so it can only succeed if both stages really start from ``PYTHON_IMAGE``.

The containers run with ``buildah run --isolation chroot``: no network namespace, so the exporter
inside polls a fake API on the host's loopback and serves the host directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import signal
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from test_dockerfile import config_file_path, dockerfile, image_user
from tooling import REPO, free_port, require_tool

import exporter
from exporter.fakeapi import DOCUMENTED_EXAMPLE_ROWS, AccountState, FakeAccount, FakeApi

# The first run on a machine also makes the base image (debootstrap downloads ~100 MB).
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

IMAGE_UID = 65532
PORT = 9817
CONFIG_PATH = "/etc/retargeting-exporter/config.yaml"
CHART_VALUES = REPO / "helm" / "retargeting-exporter" / "values.yaml"

# The stand-in for python:3.11-slim. Changing any of it names a new base image.
BASE_SUITE = "bookworm"
BASE_MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = (
    "python3",
    "python3-venv",
    "python3-pip",
    "python-is-python3",
    "ca-certificates",
    "tzdata",
)
# Where Debian's OpenSSL and pip look for trusted CAs, in the base as on a Debian host.
DEBIAN_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"

# Files buildah run creates in a container's root to mount its own over them, as Docker does.
BUILDAH_RUN_MOUNTS = {
    Path(p) for p in ("etc/hosts", "etc/resolv.conf", "etc/hostname", "run/.containerenv")
}

# What each run builds and starts, named after the run (see run_id).
TEST_IMAGE = "localhost/retargeting-exporter-test"
TEST_CONTAINER = "retargeting-exporter-test"

KEY = "image-test-key"
ACCOUNT = "shop-a"


# --- buildah --------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """Where the base image lives between runs, shared by every checkout on the machine.

    /var/cache is the place for data a program can rebuild but would rather keep; a folder in
    the checkout would be rebuilt per clone and worktree. ``RETARGETING_EXPORTER_TEST_CACHE``
    moves it (e.g. to a directory a CI cache restores).
    """
    chosen = os.environ.get("RETARGETING_EXPORTER_TEST_CACHE")
    if chosen:
        return Path(chosen)
    system = Path("/var/cache/retargeting-exporter-tests")
    if os.access(system, os.W_OK) or os.access(system.parent, os.W_OK):
        return system
    return Path.home() / ".cache" / "retargeting-exporter-tests"


@dataclass(frozen=True)
class Buildah:
    """buildah on its own storage (vfs: no overlay or fuse needed) with chroot isolation."""

    binary: str
    cache: Path

    def command(self, *args: str) -> list[str]:
        return [
            self.binary,
            "--root",
            str(self.cache / "storage"),
            "--runroot",
            str(self.cache / "run"),
            "--storage-driver",
            "vfs",
            *args,
        ]

    def __call__(self, *args: str, timeout: float = 120) -> str:
        """Run a buildah command; its stdout, or a failure showing what it printed."""
        result = subprocess.run(
            self.command(*args),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        if result.returncode != 0:
            pytest.fail(
                f"buildah {' '.join(args)}: exit {result.returncode}\n"
                f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
            )
        return result.stdout.strip()

    def has_image(self, name: str) -> bool:
        result = subprocess.run(
            self.command("images", "--quiet", name),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return result.returncode == 0 and bool(result.stdout.strip())


def base_image_name() -> str:
    recipe = json.dumps([BASE_SUITE, BASE_MIRROR, BASE_PACKAGES, "minbase"]).encode()
    digest = hashlib.sha256(recipe).hexdigest()[:12]
    return f"localhost/retargeting-exporter-test-base:{BASE_SUITE}-{digest}"


def make_base_image(buildah: Buildah, debootstrap: str, name: str) -> None:
    """debootstrap straight into a new working container's root, then commit it as ``name``."""
    container = buildah("from", "scratch")
    try:
        root = Path(buildah("mount", container))
        result = subprocess.run(
            [
                debootstrap,
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                # Verify the mirror's signature; never fall back to an unchecked download.
                "--keyring=/usr/share/keyrings/debian-archive-keyring.gpg",
                BASE_SUITE,
                str(root),
                BASE_MIRROR,
            ],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        assert result.returncode == 0, (
            f"debootstrap failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
        # What python:3.11-slim leaves out too: downloaded packages and package lists.
        for leftovers in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (root / leftovers).glob("*"):
                if path.is_file() and path.name != "lock":
                    path.unlink()
        for path in (root / "var/cache/apt").glob("*.bin"):
            path.unlink()
        buildah("umount", container)
        buildah(
            "config",
            "--env",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--env",
            "LANG=C.UTF-8",
            "--cmd",
            "python3",
            container,
        )
        buildah("commit", "--rm", container, name, timeout=600)
    except BaseException:
        subprocess.run(buildah.command("rm", container), capture_output=True, check=False)
        raise


def host_ca_bundle() -> str:
    """The CA bundle this machine trusts (SSL_CERT_FILE, else OpenSSL's default file)."""
    for candidate in (
        os.environ.get("SSL_CERT_FILE"),
        ssl.get_default_verify_paths().openssl_cafile,
        DEBIAN_CA_BUNDLE,
    ):
        if candidate and Path(candidate).is_file():
            return str(Path(candidate).resolve())
    pytest.fail("no CA bundle found on the host for pip inside the build")


@pytest.fixture(scope="module")
def buildah() -> Buildah:
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    buildah = Buildah(require_tool("buildah"), cache)
    remove_leftovers(buildah)
    return buildah


def run_id() -> str:
    """Names this test process's image and containers: its pid, then a random part."""
    return f"{os.getpid()}-{uuid.uuid4().hex[:8]}"


def remove_leftovers(buildah: Buildah) -> None:
    """Remove the containers and images of test runs that were killed before their teardown
    (a copy of the image each, with vfs); those of runs still going are left alone."""

    def gone(run: str) -> bool:
        pid = run.partition("-")[0]
        return pid.isdigit() and not Path(f"/proc/{pid}").exists()

    for name in buildah("containers", "--all", "--format", "{{.ContainerName}}").splitlines():
        if name.startswith(f"{TEST_CONTAINER}-") and gone(name.removeprefix(f"{TEST_CONTAINER}-")):
            buildah("rm", name)
    for name in buildah("images", "--format", "{{.Name}}:{{.Tag}}").splitlines():
        if name.startswith(f"{TEST_IMAGE}:") and gone(name.removeprefix(f"{TEST_IMAGE}:")):
            buildah("rmi", name)


@pytest.fixture(scope="module")
def base_image(buildah: Buildah) -> str:
    """The local python:3.11-slim stand-in, made on first use (one maker at a time)."""
    name = base_image_name()
    # Required even when the base is cached: a machine without it could not make the base again.
    debootstrap = require_tool("debootstrap", "/usr/sbin/debootstrap")
    with (buildah.cache / "base.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not buildah.has_image(name):
            make_base_image(buildah, debootstrap, name)
    return name


@dataclass(frozen=True)
class Image:
    name: str
    build_log: str
    config: dict[str, Any]  # the OCI image config: User, Env, Entrypoint, ExposedPorts, Labels
    healthcheck: dict[str, Any]  # Docker's Healthcheck: Test, Interval, ...
    layers: list[str]  # the diff IDs of its layers, base first


@pytest.fixture(scope="module")
def image(buildah: Buildah, base_image: str) -> Iterator[Image]:
    """``docker build .`` as buildah does it, from the local base; removed after the module."""
    name = f"{TEST_IMAGE}:{run_id()}"
    log = buildah(
        "bud",
        "--isolation",
        "chroot",
        "--format",
        "docker",  # the OCI format has no HEALTHCHECK
        "--pull=never",
        "--build-arg",
        f"PYTHON_IMAGE={base_image}",
        "--volume",
        f"{host_ca_bundle()}:{DEBIAN_CA_BUNDLE}:ro",
        "--tag",
        name,
        str(REPO),
        timeout=900,
    )
    try:
        inspected = json.loads(buildah("inspect", "--type", "image", name))
        yield Image(
            name,
            log,
            inspected["OCIv1"]["config"],
            inspected["Docker"]["config"].get("Healthcheck") or {},
            inspected["OCIv1"]["rootfs"]["diff_ids"],
        )
    finally:
        buildah("rmi", name)


@dataclass
class Container:
    """A working container of the image: ``buildah run`` starts processes in it."""

    buildah: Buildah
    name: str
    root: Path  # its root filesystem, mounted on the host
    image: Image
    files: set[Path]  # the files in it when it was made

    def command(
        self,
        *args: str,
        volumes: dict[str, str] | None = None,
        env: dict[str, str] | None = None,
        network: Sequence[str] = (),
    ) -> list[str]:
        """``buildah run`` of ``args``; ``network``: the command that puts it in another network
        namespace (chroot isolation has none of its own: the host's is the default)."""
        options = ["--isolation", "chroot", "--network", "host"]
        for host, inside in (volumes or {}).items():
            options += ["--volume", f"{host}:{inside}:ro"]
        for key, value in (env or {}).items():
            options += ["--env", f"{key}={value}"]
        return [*network, *self.buildah.command("run", *options, self.name, "--", *args)]

    def run(
        self, *args: str, network: Sequence[str] = (), timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(*args, network=network),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def entrypoint(self, *args: str) -> list[str]:
        """``docker run IMAGE ARGS``: the image's ENTRYPOINT followed by ARGS."""
        return [*self.image.config["Entrypoint"], *args]


@pytest.fixture(scope="module")
def container(buildah: Buildah, image: Image) -> Iterator[Container]:
    name = buildah(
        "from",
        "--pull=never",
        "--name",
        f"{TEST_CONTAINER}-{run_id()}",
        image.name,
    )
    try:
        root = Path(buildah("mount", name))
        yield Container(buildah, name, root, image, rootfs_files(root))
    finally:
        buildah("rm", name)


# --- processes inside ---------------------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # The command name (field 2) may hold spaces and parentheses: parse after its end.
            fields = stat.read_text().rpartition(")")[2].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def inside(pid: int) -> list[int]:
    """The processes below ``pid`` that see another root than the host's: the container's."""
    found = []
    for child in descendants(pid):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{child}/root") != "/":
                found.append(child)
    return found


def ids(pid: int) -> tuple[list[int], list[int]]:
    """The process's (real, effective, saved, filesystem) uids and gids."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    uid = next(line for line in status if line.startswith("Uid:")).split()[1:]
    gid = next(line for line in status if line.startswith("Gid:")).split()[1:]
    return [int(u) for u in uid], [int(g) for g in gid]


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]


@dataclass
class Running:
    """``docker run`` in progress: the buildah run process and the exporter inside it."""

    process: subprocess.Popen[bytes]
    log: Path
    base: str | None  # the exporter's URL as the host reaches it (None: in a network of its own)

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-4000:]

    def exporter_pid(self) -> int:
        pids = [p for p in inside(self.process.pid) if "--config.file=" in " ".join(cmdline(p))]
        assert pids, f"no exporter process inside the container:\n{self.output()}"
        # buildah's exec helper carries the same arguments: the exporter is the one below it.
        (leaf,) = [p for p in pids if not descendants(p)]
        return leaf


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def wait_for(check: Callable[[], bool], what: str, running: Running, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if running.process.poll() is not None:
            pytest.fail(
                f"the container exited ({running.process.returncode}) before {what}:\n"
                f"{running.output()}"
            )
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout}s:\n{running.output()}")
        time.sleep(0.2)


def answers(url: str, status: int = 200) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return get(url)[0] == status
        except OSError:
            return False

    return check


@contextlib.contextmanager
def run_exporter(
    container: Container,
    log: Path,
    *args: str,
    volumes: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    wrapper: Sequence[str] = (),
) -> Iterator[Running]:
    """The image's entrypoint with ``args`` on a free host port, ready; always stopped after.

    ``wrapper`` goes before the entrypoint (a command that runs the rest as its arguments).
    """
    port = free_port()
    command = container.command(
        *wrapper,
        *container.entrypoint(*args, f"--web.listen-address=127.0.0.1:{port}"),
        volumes=volumes,
        env=env,
    )
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    running = Running(process, log, f"http://127.0.0.1:{port}")
    try:
        wait_for(answers(f"{running.base}/-/ready"), "ready exporter", running)
        yield running
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """End the container's processes and buildah run: SIGTERM, then SIGKILL for what is left."""
    if process.poll() is not None:
        return
    for pid in inside(process.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        for pid in [*descendants(process.pid), process.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.wait(timeout=15)


# --- the fake API on the host -------------------------------------------------------------------


@pytest.fixture(scope="module")
def fake_api() -> Iterator[FakeApi]:
    """The local fake API on 127.0.0.1 in a thread of its own, serving the documented example."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    fake = FakeApi([FakeAccount(KEY, AccountState.PAID, seed=1)])
    fake.set_rows(KEY, DOCUMENTED_EXAMPLE_ROWS)
    asyncio.run_coroutine_threadsafe(fake.start(), loop).result(timeout=30)
    try:
        yield fake
    finally:
        asyncio.run_coroutine_threadsafe(fake.close(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()


def config_file(directory: Path, api_url: str) -> Path:
    path = directory / "config.yaml"
    config = {
        "api": {"url": api_url, "timeout": "5s"},
        "windows": ["24h"],
        "accounts": [{"name": ACCOUNT, "rest_key_env": "SHOP_A_KEY"}],
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    path.chmod(0o644)  # the image's user is not the file's owner
    return path


@pytest.fixture(scope="module")
def running(
    container: Container, fake_api: FakeApi, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    """The documented ``docker run``: config file mounted at the documented path, key in the
    environment, nothing else but the listen address (the host's port 9817 may be taken)."""
    tmp = tmp_path_factory.mktemp("image")
    config = config_file(tmp, fake_api.url)
    with run_exporter(
        container, tmp / "exporter.log", volumes={str(config): CONFIG_PATH}, env={"SHOP_A_KEY": KEY}
    ) as started:
        yield started


@pytest.fixture
def private_network() -> Iterator[list[str]]:
    """A network namespace of its own with loopback up, as Docker gives a container, so the
    image's own port 9817 is free whatever the host runs. Yields the command prefix that runs a
    program in it."""
    unshare = require_tool("unshare")
    nsenter = require_tool("nsenter")
    ip = require_tool("ip", "/usr/sbin/ip", "/sbin/ip")
    holder = subprocess.Popen(
        [
            unshare,
            "--net",
            "--",
            "sh",
            "-c",
            '"$0" link set lo up && echo up && exec sleep 3600',
            ip,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stderr is not None
    try:
        if holder.stdout.readline().strip() != "up":
            pytest.fail(f"no private network namespace: {holder.stderr.read()}")
        yield [nsenter, f"--net=/proc/{holder.pid}/ns/net", "--"]
    finally:
        holder.kill()
        holder.communicate()


def healthcheck(container: Container, network: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """The image's HEALTHCHECK command as it is, run inside the container."""
    kind, *command = container.image.healthcheck["Test"]
    assert kind == "CMD", container.image.healthcheck  # exec form: no shell needed in the image
    return container.run(*command, network=network)


# Fetches a URL with the image's python; exit status 1 on any error or non-2xx answer.
FETCH = (
    "import sys, urllib.request; "
    "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"
)


def fetch_inside(container: Container, network: Sequence[str], path: str) -> str | None:
    """``path`` from the exporter on the image's port, asked from inside; None if it failed."""
    result = container.run("python", "-c", FETCH, f"http://127.0.0.1:{PORT}{path}", network=network)
    return result.stdout if result.returncode == 0 else None


def rootfs_files(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*") if not p.is_dir()}


# --- the tests ----------------------------------------------------------------------------------


def test_builds_on_the_local_base(image: Image, base_image: str, buildah: Buildah) -> None:
    # --pull=never with nothing but the base in storage: the builder stage came from
    # PYTHON_IMAGE or the build would have failed; the final stage's layers start with the base's.
    base = json.loads(buildah("inspect", "--type", "image", base_image))
    base_layers = base["OCIv1"]["rootfs"]["diff_ids"]
    assert image.layers[: len(base_layers)] == base_layers
    assert len(image.layers) == len(base_layers) + 1  # the venv, and nothing else
    assert "Successfully installed" in image.build_log


def test_dockerfile_default_base_is_python_slim() -> None:
    """Docker users build from python:3.11-slim; the tests only override the build argument."""
    lines = (REPO / "Dockerfile").read_text(encoding="utf-8").splitlines()
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in lines
    assert [line for line in lines if line.startswith("FROM ")] == [
        "FROM ${PYTHON_IMAGE} AS builder",
        "FROM ${PYTHON_IMAGE}",
    ]


def test_image_config(image: Image) -> None:
    config = image.config
    assert config["User"] == f"{IMAGE_UID}:{IMAGE_UID}"
    assert config["Entrypoint"] == ["retargeting-exporter", f"--config.file={CONFIG_PATH}"]
    assert list(config["ExposedPorts"]) == [f"{PORT}/tcp"]
    env = dict(item.partition("=")[::2] for item in config["Env"])
    assert env["PATH"].startswith("/opt/retargeting-exporter/bin:")
    # Nothing written at run time: a read-only root filesystem costs nothing.
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == exporter.__version__
    assert labels["org.opencontainers.image.licenses"] == "MIT"
    assert labels["org.opencontainers.image.source"] in (REPO / "pyproject.toml").read_text()
    assert image.healthcheck["Test"][:3] == ["CMD", "python", "-c"]
    assert f"http://127.0.0.1:{PORT}/-/healthy" in image.healthcheck["Test"][3]


def test_the_chart_tests_read_the_images_config(image: Image) -> None:
    """tests/test_helm.py compares the chart with the Dockerfile as read there: that reading is
    what the built image says."""
    assert f"{image_user()[0]}:{image_user()[1]}" == image.config["User"]
    assert list(image.config["ExposedPorts"]) == [f"{dockerfile().final.one('EXPOSE')}/tcp"]
    assert f"--config.file={config_file_path()}" in image.config["Entrypoint"]


def test_the_charts_user_is_the_images(image: Image) -> None:
    values = yaml.safe_load(CHART_VALUES.read_text(encoding="utf-8"))
    for context in (values["podSecurityContext"], values["securityContext"]):
        assert f"{context['runAsUser']}:{context['runAsGroup']}" == image.config["User"]
        assert context["runAsNonRoot"] is True


def test_version(container: Container) -> None:
    result = container.run(*container.entrypoint("--version"))
    assert result.returncode == 0, result.stderr
    assert exporter.__version__ in result.stdout + result.stderr


def test_polls_the_api_and_serves_the_host(running: Running, container: Container) -> None:
    assert get(f"{running.base}/-/ready")[0] == 200
    status, text = get(f"{running.base}/metrics")
    assert status == 200
    samples = {
        (s.name, s.labels.get("source_name")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.labels.get("account") == ACCOUNT
    }
    assert samples[("retargeting_up", None)] == 1
    for row in DOCUMENTED_EXAMPLE_ROWS:
        source = str(row["source_name"])
        assert samples[("retargeting_impressions", source)] == row["impressions"]
        assert samples[("retargeting_clicks", source)] == row["click"]
        assert samples[("retargeting_orders", source)] == row["order"]
        assert samples[("retargeting_revenue", source)] == row["revenue"]
    assert KEY not in text and KEY not in running.output()
    # Nothing was written into the image's files (a read-only root filesystem would do), apart
    # from the targets buildah run creates for its bind mounts.
    written = rootfs_files(container.root) - container.files
    assert written <= {Path(CONFIG_PATH[1:]), *BUILDAH_RUN_MOUNTS}, written


def test_processes_run_as_the_images_user(running: Running) -> None:
    pids = inside(running.process.pid)
    assert running.exporter_pid() in pids
    for pid in pids:
        assert ids(pid) == ([IMAGE_UID] * 4, [IMAGE_UID] * 4), cmdline(pid)


def test_sigterm_stops_the_exporter_with_status_0(
    container: Container, fake_api: FakeApi, tmp_path: Path
) -> None:
    config = config_file(tmp_path, fake_api.url)
    with run_exporter(
        container,
        tmp_path / "exporter.log",
        volumes={str(config): CONFIG_PATH},
        env={"SHOP_A_KEY": KEY},
        # buildah run reports 0 for a command killed by a signal: a shell inside says how the
        # exporter really ended (143 if SIGTERM killed it instead of stopping it).
        wrapper=["sh", "-c", '"$@"; echo "exporter exit status: $?"', "sh"],
    ) as started:
        os.kill(started.exporter_pid(), signal.SIGTERM)
        try:
            started.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running 30s after SIGTERM:\n{started.output()}")
        assert started.process.returncode == 0, started.output()
        assert started.output().rstrip().endswith("exporter exit status: 0"), started.output()


def test_demo_on_the_images_defaults_and_its_healthcheck(
    container: Container, private_network: list[str], tmp_path: Path
) -> None:
    """``docker run IMAGE --demo``: the entrypoint and --demo only, so the exporter listens on the
    image's port, in a network of its own; the HEALTHCHECK command exactly as the image has it."""
    assert healthcheck(container, private_network).returncode == 1  # nothing up: unhealthy
    log = tmp_path / "demo.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            container.command(*container.entrypoint("--demo"), network=private_network),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    demo = Running(process, log, None)
    try:
        wait_for(
            lambda: fetch_inside(container, private_network, "/-/ready") is not None,
            "ready demo",
            demo,
        )
        up = healthcheck(container, private_network)
        assert up.returncode == 0, up.stderr
        text = fetch_inside(container, private_network, "/metrics")
        assert text is not None
        health = {
            s.labels["account"]: s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "retargeting_up"
        }
        # The built-in fake inside the image: three healthy accounts and two failing ones.
        assert sorted(name for name, value in health.items() if value == 1) == [
            "demo-electronics",
            "demo-fashion",
            "demo-garden",
        ]
        assert sorted(name for name, value in health.items() if value == 0) == [
            "demo-inactive",
            "demo-revoked",
        ]
    finally:
        stop(process)
    down = healthcheck(container, private_network)
    assert down.returncode == 1, down.stderr  # Docker's "unhealthy"


def test_holds_no_compiler_pip_cache_source_or_tests(container: Container) -> None:
    root = container.root
    files = rootfs_files(root)
    names = {p.name for p in files}
    for compiler in ("gcc", "cc", "c++", "g++", "clang", "x86_64-linux-gnu-gcc", "ld"):
        assert compiler not in names, f"a compiler ({compiler}) is in the image"
    assert not [p for p in files if "pip" in p.parts and ".cache" in p.parts], "a pip cache"
    assert not (root / "src").exists() and not (root / "tmp" / "wheelhouse").exists()
    assert not [p for p in files if p.name in {"pyproject.toml", "Dockerfile", "conftest.py"}]
    venv = root / "opt" / "retargeting-exporter"
    (site,) = venv.glob("lib/python3*/site-packages")
    assert (site / "exporter" / "__init__.py").is_file()
    assert not (site / "tests").exists() and not list(site.glob("exporter/test*"))
    assert not list(site.glob("pip*")) and not list(site.glob("setuptools*")), "pip in the venv"
    # Bytecode compiled at install time: nothing to write at run time.
    assert list((site / "exporter" / "__pycache__").glob("*.pyc"))
