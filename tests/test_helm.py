"""The Helm chart, rendered by the real Helm template engine (helm-python-sdk), no cluster.

Every ci/*-values.yaml scenario renders and lints strictly; the schema rejects bad values with
a message naming the key; core objects validate against the Kubernetes schemas and the operator
objects against the Prometheus Operator models; the PrometheusRule and the dashboard are the
repository's single sources; the pod is hardened like the image; the rendered exporter config is
accepted by the exporter itself; and the StatefulSet's pods cover every account exactly once.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_account_files import SecretVolume
from test_alerts import RUNBOOK_URL
from test_dockerfile import config_file_path, dockerfile, image_user
from tooling import REPO, missing

import exporter
from exporter.accountfiles import ConfigSource
from exporter.config import load_config
from exporter.sharding import parse_shard_index
from exporter.yamlcheck import ConfigError

try:
    import helm_python as helm
except ImportError:  # pragma: no cover - depends on the environment
    helm = None

CHART = REPO / "helm" / "retargeting-exporter"
SCENARIOS = sorted(p.name for p in (CHART / "ci").glob("*-values.yaml"))
ALERTS = REPO / "prometheus" / "alerts.yml"
DASHBOARD = REPO / "grafana" / "retargeting-exporter.json"
RELEASE, NAMESPACE = "rel", "monitoring"
OPERATOR_GROUP = "monitoring.coreos.com/"

Obj = dict[str, Any]


@pytest.fixture(autouse=True)
def _helm_sdk() -> None:
    if helm is None:
        missing("helm-python-sdk (import helm_python) is not installed")


def kube_version() -> str:
    """The newest Kubernetes version kubernetes-validate knows: a current one."""
    from kubernetes_validate import utils

    return utils.latest_version()


def scenario_values(name: str) -> Obj:
    data = yaml.safe_load((CHART / "ci" / name).read_text(encoding="utf-8"))
    return data or {}


def render_raw(values: Obj | None = None) -> dict[str, str]:
    with helm.Chart.load(CHART) as chart:
        return chart.render(values or {}, name=RELEASE, namespace=NAMESPACE)


@functools.cache
def _render_cached(values_json: str) -> tuple[Obj, ...]:
    manifests = render_raw(json.loads(values_json))
    objects: list[Obj] = []
    for path, text in sorted(manifests.items()):
        if not path.endswith(".yaml"):
            continue
        objects += [doc for doc in yaml.safe_load_all(text) if doc]
    return tuple(objects)


def render(values: Obj | None = None) -> list[Obj]:
    """Rendered objects (fresh copies, so tests may modify them)."""
    return json.loads(json.dumps(_render_cached(json.dumps(values or {}, sort_keys=True))))


def render_scenario(name: str) -> list[Obj]:
    return render(scenario_values(name))


def find(objects: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[Obj], kind: str, suffix: str = "") -> Obj:
    found = [o for o in find(objects, kind) if o["metadata"]["name"].endswith(suffix)]
    assert len(found) == 1, f"expected one {kind}*{suffix}, got {len(found)}"
    return found[0]


def workload(objects: list[Obj]) -> Obj:
    found = find(objects, "Deployment") + find(objects, "StatefulSet")
    assert len(found) == 1, [o["kind"] for o in found]
    return found[0]


def container(objects: list[Obj]) -> Obj:
    containers = workload(objects)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


# --- render and lint ---------------------------------------------------------------------------


def test_the_documented_scenarios_exist() -> None:
    assert set(SCENARIOS) >= {
        "account-files-values.yaml",
        "default-values.yaml",
        "existing-secret-values.yaml",
        "monitoring-values.yaml",
        "sharded-values.yaml",
    }


@pytest.mark.parametrize("scenario", [None, *SCENARIOS])
def test_renders_and_lints_strictly(scenario: str | None) -> None:
    values = scenario_values(scenario) if scenario else {}
    assert render(values), "nothing rendered"
    report = helm.lint(CHART, values, strict=True, kube_version=f"v{kube_version()}.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems and not report["errors"], report


def test_chart_metadata_follows_the_exporter() -> None:
    with helm.Chart.load(CHART) as chart:
        metadata = chart.metadata
    assert metadata["appVersion"] == exporter.__version__
    assert metadata["apiVersion"] == "v2"
    image = container(render_scenario("default-values.yaml"))["image"]
    assert image.endswith(f":{exporter.__version__}")


BAD_VALUES: list[tuple[Obj, str]] = [
    ({"imag": {"tag": "1"}}, "additional properties 'imag' not allowed"),
    ({"sharding": {"enabled": True, "shards": 0}}, "/sharding/shards"),
    ({"log": {"level": "verbose"}}, "/log/level"),
    ({"service": {"port": "metrics"}}, "/service/port"),
    ({"config": {"pollng": {"interval": "5m"}}}, "additional properties 'pollng' not allowed"),
    ({"config": {"polling": {"interval": "5 minutes"}}}, "/config/polling/interval"),
    ({"config": {"windows": ["24h", "tomorrow"]}}, "/config/windows/1"),
    ({"config": {"windows": [{"window": "30d", "refesh": "1h"}]}}, "/config/windows/0"),
    ({"config": {"windows": [{"window": "30d", "refresh": "an hour"}]}}, "/config/windows/0"),
    (
        {"config": {"accounts": [{"name": "a", "rest_key": "literal"}]}},
        "additional properties 'rest_key' not allowed",
    ),
    ({"config": {"accounts": [{"labels": {"team": "x"}}]}}, "missing property 'name'"),
    # The config is a ConfigMap: proxy credentials belong in a Secret (HTTPS_PROXY via extraEnv).
    ({"config": {"api": {"proxy_url": "http://u:pw@proxy.example:3128"}}}, "/config/api/proxy_url"),
    ({"config": {"api": {"proxy_url": "https://proxy.example:3128"}}}, "/config/api/proxy_url"),
    ({"image": {"digest": "latest"}}, "/image/digest"),
    ({"podSecurityContext": {"runAsUser": 0}}, "/podSecurityContext/runAsUser"),
    ({"prometheusRule": {"runbookBaseUrl": "wiki/runbook.md"}}, "/prometheusRule/runbookBaseUrl"),
]


@pytest.mark.parametrize(("values", "message"), BAD_VALUES, ids=[m for _, m in BAD_VALUES])
def test_schema_rejects_bad_values(values: Obj, message: str) -> None:
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError) as caught:
        chart.validate_schema(values)
    assert message in str(caught.value)
    with pytest.raises(helm.HelmError, match=re.escape(message)):
        render_raw(values)


ONE_ACCOUNT = {"config": {"accounts": [{"name": "shop-a"}]}}
BAD_KEYS: list[tuple[Obj, str]] = [
    (ONE_ACCOUNT, 'restKeys: no key for account "shop-a"; set restKeys.shop-a'),
    (
        {**ONE_ACCOUNT, "restKeys": {"shop-a": "k", "shop-b": "k"}},
        'restKeys.shop-b: there is no account "shop-b" in config.accounts',
    ),
    (
        {**ONE_ACCOUNT, "restKeys": {"shop-a": "k"}, "existingSecret": "keys"},
        "set either restKeys (the chart creates the Secret) or existingSecret, not both",
    ),
    (
        {"config": {"accounts": [{"name": "shop-a"}, {"name": "shop_a"}]}, "existingSecret": "k"},
        'accounts "shop-a" and "shop_a" both map to the variable RETARGETING_KEY_SHOP_A',
    ),
    (
        {"config": {"accounts": [{"name": "Shop A"}]}, "existingSecret": "k"},
        'account "Shop A" cannot name a Secret entry',
    ),
]


@pytest.mark.parametrize(("values", "message"), BAD_KEYS, ids=[m[:40] for _, m in BAD_KEYS])
def test_key_mistakes_fail_the_render_with_a_clear_message(values: Obj, message: str) -> None:
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)):
        render_raw(values)


def test_every_value_is_commented_and_in_the_schema() -> None:
    text = (CHART / "values.yaml").read_text(encoding="utf-8")
    lines = text.splitlines()
    list_indent: int | None = None
    for number, line in enumerate(lines):
        match = re.match(r"^(\s*)(- )?([A-Za-z0-9_.-]+):", line)
        if not match:
            continue
        indent = len(match.group(1))
        if list_indent is not None and indent > list_indent:
            continue  # inside a default list of objects: not a value of its own
        list_indent = None
        if match.group(2):
            list_indent = indent
            continue
        previous = lines[number - 1].strip() if number else ""
        assert previous.startswith("#"), f"values.yaml:{number + 1}: no comment above {line!r}"

    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    assert schema["additionalProperties"] is False

    def walk(value: Any, node: Obj, path: str) -> None:
        node = resolve(schema, node)
        assert "description" in node or path == "", f"{path}: no description in the schema"
        if isinstance(value, dict) and "properties" in node:
            for key, child in value.items():
                assert key in node["properties"], f"{path}.{key} is not in values.schema.json"
                walk(child, node["properties"][key], f"{path}.{key}")

    walk(yaml.safe_load(text), schema, "")


def resolve(schema: Obj, node: Obj) -> Obj:
    ref = node.get("$ref")
    if not ref:
        return node
    target: Any = schema
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return {**target, **{k: v for k, v in node.items() if k != "$ref"}}


def test_config_schema_knows_exactly_the_loaders_keys() -> None:
    """values.schema.json checks config keys at install time; keep it in step with config.py."""
    from exporter import config as loader

    config = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))["properties"][
        "config"
    ]
    assert set(config["properties"]) == loader._TOP_KEYS
    api = config["properties"]["api"]["properties"]
    assert set(api) == loader._API_KEYS
    assert set(api["retries"]["properties"]) == loader._RETRY_KEYS
    assert set(config["properties"]["polling"]["properties"]) == loader._POLLING_KEYS
    account = config["properties"]["accounts"]["items"]["properties"]
    # A literal rest_key would sit in a ConfigMap: the chart accepts keys only from Secrets;
    # rest_key_credential names a systemd credential, which a pod does not have.
    assert set(account) == loader._ACCOUNT_KEYS - {"rest_key", "rest_key_credential"}


# --- Kubernetes and Prometheus Operator schemas ------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_core_objects_validate_strictly(scenario: str) -> None:
    from kubernetes_validate import utils

    version = kube_version()
    objects = [
        o for o in render_scenario(scenario) if not o["apiVersion"].startswith(OPERATOR_GROUP)
    ]
    assert objects
    for obj in objects:
        try:
            utils.validate(obj, version, strict=True)
        except utils.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {where}: {exc.message}")


def test_strict_validation_catches_a_typo() -> None:
    """The validation above can fail: a misspelt field is an error in strict mode."""
    from kubernetes_validate import utils

    deployment = workload(render_scenario("default-values.yaml"))
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolice"] = "Always"
    with pytest.raises(utils.ValidationError):
        utils.validate(deployment, kube_version(), strict=True)


def operator_model(kind: str) -> Any:
    from cloudcoil.models.prometheus_operator import v1

    return getattr(v1, kind)


def assert_valid_operator_object(obj: Obj) -> None:
    """Validate with the Prometheus Operator models; fields the model drops were unknown."""
    model = operator_model(obj["kind"]).model_validate(obj)
    dumped = model.model_dump(by_alias=True, exclude_unset=True, mode="json")
    assert dumped == obj, "fields unknown to the Prometheus Operator CRD were dropped"


@pytest.mark.parametrize("scenario", ["monitoring-values.yaml", "sharded-values.yaml"])
def test_operator_objects_validate(scenario: str) -> None:
    objects = [o for o in render_scenario(scenario) if o["apiVersion"].startswith(OPERATOR_GROUP)]
    assert objects
    for obj in objects:
        assert_valid_operator_object(obj)


def test_operator_validation_catches_a_typo() -> None:
    monitor = one(render_scenario("monitoring-values.yaml"), "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["intervall"] = "1m"
    with pytest.raises(AssertionError, match="unknown"):
        assert_valid_operator_object(monitor)
    monitor = one(render_scenario("monitoring-values.yaml"), "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["honorLabels"] = "perhaps"
    with pytest.raises(ValueError):
        assert_valid_operator_object(monitor)


# --- single sources ----------------------------------------------------------------------------


def test_prometheus_rule_is_exactly_the_alert_rules_file() -> None:
    rule = one(render_scenario("monitoring-values.yaml"), "PrometheusRule")
    expected = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    assert rule["spec"] == {"groups": expected["groups"]}
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"


@pytest.mark.parametrize("trailing", ["", "#"])
def test_runbook_links_follow_the_configured_base(trailing: str) -> None:
    base = "https://wiki.example.com/ops/retargeting"
    values = scenario_values("monitoring-values.yaml")
    values["prometheusRule"]["runbookBaseUrl"] = base + trailing
    rule = one(render(values), "PrometheusRule")
    expected = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    for group in expected:
        for alert in group["rules"]:
            alert["annotations"]["runbook_url"] = f"{base}#{alert['alert'].lower()}"
    assert rule["spec"] == {"groups": expected}


def test_default_runbook_base_is_this_repositorys_runbook() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    assert values["prometheusRule"]["runbookBaseUrl"] + "#" == RUNBOOK_URL
    assert RUNBOOK_URL.endswith("/docs/runbook.md#")


def test_dashboard_configmap_is_exactly_the_dashboard_file() -> None:
    configmap = one(render_scenario("monitoring-values.yaml"), "ConfigMap", "-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    (content,) = configmap["data"].values()
    source = DASHBOARD.read_text(encoding="utf-8")
    assert content == source.rstrip("\n")
    assert json.loads(content) == json.loads(source)


@pytest.mark.parametrize(
    ("link", "source"),
    [("files/alerts.yml", ALERTS), ("files/retargeting-exporter.json", DASHBOARD)],
)
def test_chart_files_are_links_to_the_single_sources(link: str, source: Path) -> None:
    path = CHART / link
    assert path.is_symlink(), f"{link} must link to {source.relative_to(REPO)}, not copy it"
    assert path.resolve() == source.resolve()


def test_packaged_chart_carries_the_linked_contents(tmp_path: Path) -> None:
    """`helm package` stores the links' contents, so the published chart is self-contained."""
    archive = helm.package(CHART, destination=tmp_path)
    with tarfile.open(archive) as tar:
        for link, source in [
            ("files/alerts.yml", ALERTS),
            ("files/retargeting-exporter.json", DASHBOARD),
        ]:
            member = tar.getmember(f"retargeting-exporter/{link}")
            assert member.isfile()
            extracted = tar.extractfile(member)
            assert extracted is not None
            assert extracted.read() == source.read_bytes()


