"""Alert rules, their promtool unit tests, the example Prometheus config and the runbook.

promtool proves the rules parse and behave (prometheus/alerts_test.yml); the checks here keep the
rules, their tests, the runbook and the example config consistent with each other.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml
from tooling import REPO, require_tool

PROMETHEUS_DIR = REPO / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERTS_TEST = PROMETHEUS_DIR / "alerts_test.yml"
EXAMPLE_CONFIG = PROMETHEUS_DIR / "prometheus.example.yml"
RUNBOOK = REPO / "docs" / "runbook.md"
RUNBOOK_URL = (
    "https://github.com/retargeting-exporter/retargeting-exporter/blob/main/docs/runbook.md#"
)

# Alerts about the exporter process have no account label; every other alert is per account.
EXPORTER_ALERTS = {
    "RetargetingExporterDown",
    "RetargetingExporterAbsent",
    "RetargetingExporterConfigReloadFailed",
    "RetargetingExporterAccountFileInvalid",
    "RetargetingExporterInternalErrors",
    "RetargetingExporterFallingBehind",
}
PER_SOURCE_ALERTS = {"RetargetingCTRDrop", "RetargetingCVRDrop"}
REQUIRED_ALERTS = {
    "RetargetingAccountInactive",
    "RetargetingInvalidRestKey",
    "RetargetingCTRDrop",
    "RetargetingCVRDrop",
    "RetargetingAccountDown",
    "RetargetingDataStale",
    "RetargetingRateLimited",
    "RetargetingExporterDown",
    "RetargetingExporterAbsent",
}


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def rules() -> list[dict[str, Any]]:
    return [rule for group in load(ALERTS)["groups"] for rule in group["rules"]]


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool("promtool"), *args],
        cwd=PROMETHEUS_DIR,
        capture_output=True,
        text=True,
        timeout=240,
    )


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_promtool_accepts_the_rules() -> None:
    result = promtool("check", "rules", ALERTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = promtool("test", "rules", ALERTS_TEST.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_accepts_the_example_config() -> None:
    result = promtool("check", "config", EXAMPLE_CONFIG.name)
    assert result.returncode == 0, result.stdout + result.stderr
    # The config's rule_files are found and checked too.
    assert "1 rule files found" in result.stdout
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_one_group_with_every_required_alert() -> None:
    groups = load(ALERTS)["groups"]
    assert [g["name"] for g in groups] == ["retargeting-exporter"]
    names = [r["alert"] for r in rules()]
    assert len(names) == len(set(names)), "alert names must be unique"
    assert set(names) >= REQUIRED_ALERTS
    assert all(name.startswith("Retargeting") for name in names)


def test_every_alert_is_labelled_and_annotated() -> None:
    for rule in rules():
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        annotations = rule["annotations"]
        assert set(annotations) == {"summary", "description", "runbook_url"}, name
        assert annotations["runbook_url"] == RUNBOOK_URL + name.lower(), name
        text = annotations["summary"] + annotations["description"]
        if name not in EXPORTER_ALERTS:
            assert "$labels.account" in annotations["description"], f"{name}: name the account"
        if name in PER_SOURCE_ALERTS:
            assert "$labels.source_name" in text, f"{name}: name the source"
        assert re.fullmatch(r"\d+[mh]", rule["for"]), f"{name}: a `for` duration is required"


def test_runbook_has_a_section_per_alert() -> None:
    runbook = RUNBOOK.read_text(encoding="utf-8")
    headings = re.findall(r"^## (.+)$", runbook, flags=re.MULTILINE)
    anchors = {github_anchor(h) for h in headings}
    names = {r["alert"] for r in rules()}
    for name in names:
        assert name.lower() in anchors, f"docs/runbook.md has no section '## {name}'"
    stray = {h for h in headings if h.startswith("Retargeting")} - names
    assert not stray, f"runbook sections for alerts that do not exist: {stray}"
    assert "tuning" in anchors
    # Every section says what the alert means, how to check and how to fix.
    sections = re.split(r"^## ", runbook, flags=re.MULTILINE)
    for section in sections:
        title = section.split("\n", 1)[0]
        if title in names:
            for part in ("**Meaning.**", "**Check.**", "**Fix.**"):
                assert part in section, f"runbook section {title}: missing {part}"


def test_runbook_table_matches_the_rules() -> None:
    """The documented severity and `for` of each alert are the ones in alerts.yml."""
    runbook = RUNBOOK.read_text(encoding="utf-8")
    rows = re.findall(
        r"^\| \[(\w+)\]\(#(\w+)\) \| (\w+) \| [^|]+ \| (\w+) \|$", runbook, flags=re.MULTILINE
    )
    documented = {name: (anchor, severity, for_) for name, anchor, severity, for_ in rows}
    expected = {
        r["alert"]: (r["alert"].lower(), r["labels"]["severity"], r["for"]) for r in rules()
    }
    assert documented == expected


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    cases: dict[str, dict[str, int]] = {}
    for test in load(ALERTS_TEST)["tests"]:
        for case in test.get("alert_rule_test", []):
            kind = "fires" if case.get("exp_alerts") else "silent"
            counts = cases.setdefault(case["alertname"], {"fires": 0, "silent": 0})
            counts[kind] += 1
    for name in (r["alert"] for r in rules()):
        assert cases.get(name, {}).get("fires"), f"{name}: no case where it fires"
        assert cases.get(name, {}).get("silent"), f"{name}: no case where it must not fire"


def test_example_config_scrapes_the_exporter_with_the_rules() -> None:
    config = load(EXAMPLE_CONFIG)
    assert config["rule_files"] == ["alerts.yml"]
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "retargeting", "the exporter alerts select job=retargeting"
    assert job["static_configs"][0]["targets"] == ["localhost:9817"]
    interval = _seconds(config["global"]["scrape_interval"])
    timeout = _seconds(config["global"]["scrape_timeout"])
    assert timeout < interval
    # Figures change once per poll (minutes): scraping faster only adds samples.
    assert 30 <= interval <= 120
    assert _seconds(config["global"]["evaluation_interval"]) <= 60
    rule_exporter = {r["alert"]: r for r in rules()}
    assert 'job="retargeting"' in rule_exporter["RetargetingExporterDown"]["expr"]
    assert 'job="retargeting"' in rule_exporter["RetargetingExporterAbsent"]["expr"]


def _seconds(duration: str) -> int:
    value, unit = re.fullmatch(r"(\d+)([smh])", duration).groups()  # type: ignore[union-attr]
    return int(value) * {"s": 1, "m": 60, "h": 3600}[unit]


def test_documented_runbook_rewrite_of_the_rules_file(tmp_path: Path) -> None:
    """docs/alerting.md's command for the plain rules file, run as written (into tmp_path)."""
    docs = (REPO / "docs" / "alerting.md").read_text(encoding="utf-8")
    installed = "/etc/prometheus/rules/retargeting.yml"
    (command,) = [line.strip() for line in docs.splitlines() if line.strip().startswith("sed ")]
    assert command.endswith(f"prometheus/alerts.yml > {installed}")
    assert f"promtool check rules {installed}" in docs
    base = re.search(r"\|(https://[^|]+)#\|' ", command)[1]  # type: ignore[index]
    target = tmp_path / "retargeting.yml"
    subprocess.run(
        ["bash", "-c", command.replace(installed, str(target))], cwd=REPO, check=True, timeout=60
    )
    result = promtool("check", "rules", str(target))
    assert result.returncode == 0, result.stdout + result.stderr
    expected = load(ALERTS)
    for group in expected["groups"]:
        for rule in group["rules"]:
            rule["annotations"]["runbook_url"] = f"{base}#{rule['alert'].lower()}"
    assert load(target) == expected
    assert RUNBOOK_URL.split("#")[0] not in target.read_text(encoding="utf-8")
