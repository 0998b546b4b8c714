"""End to end, up to a person: the exporter in --demo mode, a real Prometheus evaluating
prometheus/alerts.yml, a real Alertmanager running deploy/alertmanager/alertmanager.example.yml,
and a webhook receiver of the test standing in for the pager and the mailbox.

Only timings are changed, programmatically: the rules' `for` durations, the routes' group
waits and intervals, and each receiver becomes a webhook to the test. Routing, grouping and
inhibition are the example's own.

The demo's inactive account and revoked key drive real alerts. The alerts they must silence
(CTR and CVR drops need seven days of history; the rules already keep down and stale alerts off
these accounts) are posted to Alertmanager by the test, the way Prometheus posts alerts, with
the labels the rules give them; the same alerts for a healthy account are the control that must
arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import re
import signal
import subprocess
import threading
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from test_alertmanager import (
    ACCOUNT_CONSEQUENCES,
    EXAMPLE,
    RECEIVER_BY_SEVERITY,
    alertmanager_binary,
)
from test_alerts import ALERTS, PER_SOURCE_ALERTS, load, rules
from test_e2e_prometheus import (
    Stack,
    Started,
    demo_exporter,
    http_get,
    prometheus_config,
    prometheus_stack,
    started,
    wait_until,
)
from tooling import free_port, require_tool

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

RULES = {rule["alert"]: rule for rule in rules()}
# The alerts the demo drives, and who gets them: (alertname, account) -> receiver.
EXPECTED = {
    ("RetargetingAccountInactive", "demo-inactive"): "retargeting-mail",
    ("RetargetingInvalidRestKey", "demo-revoked"): "retargeting-pager",
}
HEALTHY = "demo-fashion"
# Changed for the test only: each `for` is as many seconds as it has minutes, so the alerts keep
# their order (a rejected key is recognised long before its account would count as down).
FOR_SCALE = 60
SHORT_ROUTE_TIMING = {"group_wait": "1s", "group_interval": "1s"}
# Generous: a busy 2-core machine may take a while to start three programs.
WAIT = 90.0


# --- the webhook receiver -----------------------------------------------------------------------


class Webhook:
    """Every notification Alertmanager posts, with the receiver named by the URL path."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._notifications: list[tuple[str, dict[str, Any]]] = []

    async def receive(self, request: web.Request) -> web.Response:
        body = await request.json()
        with self._lock:
            self._notifications.append((request.match_info["receiver"], body))
        return web.Response(text="ok")

    def alerts(self, status: str = "firing") -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
        """(receiver, notification, alert) of every alert received with ``status``."""
        with self._lock:
            notifications = list(self._notifications)
        return [
            (receiver, body, alert)
            for receiver, body in notifications
            for alert in body["alerts"]
            if alert["status"] == status
        ]

    def received(self, status: str = "firing") -> set[tuple[str, str]]:
        return {
            (a["labels"]["alertname"], a["labels"].get("account", ""))
            for _, _, a in self.alerts(status)
        }


@contextlib.contextmanager
def webhook_server() -> Iterator[tuple[str, Webhook]]:
    """An aiohttp server on a free loopback port, in its own thread and event loop."""
    hook = Webhook()
    app = web.Application()
    app.router.add_post("/{receiver}", hook.receive)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", 0).start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}", hook
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.run_until_complete(runner.cleanup())
        loop.close()


# --- configurations derived from the repository's files ----------------------------------------


def short_for(duration: str) -> str:
    """A rule's `for` divided by FOR_SCALE, as a Prometheus duration (`30m` -> `30s`)."""
    value, unit = re.fullmatch(r"(\d+)([mh])", duration).groups()  # type: ignore[union-attr]
    return f"{int(value) * {'m': 60, 'h': 3600}[unit] // FOR_SCALE}s"


def short_rules() -> dict[str, Any]:
    """prometheus/alerts.yml with every `for` shortened: what fires, and how, is unchanged."""
    groups = load(ALERTS)
    for group in groups["groups"]:
        for rule in group["rules"]:
            rule["for"] = short_for(rule["for"])
    return groups  # type: ignore[no-any-return]