def test_monitoring_objects_are_opt_in() -> None:
    kinds = {o["kind"] for o in render_scenario("default-values.yaml")}
    assert not kinds & {"ServiceMonitor", "PrometheusRule", "NetworkPolicy", "PodDisruptionBudget"}
    assert len(find(render_scenario("default-values.yaml"), "ConfigMap")) == 1


# --- the pod -----------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_pod_is_hardened_like_the_image(scenario: str) -> None:
    objects = render_scenario(scenario)
    pod = workload(objects)["spec"]["template"]["spec"]
    uid, gid = image_user()
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == uid
    assert pod["securityContext"]["runAsGroup"] == gid
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (main,) = pod["containers"]
    security = main["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == uid
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "privileged" not in security
    assert main["resources"]["requests"]["cpu"] and main["resources"]["requests"]["memory"]
    assert main["resources"]["limits"]["memory"]
    account = one(objects, "ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == account["metadata"]["name"]


def test_probes_ports_and_config_mount_match_the_image() -> None:
    objects = render_scenario("default-values.yaml")
    main = container(objects)
    expose = int(dockerfile().final.one("EXPOSE"))
    assert main["ports"] == [{"name": "metrics", "containerPort": expose, "protocol": "TCP"}]
    assert f"--web.listen-address=:{expose}" in main["args"]
    assert main["livenessProbe"]["httpGet"] == {"path": "/-/healthy", "port": "metrics"}
    assert main["readinessProbe"]["httpGet"] == {"path": "/-/ready", "port": "metrics"}
    # No command: the image's ENTRYPOINT runs, reading the config where the chart mounts it.
    assert "command" not in main
    mount = next(m for m in main["volumeMounts"] if m["name"] == "config")
    assert mount["readOnly"] is True
    configmap = one(objects, "ConfigMap")
    (key,) = configmap["data"]
    assert f"{mount['mountPath']}/{key}" == config_file_path()
    service = one(objects, "Service")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9817, "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"] == workload(objects)["spec"]["selector"]["matchLabels"]


def checksums(values: Obj) -> dict[str, str]:
    annotations = workload(render(values))["spec"]["template"]["metadata"]["annotations"]
    return {k: v for k, v in annotations.items() if k.startswith("checksum/")}


def test_config_and_secret_changes_roll_the_pods() -> None:
    base = scenario_values("default-values.yaml")
    before = checksums(base)
    assert set(before) == {"checksum/config", "checksum/secret"}
    new_config = json.loads(json.dumps(base))
    new_config["config"]["polling"] = {"interval": "10m"}
    changed = checksums(new_config)
    assert changed["checksum/config"] != before["checksum/config"]
    assert changed["checksum/secret"] == before["checksum/secret"]
    new_key = json.loads(json.dumps(base))
    new_key["restKeys"]["shop-a"] = "rotated"
    changed = checksums(new_key)
    assert changed["checksum/secret"] != before["checksum/secret"]
    assert changed["checksum/config"] == before["checksum/config"]


def test_keys_reach_the_pod_from_the_secret_by_account_name() -> None:
    values = scenario_values("default-values.yaml")
    objects = render(values)
    secret = one(objects, "Secret")
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert decoded == {k: str(v) for k, v in values["restKeys"].items()}
    env = {e["name"]: e for e in container(objects).get("env", [])}
    assert env["RETARGETING_KEY_SHOP_A"]["valueFrom"]["secretKeyRef"] == {
        "name": secret["metadata"]["name"],
        "key": "shop-a",
    }
    assert env["RETARGETING_KEY_SHOP_B_EXAMPLE"]["valueFrom"]["secretKeyRef"]["key"] == (
        "shop_b.example"
    )
    # The key itself is nowhere but in the Secret.
    for obj in objects:
        if obj["kind"] != "Secret":
            assert "ci-key-shop-a" not in json.dumps(obj)


def test_existing_secret_is_used_and_none_is_created() -> None:
    objects = render_scenario("existing-secret-values.yaml")
    assert find(objects, "Secret") == []
    refs = {
        e["valueFrom"]["secretKeyRef"]["name"]
        for e in container(objects)["env"]
        if e["name"].startswith("RETARGETING_KEY_")
    }
    assert refs == {"retargeting-keys"}


def test_account_files_come_from_a_mounted_secret_that_rolls_no_pod(tmp_path: Path) -> None:
    """The Secret is mounted as a folder the kubelet updates in place (the ``..data`` swap, built
    here for real); its account files are in the config, and no checksum ties the pods to it."""
    values = scenario_values("account-files-values.yaml")
    values["accountFiles"]["mountPath"] = str(tmp_path / "shops")
    objects = render(values)
    pod = workload(objects)["spec"]["template"]
    assert set(pod["metadata"]["annotations"]) == {"checksum/config", "checksum/secret"}
    assert find(objects, "Secret") == []  # the chart makes none: the user's Secret is the source
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == "account-files"]
    assert volume["secret"] == {"secretName": "retargeting-shops"}
    (mount,) = [m for m in container(objects)["volumeMounts"] if m["name"] == "account-files"]
    assert mount == {
        "name": "account-files",
        "mountPath": str(tmp_path / "shops"),
        "readOnly": True,
    }

    volume_dir = SecretVolume(tmp_path / "shops")
    shop = {"name": "shop-toys", "rest_key_file": "shop-toys.key", "currency": "HUF"}
    volume_dir.publish({"shops.yaml": yaml.safe_dump([shop]), "shop-toys.key": "key-toys"})
    source = ConfigSource(write_config(objects, tmp_path), env={})
    assert {a.name: a.rest_key.reveal() for a in source.load().accounts} == {
        "shop-toys": "key-toys"
    }
    garden = {"name": "shop-garden", "rest_key_file": "shop-garden.key"}
    volume_dir.publish(
        {
            "shops.yaml": yaml.safe_dump([shop, garden]),
            "shop-toys.key": "key-toys",
            "shop-garden.key": "key-garden",
        }
    )  # kubectl apply of the updated Secret, as the pod sees it
    assert source.changed()
    assert [a.name for a in source.load().accounts] == ["shop-toys", "shop-garden"]


