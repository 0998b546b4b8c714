"""End to end with real parts: the exporter in --demo mode, scraped by a real Prometheus server
that loads prometheus/alerts.yml, queried the way the Grafana dashboard queries it.

Proves that the example scrape config, the alert rules and every dashboard query work against
what the exporter really serves, and that the demo's failing accounts drive their alerts while
the healthy ones stay silent.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from test_alerts import ALERTS, EXAMPLE_CONFIG, rules
from test_dashboard import load_dashboard, panel_queries, variable_query, variables
from tooling import REPO, free_port, missing, require_tool

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

HEALTHY_ACCOUNTS = {"demo-fashion", "demo-electronics", "demo-garden"}
FAILING_ACCOUNTS = {"demo-inactive", "demo-revoked"}
# The alerts the failing demo accounts must drive (pending or firing), and nothing else.
EXPECTED_ALERTS = {
    ("RetargetingAccountInactive", "demo-inactive"),
    ("RetargetingInvalidRestKey", "demo-revoked"),
}
DEMO_INTERVAL = "5s"
SCRAPE_INTERVAL = "1s"

# Grafana's built-in variables for the dashboard's default range (now-7d), a ~1000 px wide
# panel and the Prometheus data source's default scrape interval (15s): $__interval is the
# range / max data points rounded to a "nice" 10m, $__rate_interval = max($__interval + scrape
# interval, 4 x scrape interval).
GRAFANA_BUILTINS = {
    "__interval": "10m",
    "__interval_ms": "600000",
    "__rate_interval": "615s",
    "__range": "604800s",
    "__range_s": "604800",
    "__range_ms": "604800000",
}
# Panels that may legitimately be empty against the demo (none today).
MAY_BE_EMPTY: set[str] = set()

T = TypeVar("T")


# --- processes ----------------------------------------------------------------------------------


@dataclass
class Started:
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-4000:]


@contextlib.contextmanager
def started(args: list[str], log: Path) -> Iterator[Started]:
    """Run a program for the duration of the block; always stopped (SIGTERM, then SIGKILL)."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO
        )
    try:
        yield Started(process, log)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def http_get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def wait_until(check: Callable[[], T | None], what: str, timeout: float, *watched: Started) -> T:
    """Poll ``check`` until it returns something truthy; fail with the programs' output."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        for program in watched:
            if program.process.poll() is not None:
                pytest.fail(f"{program.process.args[0]} exited while waiting for {what}:\n"
                            f"{program.output()}")  # fmt: skip
        try:
            result = check()
            if result:
                return result
        except (OSError, ValueError, KeyError) as error:
            last = error
        time.sleep(0.2)
    logs = "\n".join(f"--- {p.process.args[0]}:\n{p.output()}" for p in watched)
    pytest.fail(f"timed out after {timeout}s waiting for {what} (last error: {last!r})\n{logs}")


def exporter_binary() -> str:
    binary = REPO / ".venv" / "bin" / "retargeting-exporter"
    if not binary.is_file():
        missing("the exporter is not installed in .venv")
    return str(binary)


@contextlib.contextmanager
def demo_exporter(tmp: Path, interval: str = DEMO_INTERVAL) -> Iterator[tuple[str, Started]]:
    """The exporter in --demo mode on a free loopback port; yields (base URL, process)."""
    port = free_port()
    args = [
        exporter_binary(),
        "--demo",
        f"--demo.interval={interval}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with started(args, tmp / "exporter.log") as exporter:
        base = f"http://127.0.0.1:{port}"
        # Ready once every account has been polled at least once.
        wait_until(lambda: http_get(f"{base}/-/ready")[0] == 200, "exporter ready", 30, exporter)
        yield base, exporter


# --- the stack ----------------------------------------------------------------------------------


@dataclass
class Stack:
    exporter_url: str
    prometheus_url: str
    exporter: Started
    prometheus: Started

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        status, body = http_get(f"{self.prometheus_url}/api/v1/{path}?{query}")
        answer = json.loads(body)
        assert status == 200 and answer["status"] == "success", (path, params, answer)
        return answer["data"]

    def wait(self, check: Callable[[], T | None], what: str, timeout: float = 45) -> T:
        return wait_until(check, what, timeout, self.exporter, self.prometheus)


def prometheus_config(exporter_address: str) -> dict[str, Any]:
    """prometheus.example.yml with the test's target and short intervals."""
    config = yaml.safe_load(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    config["global"].update(
        scrape_interval=SCRAPE_INTERVAL,
        scrape_timeout=SCRAPE_INTERVAL,
        evaluation_interval=SCRAPE_INTERVAL,
    )
    config["rule_files"] = [str(ALERTS)]
    (job,) = config["scrape_configs"]
    job["static_configs"] = [{"targets": [exporter_address]}]
    return config


@contextlib.contextmanager
def prometheus_stack(
    tmp: Path, exporter_url: str, exporter: Started, config: dict[str, Any]
) -> Iterator[Stack]:
    """A real Prometheus (config written to ``tmp``) scraping ``exporter``; yields once the
    exporter's target is up. Sending it SIGHUP reloads ``tmp / "prometheus.yml"``."""
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    port = free_port()
    args = [
        require_tool("prometheus"),
        f"--config.file={path}",
        f"--storage.tsdb.path={tmp / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    with started(args, tmp / "prometheus.log") as prometheus:
        url = f"http://127.0.0.1:{port}"
        stack = Stack(exporter_url, url, exporter, prometheus)
        stack.wait(lambda: http_get(f"{url}/-/ready")[0] == 200, "Prometheus ready")

        def target_up() -> bool:
            targets = stack.api("targets")["activeTargets"]
            return any(t["labels"]["job"] == "retargeting" and t["health"] == "up" for t in targets)

        stack.wait(target_up, "the exporter target to be up")
        yield stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_tool("prometheus")
    tmp = tmp_path_factory.mktemp("e2e")
    with demo_exporter(tmp) as (exporter_url, exporter):
        config = prometheus_config(exporter_url.removeprefix("http://"))
        with prometheus_stack(tmp, exporter_url, exporter, config) as stack:
            yield stack


# --- Grafana's variable substitution --------------------------------------------------------------


def regex_escape(value: str) -> str:
    """Grafana's prometheusSpecialRegexEscape (values of multi-value variables)."""
    value = value.replace("\\", "\\\\\\\\")
    return re.sub(r"[$^*{}\[\]'+?.()|]", lambda m: "\\\\" + m[0], value)


def format_value(variable: dict[str, Any], values: list[str]) -> str:
    """A variable's selection as the Prometheus data source interpolates it."""
    if not variable.get("multi") and not variable.get("includeAll"):
        (value,) = values
        return value.replace("\\", "\\\\").replace("'", "\\\\'")
    escaped = [regex_escape(v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def interpolate(text: str, values: dict[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match["name"] or match["braced"]
        return values.get(name, match[0])

    return re.sub(r"\$(?:\{(?P<braced>\w+)\}|(?P<name>\w+))", replace, text)


def variable_options(stack: Stack, variable: dict[str, Any], resolved: dict[str, str]) -> list[str]:
    """The options Grafana lists for a query variable, given the variables resolved before it."""
    now = time.time()
    selector, label = variable_query(variable)
    params = {"start": str(now - 7 * 86400), "end": str(now)}
    if label is None:
        # label_names(x): Grafana asks for the label names of the metrics whose name contains x.
        params["match[]"] = f'{{__name__=~".*{selector}.*"}}'
        found = stack.api("labels", **params)
    else:
        if selector:
            params["match[]"] = interpolate(selector, resolved)
        found = stack.api(f"label/{interpolate(label, resolved)}/values", **params)
    if variable.get("regex"):
        # Grafana's /regex/ keeps the options it matches (a capture group would replace them).
        pattern = re.compile(variable["regex"].removeprefix("/").removesuffix("/"))
        assert pattern.groups == 0, f"variable {variable['name']}: capture groups in its regex"
        found = [value for value in found if pattern.search(value)]
    return sorted(found)


def resolve_variables(
    stack: Stack, select: dict[str, list[str]] | None = None
) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Query each variable like Grafana does, in order, and select the values in ``select``,
    else All (multi) or the default. Returns the interpolation values and every variable's
    options."""
    resolved = dict(GRAFANA_BUILTINS)
    options: dict[str, list[str]] = {}
    for name, variable in variables(load_dashboard()).items():
        if variable["type"] == "datasource":
            continue
        found = variable_options(stack, variable, resolved)
        assert found, f"variable {name}: no values"
        options[name] = found
        if select and name in select:
            assert set(select[name]) <= set(found), (name, select[name], found)
            resolved[name] = format_value(variable, select[name])
        elif variable.get("includeAll"):
            # All: the variable's allValue as is, else every option.
            all_value = variable.get("allValue")
            resolved[name] = all_value if all_value else format_value(variable, found)
        else:
            default = variable.get("current", {}).get("value")
            resolved[name] = format_value(variable, [default] if default in found else found[:1])
    return resolved, options


# --- tests ----------------------------------------------------------------------------------------


def test_every_dashboard_query_runs_and_shows_data(stack: Stack) -> None:
    values, options = resolve_variables(stack)
    assert options["job"] == ["retargeting"]
    # The account label filter offers the labels the demo gives its accounts, `account`, and
    # `currency` (filter the dashboard by a currency).
    assert options["label"] == ["account", "currency", "plan", "team"]
    assert set(options["label_value"]) == HEALTHY_ACCOUNTS | FAILING_ACCOUNTS
    assert set(options["account"]) == HEALTHY_ACCOUNTS | FAILING_ACCOUNTS
    assert {"Newsletter", "Triggered Emails", "Rec. Engine", "Pop-ups"} <= set(
        options["source_name"]
    )
    assert options["window"] == ["24h", "30d", "today"]
    queries = []
    for panel, target in panel_queries(load_dashboard()):
        expr = interpolate(target["expr"], values)
        assert "$" not in expr, f"{panel['title']}: unresolved variable in {expr}"
        queries.append((panel["title"], target["refId"], expr))
    assert "Rec\\\\. Engine" in values["source_name"], "multi-value regex escaping as Grafana"

    def empty_queries() -> list[str] | None:
        empty = []
        for title, ref, expr in queries:
            data = stack.api("query", query=expr)
            if not data["result"] and title not in MAY_BE_EMPTY:
                empty.append(f"{title} [{ref}]: {expr}")
        # Rates and increases need a few scrapes: poll until every panel has data.
        return None if empty else ["all have data"]

    try:
        stack.wait(empty_queries, "every dashboard panel to return data", timeout=40)
    except pytest.fail.Exception:
        empty = [
            f"{title} [{ref}]: {expr}"
            for title, ref, expr in queries
            if not stack.api("query", query=expr)["result"]
        ]
        pytest.fail("dashboard queries without data:\n" + "\n".join(empty))
    # Spot-check values against what the demo is known to be.
    by_title = {title: expr for title, _, expr in queries}
    assert _scalar(stack, by_title["Accounts up"]) == len(HEALTHY_ACCOUNTS)
    assert _scalar(stack, by_title["Accounts down"]) == len(FAILING_ACCOUNTS)
    assert _scalar(stack, by_title["Inactive accounts"]) == 1
    assert _scalar(stack, by_title["Exporters up"]) == 1
    # An increase() needs two scrapes that saw the counter grow.
    stack.wait(lambda: _scalar(stack, by_title["Invalid keys"]) == 1, "Invalid keys to show 1")
    assert 0 < _scalar(stack, by_title["CTR"]) < 1


@pytest.mark.parametrize(
    ("values", "accounts"),
    [
        (["emea"], {"demo-fashion", "demo-electronics"}),
        (["americas", "apac"], {"demo-garden", "demo-inactive", "demo-revoked"}),
    ],
)
def test_account_labels_filter_every_per_account_panel(
    stack: Stack, values: list[str], accounts: set[str]
) -> None:
    """Filter by the demo's `team` label: only its accounts remain, in every panel."""
    resolved, options = resolve_variables(stack, select={"label": ["team"], "label_value": values})
    assert options["label_value"] == ["americas", "apac", "emea"]
    assert set(options["account"]) == accounts
    seen: set[str] = set()
    by_title = {}
    for panel, target in panel_queries(load_dashboard()):
        expr = interpolate(target["expr"], resolved)
        by_title.setdefault(panel["title"], expr)
        for sample in stack.api("query", query=expr)["result"]:
            if "account" in sample["metric"]:
                seen.add(sample["metric"]["account"])
    assert seen == accounts, "per-account panels show exactly the filtered accounts"
    up = accounts & HEALTHY_ACCOUNTS
    assert _scalar(stack, by_title["Accounts up"]) == len(up)
    assert _scalar(stack, by_title["Accounts down"]) == len(accounts - up)
    assert _scalar(stack, by_title["Inactive accounts"]) == len(accounts & {"demo-inactive"})


def _scalar(stack: Stack, expr: str) -> float:
    (sample,) = stack.api("query", query=expr)["result"]
    return float(sample["value"][1])


def test_all_rules_load_and_evaluate_without_errors(stack: Stack) -> None:
    expected = {rule["alert"] for rule in rules()}

    def evaluated() -> list[dict[str, Any]] | None:
        groups = stack.api("rules")["groups"]
        loaded = [rule for group in groups for rule in group["rules"]]
        return loaded if all(r["health"] != "unknown" for r in loaded) and loaded else None

    loaded = stack.wait(evaluated, "every rule to be evaluated")
    assert {r["name"] for r in loaded} == expected
    assert [g["name"] for g in stack.api("rules")["groups"]] == ["retargeting-exporter"]
    broken = {r["name"]: r.get("lastError") for r in loaded if r["health"] != "ok"}
    assert not broken, f"rules failing to evaluate: {broken}"


def test_failing_demo_accounts_drive_their_alerts_and_healthy_ones_do_not(stack: Stack) -> None:
    def active_alerts() -> set[tuple[str, str]] | None:
        alerts = stack.api("alerts")["alerts"]
        assert all(a["state"] in {"pending", "firing"} for a in alerts)
        got = {(a["labels"]["alertname"], a["labels"].get("account", "")) for a in alerts}
        return got if got == EXPECTED_ALERTS else None

    try:
        stack.wait(active_alerts, "exactly the expected alerts to be pending or firing")
    except pytest.fail.Exception:
        alerts = stack.api("alerts")["alerts"]
        got = sorted(
            (a["labels"]["alertname"], a["labels"].get("account"), a["state"]) for a in alerts
        )
        pytest.fail(f"expected {sorted(EXPECTED_ALERTS)} pending/firing, got {got}")
    alerts = stack.api("alerts")["alerts"]
    assert not {a["labels"].get("account") for a in alerts} & HEALTHY_ACCOUNTS
    # The alerts carry their annotations, rendered with the account's name.
    for alert in alerts:
        account = alert["labels"]["account"]
        assert account in alert["annotations"]["description"]
        assert alert["annotations"]["runbook_url"].endswith(
            "#" + alert["labels"]["alertname"].lower()
        )


def test_scraped_exposition_passes_promtool_check_metrics(stack: Stack) -> None:
    promtool = require_tool("promtool")
    status, body = http_get(f"{stack.exporter_url}/metrics")
    assert status == 200
    result = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, timeout=60
    )
    problems = (result.stdout + result.stderr).decode()
    assert result.returncode == 0, f"promtool check metrics:\n{problems}"
    assert not problems.strip(), problems
    # And what Prometheus scraped is what the exporter serves: every demo account is there.
    data = stack.api("query", query='count by (account) (retargeting_up{job="retargeting"})')
    assert {s["metric"]["account"] for s in data["result"]} == HEALTHY_ACCOUNTS | FAILING_ACCOUNTS


def test_no_rest_key_reaches_prometheus(stack: Stack) -> None:
    """The demo keys all start with demo-key-: none may appear in any label value."""
    names = stack.api("label/__name__/values")
    assert names
    for label in stack.api("labels"):
        for value in stack.api(f"label/{label}/values"):
            assert "demo-key-" not in value, f"a rest key in label {label}"
