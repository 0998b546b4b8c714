"""Grafana provisioning files and the minimum Grafana version the docs state.

The install commands of docs/grafana.md are run as written, into a temporary root, and must
put each file where Grafana and the dashboard provider look for it.
"""

from __future__ import annotations

import itertools
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import yaml
from test_alerts import EXAMPLE_CONFIG
from test_dashboard import DASHBOARD, NODE_DIR, load_dashboard, variables
from tooling import REPO, missing

PROVISIONING = REPO / "grafana" / "provisioning"
DATASOURCE = PROVISIONING / "datasources" / "prometheus.yml"
PROVIDER = PROVISIONING / "dashboards" / "retargeting-exporter.yml"
DOCS = REPO / "docs" / "grafana.md"
GRAFANA_DIR = "/etc/grafana/provisioning"

# The oldest Grafana release whose dashboard model is each schemaVersion (what it saves). Raising
# the dashboard's schemaVersion means raising the minimum version the docs state.
GRAFANA_BY_SCHEMA_VERSION = {39: "10.4"}


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def provider() -> dict[str, Any]:
    (only,) = load(PROVIDER)["providers"]
    return only  # type: ignore[no-any-return]


def shell_blocks(text: str) -> list[str]:
    """Fenced ```sh blocks, continuation lines joined."""
    blocks = re.findall(r"^```sh\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)
    return [block.replace("\\\n", " ") for block in blocks]


# --- the files ------------------------------------------------------------------------------------


def test_datasource_is_a_prometheus_the_dashboard_can_use() -> None:
    config = load(DATASOURCE)
    assert config["apiVersion"] == 1
    (source,) = config["datasources"]
    assert source["type"] == variables(load_dashboard())["datasource"]["query"] == "prometheus"
    assert source["access"] == "proxy", "the browser never talks to Prometheus"
    assert re.fullmatch(r"https?://[^\s/]+(/\S*)?", source["url"])
    assert source["uid"] == "prometheus"
    # $__rate_interval is right only if Grafana knows the scrape interval.
    scrape = load(EXAMPLE_CONFIG)["global"]["scrape_interval"]
    assert source["jsonData"]["timeInterval"] == scrape


def test_dashboard_provider_reads_a_folder_of_files() -> None:
    config = load(PROVIDER)
    assert config["apiVersion"] == 1
    entry = provider()
    assert entry["type"] == "file"
    assert entry["folder"]
    assert entry["allowUiUpdates"] is False, "the file in the repository stays the source"
    path = entry["options"]["path"]
    assert path.startswith("/") and not path.endswith(".json"), "a folder, absolute"


def test_documented_install_puts_every_file_where_grafana_looks(tmp_path: Path) -> None:
    """The `sudo install` block of docs/grafana.md, run into tmp_path as the root."""
    (block,) = [b for b in shell_blocks(DOCS.read_text(encoding="utf-8")) if "install -D" in b]
    for line in block.splitlines():
        words = shlex.split(line)
        if words[:2] == ["sudo", "systemctl"]:
            continue
        assert words[:3] == ["sudo", "install", "-D"], line
        *options, source, target = words[1:]
        assert target.startswith("/"), line
        subprocess.run([*options, source, str(tmp_path / target.lstrip("/"))], cwd=REPO, check=True)
    root = tmp_path
    datasources = list((root / GRAFANA_DIR.lstrip("/") / "datasources").glob("*.yml"))
    providers = list((root / GRAFANA_DIR.lstrip("/") / "dashboards").glob("*.yml"))
    assert [p.read_bytes() for p in datasources] == [DATASOURCE.read_bytes()]
    assert [p.read_bytes() for p in providers] == [PROVIDER.read_bytes()]
    dashboards = list((root / provider()["options"]["path"].lstrip("/")).glob("*.json"))
    assert [p.read_bytes() for p in dashboards] == [DASHBOARD.read_bytes()]


def test_documented_docker_run_mounts_every_file_where_grafana_looks() -> None:
    (block,) = [b for b in shell_blocks(DOCS.read_text(encoding="utf-8")) if "docker run" in b]
    words = shlex.split(block)
    mounts = {}
    for flag, value in itertools.pairwise(words):
        if flag == "-v":
            source, target, mode = value.split(":")
            assert mode == "ro", value
            mounts[target] = REPO / source.removeprefix("$PWD/")
    assert mounts == {
        f"{GRAFANA_DIR}/datasources": DATASOURCE.parent,
        f"{GRAFANA_DIR}/dashboards": PROVIDER.parent,
        f"{provider()['options']['path']}/{DASHBOARD.name}": DASHBOARD,
    }
    image = words[-1]
    version = re.fullmatch(r"grafana/grafana:(\d+\.\d+)\.\d+", image)
    assert version, image
    assert _version(version[1]) >= _version(minimum_grafana()), "the example runs a new enough one"


# --- the minimum Grafana version ------------------------------------------------------------------


def minimum_grafana() -> str:
    return GRAFANA_BY_SCHEMA_VERSION[load_dashboard()["schemaVersion"]]


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def test_docs_state_the_minimum_grafana_version_of_the_schema_version() -> None:
    schema_version = load_dashboard()["schemaVersion"]
    assert schema_version in GRAFANA_BY_SCHEMA_VERSION, (
        f"schemaVersion {schema_version}: add the Grafana release that saves it and update the "
        "minimum version in docs/grafana.md and README.md"
    )
    stated = f"Grafana {minimum_grafana()} or newer"
    docs = DOCS.read_text(encoding="utf-8")
    assert stated in docs
    assert f"`schemaVersion` is {schema_version}" in docs
    assert stated in (REPO / "README.md").read_text(encoding="utf-8")


def test_schema_version_is_one_the_typechecked_schema_knows() -> None:
    """Not newer than the dashboard model of @grafana/schema, which test_dashboard checks
    the file against."""
    types = NODE_DIR / "node_modules" / "@grafana" / "schema" / "dist" / "esm" / "raw"
    files = list(types.glob("dashboard/x/types.gen.mjs"))
    if not files:
        missing("tests/node/node_modules has no @grafana/schema (npm ci in tests/node)")
    (latest,) = set(re.findall(r"schemaVersion: (\d+)", files[0].read_text(encoding="utf-8")))
    assert load_dashboard()["schemaVersion"] <= int(latest)