# --- the exporter accepts what the chart renders -----------------------------------------------


def pod_environment(objects: list[Obj], pod_name: str) -> dict[str, str]:
    """The container's environment as the kubelet would set it, with stand-ins for Secrets the
    chart does not create."""
    secrets = {
        s["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in s["data"].items()}
        for s in find(objects, "Secret")
    }
    env: dict[str, str] = {}
    for var in container(objects).get("env", []):
        source = var.get("valueFrom", {})
        if "value" in var:
            env[var["name"]] = var["value"]
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            env[var["name"]] = secrets.get(ref["name"], {}).get(ref["key"], f"key-of-{ref['key']}")
        elif source.get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[var["name"]] = pod_name
        else:
            raise AssertionError(f"no stand-in for {var}")
    return env


def write_config(objects: list[Obj], tmp_path: Path) -> Path:
    (data,) = [c["data"] for c in find(objects, "ConfigMap") if "config.yaml" in c["data"]]
    path = tmp_path / "config.yaml"
    path.write_text(data["config.yaml"], encoding="utf-8")
    return path


def check_config(path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`retargeting-exporter --config.check` with exactly the pod's environment."""
    base = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG"}}
    return subprocess.run(
        [sys.executable, "-m", "exporter", "--config.check", f"--config.file={path}"],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_rendered_config_is_accepted_by_the_exporter(scenario: str, tmp_path: Path) -> None:
    objects = render_scenario(scenario)
    path = write_config(objects, tmp_path)
    env = pod_environment(objects, "pod-0")
    config = load_config(path, env=env)
    expected = [a["name"] for a in scenario_values(scenario)["config"]["accounts"]]
    assert [a.name for a in config.accounts] == expected
    result = check_config(path, env)
    assert result.returncode == 0, result.stdout + result.stderr
    for secret in env.values():
        if secret.startswith(("ci-key", "key-of-")):
            assert secret not in result.stdout + result.stderr


def test_rendered_config_without_the_secret_is_rejected(tmp_path: Path) -> None:
    """The check above can fail: without the Secret's variables the exporter names each one."""
    path = write_config(render_scenario("default-values.yaml"), tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert caught.value.problems == [
        "accounts[0] (shop-a).rest_key_env: environment variable RETARGETING_KEY_SHOP_A is not set",
        "accounts[1] (shop_b.example).rest_key_env: "
        "environment variable RETARGETING_KEY_SHOP_B_EXAMPLE is not set",
    ]
    assert check_config(path, {}).returncode == 2


def test_example_config_through_the_chart_is_accepted(tmp_path: Path) -> None:
    """config.example.yaml as values.config: the chart's key scheme replaces its key sources."""
    example = yaml.safe_load((REPO / "config.example.yaml").read_text(encoding="utf-8"))
    for account in example["accounts"]:
        for field in ("rest_key_env", "rest_key_file", "rest_key"):
            account.pop(field, None)
    keys = {a["name"]: f"ci-key-{i}" for i, a in enumerate(example["accounts"])}
    objects = render({"config": example, "restKeys": keys})
    path = write_config(objects, tmp_path)
    env = pod_environment(objects, "pod-0")
    config = load_config(path, env=env)
    assert {a.name: a.rest_key.reveal() for a in config.accounts} == keys
    assert check_config(path, env).returncode == 0


# --- sharding ----------------------------------------------------------------------------------


def test_sharded_release_is_a_statefulset_behind_a_headless_service() -> None:
    objects = render_scenario("sharded-values.yaml")
    assert find(objects, "Deployment") == []
    statefulset = one(objects, "StatefulSet")
    service = one(objects, "Service")
    assert (
        statefulset["spec"]["replicas"]
        == scenario_values("sharded-values.yaml")["sharding"]["shards"]
    )
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None"
    # The ServiceMonitor selects that Service, so Prometheus scrapes every shard's pod.
    monitor = one(objects, "ServiceMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"


def test_service_monitor_sets_the_job_the_alerts_expect() -> None:
    monitor = one(render_scenario("monitoring-values.yaml"), "ServiceMonitor")
    relabel = monitor["spec"]["endpoints"][0]["relabelings"][0]
    assert relabel == {"action": "replace", "targetLabel": "job", "replacement": "retargeting"}
    assert 'job="retargeting"' in ALERTS.read_text(encoding="utf-8")


def test_each_statefulset_pod_polls_a_distinct_share(tmp_path: Path) -> None:
    """Each pod derives a distinct index from its name; together they poll every account once."""
    objects = render_scenario("sharded-values.yaml")
    statefulset = one(objects, "StatefulSet")
    replicas = statefulset["spec"]["replicas"]
    path = write_config(objects, tmp_path)
    accounts = [a["name"] for a in scenario_values("sharded-values.yaml")["config"]["accounts"]]
    polled: dict[str, list[int]] = {name: [] for name in accounts}
    indices = []
    for ordinal in range(replicas):
        pod_name = f"{statefulset['metadata']['name']}-{ordinal}"
        env = pod_environment(objects, pod_name)
        assert env["RETARGETING_EXPORTER_SHARD_COUNT"] == str(replicas)
        indices.append(parse_shard_index(env["RETARGETING_EXPORTER_SHARD_INDEX"]))
        result = check_config(path, env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"in shard {indices[-1]}/{replicas}" in result.stdout
        for name in accounts:
            line = next(li for li in result.stdout.splitlines() if li.startswith(f"  - {name}:"))
            if "(other shard)" not in line:
                polled[name].append(ordinal)
    assert sorted(indices) == list(range(replicas))
    assert all(len(pods) == 1 for pods in polled.values()), polled
    assert len({pods[0] for pods in polled.values()}) > 1, "every account on one pod"
