"""The example Alertmanager configuration: valid for amtool, routing every alert of
prometheus/alerts.yml by its severity, and inhibiting on labels the alerts really carry.

The labels of each alert are taken from prometheus/alerts_test.yml, where promtool proves them
exactly; tests/test_e2e_alertmanager.py runs the configuration in a real Alertmanager.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

import pytest
from test_alerts import ALERTS_TEST, load, rules
from tooling import REPO, require_tool

EXAMPLE = REPO / "deploy" / "alertmanager" / "alertmanager.example.yml"

RECEIVER_BY_SEVERITY = {"critical": "retargeting-pager", "warning": "retargeting-mail"}
# What an inactive account or a rejected key silences for that account (issue #22).
ACCOUNT_CONSEQUENCES = {
    "RetargetingCTRDrop",
    "RetargetingCVRDrop",
    "RetargetingAccountDown",
    "RetargetingDataStale",
}
ACCOUNT_CAUSES = {"RetargetingAccountInactive", "RetargetingInvalidRestKey"}


def alertmanager_binary() -> str:
    """Upstream calls the server `alertmanager`; Debian's package `prometheus-alertmanager`."""
    debian = shutil.which("prometheus-alertmanager")
    return require_tool("alertmanager", *([debian] if debian else []))


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool("amtool"), *args], capture_output=True, text=True, timeout=60
    )


def route(receiver: str, *labels: str) -> subprocess.CompletedProcess[str]:
    """`amtool config routes test` of the example: exit 0 only if ``receiver`` gets the alert."""
    return amtool(
        "config", "routes", "test", f"--config.file={EXAMPLE}", f"--verify.receivers={receiver}",
        *labels,
    )  # fmt: skip


def example() -> dict[str, Any]:
    return load(EXAMPLE)  # type: ignore[no-any-return]


def fired_labels() -> dict[str, list[dict[str, str]]]:
    """Every label set promtool proves an alert fires with, by alert name."""
    found: dict[str, list[dict[str, str]]] = {}
    for test in load(ALERTS_TEST)["tests"]:
        for case in test.get("alert_rule_test", []):
            for alert in case.get("exp_alerts") or []:
                labels = {"alertname": case["alertname"], **alert["exp_labels"]}
                found.setdefault(case["alertname"], []).append(labels)
    return found


_MATCHER = re.compile(r'^\s*(\w+)\s*(=~|!~|!=|=)\s*"((?:\\.|[^"\\])*)"\s*$')


def matches(matcher: str, labels: dict[str, str]) -> bool:
    """One Alertmanager matcher (`name="v"`, `=~`, `!=`, `!~`; regexes are anchored)."""
    parsed = _MATCHER.match(matcher)
    assert parsed, f"unexpected matcher syntax: {matcher!r}"
    name, op, value = parsed.groups()
    actual = labels.get(name, "")
    if op in {"=", "!="}:
        return (actual == value) == (op == "=")
    return bool(re.fullmatch(value, actual)) == (op == "=~")


def selected(matchers: list[str]) -> dict[str, list[dict[str, str]]]:
    """The alerts (with their proven label sets) that every matcher of a list selects."""
    chosen = {}
    for name, label_sets in fired_labels().items():
        hits = [labels for labels in label_sets if all(matches(m, labels) for m in matchers)]
        if hits:
            chosen[name] = hits
    return chosen


# --- amtool -------------------------------------------------------------------------------------


def test_amtool_accepts_the_example() -> None:
    result = amtool("check-config", str(EXAMPLE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    assert f"{len(example()['inhibit_rules'])} inhibit rules" in result.stdout


@pytest.mark.parametrize("rule", rules(), ids=lambda r: r["alert"])
def test_every_alert_is_routed_by_its_severity(rule: dict[str, Any]) -> None:
    receiver = RECEIVER_BY_SEVERITY[rule["labels"]["severity"]]
    result = route(
        receiver,
        f"alertname={rule['alert']}",
        f"severity={rule['labels']['severity']}",
        "job=retargeting",
        "account=shop-a",
    )
    assert result.returncode == 0, f"{rule['alert']}: {result.stdout}{result.stderr}"
    assert result.stdout.strip() == receiver


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        # Another exporter's alerts keep the default route.
        (["alertname=NodeDown", "severity=critical"], "ops-mail"),
        # A Retargeting alert of unknown severity still reaches the Retargeting mailbox.
        (["alertname=RetargetingSomethingNew"], "retargeting-mail"),
        (["alertname=RetargetingSomethingNew", "severity=info"], "retargeting-mail"),
    ],
)
def test_other_alerts_take_the_fallback_routes(labels: list[str], receiver: str) -> None:
    result = route(receiver, *labels)
    assert result.returncode == 0, result.stdout + result.stderr


def test_routes_test_can_fail() -> None:
    """The checks above are not vacuous: a wrong expectation makes amtool exit non-zero."""
    result = route("retargeting-mail", "alertname=RetargetingInvalidRestKey", "severity=critical")
    assert result.returncode != 0


def test_retargeting_alerts_are_grouped_by_alert_and_account() -> None:
    (retargeting,) = example()["route"]["routes"]
    assert retargeting["group_by"] == ["alertname", "account"]
    assert all(name.startswith("Retargeting") for name in fired_labels())


# --- inhibition ---------------------------------------------------------------------------------


def inhibit_rule(source: str) -> dict[str, Any]:
    """The inhibit rule whose source matchers select alert ``source``."""
    found = [
        rule for rule in example()["inhibit_rules"] if source in selected(rule["source_matchers"])
    ]
    assert len(found) == 1, f"{source}: {len(found)} inhibit rules have it as source"
    return found[0]


def test_inactive_account_or_rejected_key_silences_that_accounts_consequences() -> None:
    for cause in ACCOUNT_CAUSES:
        rule = inhibit_rule(cause)
        assert set(selected(rule["source_matchers"])) == ACCOUNT_CAUSES
        assert set(selected(rule["target_matchers"])) == ACCOUNT_CONSEQUENCES
        assert "account" in rule["equal"], "only the same account's alerts"


def test_exporter_down_or_absent_silences_every_per_account_alert() -> None:
    per_account = {
        name
        for name, label_sets in fired_labels().items()
        if all("account" in labels for labels in label_sets)
    }
    assert per_account >= ACCOUNT_CAUSES | ACCOUNT_CONSEQUENCES
    for source in ("RetargetingExporterDown", "RetargetingExporterAbsent"):
        rule = inhibit_rule(source)
        assert set(selected(rule["source_matchers"])) == {source}
        assert set(selected(rule["target_matchers"])) == per_account, source
        assert "job" in rule["equal"], "only the alerts of that job"


def test_equal_labels_exist_on_source_and_target_alerts() -> None:
    """Alertmanager treats a label missing on both sides as equal: an `equal` label absent from
    the alerts would silence every account instead of the one concerned."""
    proven = fired_labels()
    assert set(proven) == {rule["alert"] for rule in rules()}, "a firing case per alert"
    for rule in example()["inhibit_rules"]:
        sides = {**selected(rule["source_matchers"]), **selected(rule["target_matchers"])}
        for name in sides:
            for labels in proven[name]:
                missing_labels = [label for label in rule["equal"] if not labels.get(label)]
                assert not missing_labels, f"{name} fires without {missing_labels}: {labels}"