def derived_alertmanager_config(webhook_url: str) -> dict[str, Any]:
    """The example with each receiver a webhook to the test and short group timings."""
    config = load(EXAMPLE)
    config.pop("global")  # only the mail receivers need it
    config["receivers"] = [
        {
            "name": receiver["name"],
            "webhook_configs": [
                {"url": f"{webhook_url}/{receiver['name']}", "send_resolved": True}
            ],
        }
        for receiver in config["receivers"]
    ]

    def shorten(route: dict[str, Any], top: bool) -> None:
        for key, value in SHORT_ROUTE_TIMING.items():
            if top or key in route:
                route[key] = value
        for child in route.get("routes", []):
            shorten(child, top=False)

    shorten(config["route"], top=True)
    return config  # type: ignore[no-any-return]


# --- the stack ----------------------------------------------------------------------------------


@dataclass
class AlertStack:
    tmp: Path
    prometheus: Stack
    alertmanager: Started
    alertmanager_url: str
    webhook: Webhook
    # Every alert the test expected to be inhibited, over the whole run.
    inhibited: set[tuple[str, str]] = field(default_factory=set)

    @property
    def programs(self) -> list[Started]:
        return [self.prometheus.prometheus, self.alertmanager]

    def wait(self, check: Any, what: str) -> Any:
        return wait_until(check, what, WAIT, *self.programs)

    def am_alerts(self) -> list[dict[str, Any]]:
        status, body = http_get(f"{self.alertmanager_url}/api/v2/alerts")
        assert status == 200, body
        return json.loads(body)  # type: ignore[no-any-return]

    def post(self, alerts: list[dict[str, str]], *, firing: bool = True) -> None:
        """Post alerts to Alertmanager's API as Prometheus does: firing for ten minutes, or
        resolved now."""
        now = dt.datetime.now(dt.UTC)
        ends = now + dt.timedelta(minutes=10) if firing else now
        body = [
            {
                "labels": labels,
                "annotations": {"summary": f"posted by the test for {labels.get('account')}"},
                "startsAt": now.isoformat(),
                "endsAt": ends.isoformat(),
            }
            for labels in alerts
        ]
        request = urllib.request.Request(
            f"{self.alertmanager_url}/api/v2/alerts",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200


@pytest.fixture(scope="module")
def alert_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AlertStack]:
    require_tool("prometheus")
    amtool = require_tool("amtool")
    binary = alertmanager_binary()
    tmp = tmp_path_factory.mktemp("e2e-alertmanager")
    with webhook_server() as (webhook_url, webhook):
        am_config = tmp / "alertmanager.yml"
        am_config.write_text(yaml.safe_dump(derived_alertmanager_config(webhook_url)), "utf-8")
        rules_file = tmp / "alerts.yml"
        rules_file.write_text(yaml.safe_dump(short_rules()), encoding="utf-8")
        port = free_port()
        args = [
            binary,
            f"--config.file={am_config}",
            f"--storage.path={tmp / 'alertmanager'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ]
        with started(args, tmp / "alertmanager.log") as alertmanager:
            am_url = f"http://127.0.0.1:{port}"
            wait_until(
                lambda: http_get(f"{am_url}/-/ready")[0] == 200, "Alertmanager ready", WAIT,
                alertmanager,
            )  # fmt: skip
            # The derived configuration is still one amtool accepts.
            check = subprocess.run(
                [amtool, "check-config", str(am_config)], capture_output=True, text=True, timeout=60
            )
            assert check.returncode == 0, check.stdout + check.stderr
            with demo_exporter(tmp) as (exporter_url, exporter):
                config = prometheus_config(exporter_url.removeprefix("http://"))
                config["rule_files"] = [str(rules_file)]
                config["alerting"] = {
                    "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}]
                }
                with prometheus_stack(tmp, exporter_url, exporter, config) as stack:
                    yield AlertStack(tmp, stack, alertmanager, am_url, webhook)


def consequences(account: str, job: str, instance: str) -> list[dict[str, str]]:
    """An account's CTR, CVR, down and stale alerts, labelled as the rules label them."""
    alerts = []
    for name in sorted(ACCOUNT_CONSEQUENCES):
        labels = {"alertname": name, "job": job, "instance": instance, "account": account}
        labels |= RULES[name]["labels"]
        if name in PER_SOURCE_ALERTS:
            labels |= {"source_name": "Newsletter", "window": "24h"}
        alerts.append(labels)
    return alerts


def key(labels: dict[str, str]) -> tuple[str, str]:
    return labels["alertname"], labels.get("account", "")


def assert_posted_alerts_are_inhibited(
    stack: AlertStack, inhibited: list[dict[str, str]], controls: list[dict[str, str]]
) -> None:
    """Post both lists; the controls arrive, the others are suppressed and never arrive."""
    stack.post(inhibited)
    stack.post(controls)
    control_keys = {key(labels) for labels in controls}
    stack.wait(lambda: control_keys <= stack.webhook.received(), f"the controls {control_keys}")
    state = {key(a["labels"]): a["status"] for a in stack.am_alerts()}
    for labels in inhibited:
        assert state[key(labels)]["state"] == "suppressed", (labels, state[key(labels)])
        assert state[key(labels)]["inhibitedBy"], labels
    for labels in controls:
        assert state[key(labels)]["state"] == "active", labels
    receivers = {key(a["labels"]): r for r, _, a in stack.webhook.alerts()}
    for labels in controls:
        assert receivers[key(labels)] == RECEIVER_BY_SEVERITY[labels["severity"]], labels
    # A later group's notification proves the earlier ones had their turn.
    marker = [dict(controls[0], alertname="RetargetingMarker", account=uuid.uuid4().hex)]
    stack.post(marker)
    stack.wait(lambda: key(marker[0]) in stack.webhook.received(), "the marker alert")
    stack.inhibited |= {key(labels) for labels in inhibited}
    arrived = stack.webhook.received() & stack.inhibited
    assert not arrived, f"inhibited alerts reached the receiver: {sorted(arrived)}"
    # Resolved before the next step: an alert left firing would be delivered once its cause
    # resolves, which real alerts of a stopped exporter do not outlive.
    posted = [*inhibited, *controls, *marker]
    stack.post(posted, firing=False)
    keys = {key(labels) for labels in posted}
    stack.wait(
        lambda: not keys & {key(a["labels"]) for a in stack.am_alerts()}, "posted alerts resolved"
    )


# --- tests ----------------------------------------------------------------------------------------


def test_demo_alerts_reach_their_receiver_with_labels_and_annotations(
    alert_stack: AlertStack,
) -> None:
    hook = alert_stack.webhook
    alert_stack.wait(lambda: set(EXPECTED) <= hook.received(), f"the alerts {sorted(EXPECTED)}")
    assert hook.received() == set(EXPECTED), "healthy accounts and the exporter raise nothing"
    instance = alert_stack.prometheus.exporter_url.removeprefix("http://")
    for receiver, notification, alert in hook.alerts():
        name, account = key(alert["labels"])
        rule = RULES[name]
        assert receiver == EXPECTED[(name, account)] == notification["receiver"]
        assert notification["groupLabels"] == {"alertname": name, "account": account}
        labels = alert["labels"]
        assert labels["severity"] == rule["labels"]["severity"]
        assert (labels["job"], labels["instance"]) == ("retargeting", instance)
        annotations = alert["annotations"]
        assert annotations["summary"] == rule["annotations"]["summary"].replace(
            "{{ $labels.account }}", account
        )
        assert f"account {account}" in annotations["description"]
        assert "{{" not in annotations["description"]
        assert annotations["runbook_url"].endswith("/docs/runbook.md#" + name.lower())


def test_inactive_account_and_rejected_key_silence_that_accounts_alerts(
    alert_stack: AlertStack,
) -> None:
    hook = alert_stack.webhook
    alert_stack.wait(lambda: set(EXPECTED) <= hook.received(), "the causes to fire")
    instance = alert_stack.prometheus.exporter_url.removeprefix("http://")
    inhibited = [
        labels
        for account in ("demo-inactive", "demo-revoked")
        for labels in consequences(account, "retargeting", instance)
    ]
    controls = consequences(HEALTHY, "retargeting", instance)
    assert_posted_alerts_are_inhibited(alert_stack, inhibited, controls)


def test_exporter_down_then_absent_silences_its_per_account_alerts(
    alert_stack: AlertStack,
) -> None:
    hook = alert_stack.webhook
    instance = alert_stack.prometheus.exporter_url.removeprefix("http://")
    alert_stack.wait(lambda: set(EXPECTED) <= hook.received(), "the demo alerts to fire")

    # The exporter stops: Prometheus' scrape fails and the exporter's own alert pages someone.
    exporter = alert_stack.prometheus.exporter.process
    exporter.send_signal(signal.SIGTERM)
    exporter.wait(timeout=30)
    down = ("RetargetingExporterDown", "")
    alert_stack.wait(lambda: down in hook.received(), "RetargetingExporterDown")
    (receiver, _, alert) = next((r, n, a) for r, n, a in hook.alerts() if key(a["labels"]) == down)
    assert receiver == "retargeting-pager"
    assert alert["labels"]["instance"] == instance
    assert instance in alert["annotations"]["description"]
    # Alerts of that exporter's accounts are silenced; another shard's are not.
    inhibited = [
        {"alertname": "RetargetingRateLimited", "severity": "warning", "job": "retargeting",
         "instance": instance, "account": HEALTHY},
        *consequences("demo-garden", "retargeting", instance),
    ]  # fmt: skip
    controls = consequences("shard-b-account", "retargeting", "shard-b:9817")
    assert_posted_alerts_are_inhibited(alert_stack, inhibited, controls)

    # The target disappears from Prometheus: absent() fires, and silences the whole job.
    config_path = alert_stack.tmp / "prometheus.yml"
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    config["scrape_configs"][0]["static_configs"] = []
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    alert_stack.prometheus.prometheus.process.send_signal(signal.SIGHUP)
    absent = ("RetargetingExporterAbsent", "")
    alert_stack.wait(lambda: absent in hook.received(), "RetargetingExporterAbsent")
    assert next(r for r, _, a in hook.alerts() if key(a["labels"]) == absent) == (
        "retargeting-pager"
    )
    inhibited = consequences("shard-c-account", "retargeting", "shard-c:9817")
    controls = consequences("other-job-account", "other-retargeting", "shard-c:9817")
    assert_posted_alerts_are_inhibited(alert_stack, inhibited, controls)
    # Over the whole run, no inhibited alert reached a receiver.
    assert len(alert_stack.inhibited) == 8 + 5 + 4
    assert not hook.received() & alert_stack.inhibited
    assert not hook.received("resolved") & alert_stack.inhibited


def test_the_test_configurations_change_only_timings() -> None:
    """What the e2e test runs is the repository's routing, inhibition and rules."""
    example, derived = load(EXAMPLE), derived_alertmanager_config("http://127.0.0.1:1")
    assert derived["inhibit_rules"] == example["inhibit_rules"]
    assert [r["name"] for r in derived["receivers"]] == [r["name"] for r in example["receivers"]]

    def without_timing(route: dict[str, Any]) -> dict[str, Any]:
        return {
            k: [without_timing(c) for c in v] if k == "routes" else v
            for k, v in route.items()
            if k not in SHORT_ROUTE_TIMING
        }

    assert without_timing(derived["route"]) == without_timing(example["route"])
    real = {r["alert"]: {k: v for k, v in r.items() if k != "for"} for r in rules()}
    short = [r for g in short_rules()["groups"] for r in g["rules"]]
    assert {r["alert"]: {k: v for k, v in r.items() if k != "for"} for r in short} == real
    assert [r["for"] for r in short] == [short_for(r["for"]) for r in rules()]
    assert short_for("30m") == "30s" and short_for("1h") == "60s" and short_for("0m") == "0s"
    assert urllib.parse.urlsplit(derived["receivers"][0]["webhook_configs"][0]["url"]).path
