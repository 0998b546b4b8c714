"""The Grafana dashboard: importable and provisionable as is, typed by Grafana's schema, and built
only on metrics the exporter (or Prometheus) really produces.

Also holds the small PromQL helpers the alert and end-to-end tests share.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import ProcessCollector
from tooling import REPO, missing, require_tool

from exporter.metrics import METRIC_NAMES
from exporter.selfmetrics import SelfMetrics

DASHBOARD = REPO / "grafana" / "retargeting-exporter.json"
ALERTS = REPO / "prometheus" / "alerts.yml"
NODE_DIR = REPO / "tests" / "node"

# Metric names a query may use besides the exporter's own: Prometheus' synthetic `up` and the
# prometheus_client process collector the exporter serves on /metrics.
PROMETHEUS_METRICS = frozenset({"up"})
PROCESS_METRICS = frozenset(
    sample.name for family in ProcessCollector(registry=None).collect() for sample in family.samples
)
# The samples of the exporter-wide families: a histogram's _bucket, _count and _sum.
SELF_SAMPLES = frozenset(
    sample.name
    for family in SelfMetrics(loop_lag=float).registry.collect()
    for sample in family.samples
)
EXPORTED = METRIC_NAMES | PROCESS_METRICS | PROMETHEUS_METRICS | SELF_SAMPLES

TRAFFIC_METRICS = frozenset(
    {
        "retargeting_impressions",
        "retargeting_clicks",
        "retargeting_orders",
        "retargeting_revenue",
        "retargeting_ctr_ratio",
        "retargeting_cvr_ratio",
    }
)

# --- dashboard access ---------------------------------------------------------------------------


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def iter_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows included, with the panels of collapsed rows."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def content_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in iter_panels(dashboard) if p["type"] != "row"]


def variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard["templating"]["list"]}


def panel_queries(dashboard: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(panel, target) for every query of every panel."""
    return [(p, t) for p in content_panels(dashboard) for t in p.get("targets", [])]


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


# --- PromQL -------------------------------------------------------------------------------------

_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENTIFIER = re.compile(r"(?<![\w:.$])[A-Za-z_:][\w:]*")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "offset", "bool", "inf", "nan"}
    | {"group_left", "group_right"}
)
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(?P<expr>.+),\s*)?(?P<label>\$?\w+)\s*\)\s*$")
_LABEL_NAMES = re.compile(r"^\s*label_names\(\s*(?P<expr>.+)\s*\)\s*$")


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (functions, keywords, labels excluded)."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        word = match.group()
        if word.lower() in _KEYWORDS or text[match.end() :].lstrip().startswith("("):
            continue
        names.add(word)
    return names


def variable_query(variable: dict[str, Any]) -> tuple[str | None, str | None]:
    """(series selector or None, label) of a `label_values(...)` variable query; the label is
    None for a `label_names(...)` query, whose argument Grafana takes as a metric name regex."""
    query = variable["query"]
    if isinstance(query, dict):
        query = query["query"]
    names = _LABEL_NAMES.match(query)
    if names:
        return names["expr"], None
    match = _LABEL_VALUES.match(query)
    assert match, f"variable {variable['name']}: not a label_values() query: {query!r}"
    return match["expr"], match["label"]


def by_labels(expr: str) -> list[set[str]]:
    """The label lists of every `by (...)` clause in an expression."""
    return [
        {label.strip() for label in group.split(",") if label.strip()}
        for group in re.findall(r"\bby\s*\(([^()]*)\)", expr)
    ]


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (reason) (rate(retargeting_api_errors_total{job=~"$job"}[$__rate_interval]))',
         {"retargeting_api_errors_total"}),
        ("avg_over_time(retargeting_ctr_ratio{window=\"24h\"}[7d:1h] offset 1d) < 0.7 and on "
         "(account, source_name) retargeting_impressions >= 5e3",
         {"retargeting_ctr_ratio", "retargeting_impressions"}),
        ("time() - x_seconds and x_seconds > 0 or vector(0)", {"x_seconds"}),
        ('absent(up{job="retargeting"})', {"up"}),
        ("count(a == 0) unless ignoring (reason) b", {"a", "b"}),
    ],
)  # fmt: skip
def test_metric_names_finds_every_selector_and_nothing_else(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


# --- importable and provisionable ---------------------------------------------------------------


def test_dashboard_is_provisionable_as_is() -> None:
    text = DASHBOARD.read_text(encoding="utf-8")
    dashboard = json.loads(text)
    assert dashboard["id"] is None, "a fixed id makes imports overwrite other dashboards"
    assert dashboard["uid"] == "retargeting-exporter", "the uid is a contract (links, provisioning)"
    assert isinstance(dashboard["schemaVersion"], int)
    assert dashboard["title"]
    assert dashboard["tags"]
    # Raw UI exports: inputs break file provisioning, hashKeys are UI noise.
    for forbidden in ("${DS_", "__inputs", "__requires", "$$hashKey"):
        assert forbidden not in text, f"{forbidden} found in the dashboard"


def test_every_query_uses_the_datasource_variable() -> None:
    dashboard = load_dashboard()
    ds = variables(dashboard)["datasource"]
    assert ds["type"] == "datasource"
    assert ds["query"] == "prometheus"
    expected = {"type": "prometheus", "uid": "${datasource}"}
    for panel in content_panels(dashboard):
        assert panel["datasource"] == expected, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == expected, panel["title"]
    for variable in variables(dashboard).values():
        if variable["type"] == "query":
            assert variable["datasource"] == expected, variable["name"]


def test_variables_for_account_source_and_window() -> None:
    vs = variables(dashboard := load_dashboard())
    assert list(vs) == [
        "datasource", "job", "label", "label_value", "account", "source_name", "window"
    ]  # fmt: skip
    expected = {
        "job": ("job", False),
        "label_value": ("$label", True),
        "account": ("account", True),
        "source_name": ("source_name", True),
        "window": ("window", False),
    }
    for name, (label, multi) in expected.items():
        variable = vs[name]
        assert variable["type"] == "query"
        selector, queried = variable_query(variable)
        assert queried == label
        assert selector, f"{name}: label_values() without a metric scans every series"
        assert variable["multi"] is multi and variable["includeAll"] is multi, name
        assert variable["refresh"] == 2, f"{name}: refresh on time range change"
    # Accounts are filtered by the labels users give them (retargeting_account_info): a label
    # name, its values, and the accounts that have them.
    # Grafana asks for the label names of {__name__=~".*<argument>.*"}: a name, no selector.
    assert variable_query(vs["label"]) == ("retargeting_account_info", None)
    assert vs["label"]["multi"] is False and vs["label"]["includeAll"] is False
    assert vs["label"]["current"]["value"] == "account", "no filter unless one is chosen"
    assert variable_query(vs["label_value"])[0] == 'retargeting_account_info{job=~"$job"}'
    assert vs["label_value"]["allValue"] == ".*", "All keeps accounts without the label"
    assert variable_query(vs["account"])[0] == (
        'retargeting_account_info{job=~"$job", $label=~"$label_value"}'
    )
    # Every selector filters on the variables that apply to it.
    for panel, target in panel_queries(dashboard):
        for metric, matchers in re.findall(r"([A-Za-z_:][\w:]*)\{([^{}]*)\}", target["expr"]):
            where = f"{panel['title']}: {metric}{{{matchers}}}"
            assert 'job=~"$job"' in matchers, where
            if metric in METRIC_NAMES and not metric.startswith("retargeting_exporter_"):
                assert 'account=~"$account"' in matchers, where
            if metric in TRAFFIC_METRICS:
                assert 'source_name=~"$source_name"' in matchers, where
                # The "... today" panels always show the calendar-day window `today`.
                window = (
                    'window="today"' if panel["title"].endswith(" today") else 'window="$window"'
                )
                assert window in matchers, where


# --- panels ---------------------------------------------------------------------------------------


def test_every_panel_has_a_unit() -> None:
    for panel in content_panels(load_dashboard()):
        assert panel["fieldConfig"]["defaults"].get("unit"), f"{panel['title']}: no unit"


def test_ratios_are_shown_as_percentunit() -> None:
    for panel in content_panels(dashboard := load_dashboard()):
        unit = panel["fieldConfig"]["defaults"]["unit"]
        exprs = [t["expr"] for t in panel["targets"]]
        if panel["type"] == "table":
            overrides = {
                o["matcher"]["options"]: {p["id"]: p.get("value") for p in o["properties"]}
                for o in panel["fieldConfig"]["overrides"]
            }
            for column in ("CTR", "CVR"):
                if column in overrides:
                    assert overrides[column]["unit"] == "percentunit"
            continue
        is_ratio = any(
            metric_names(e) & {"retargeting_ctr_ratio", "retargeting_cvr_ratio"} for e in exprs
        )
        is_ratio |= bool(re.search(r"\b(CTR|CVR)\b", panel["title"]))
        if is_ratio:
            assert unit == "percentunit", panel["title"]
    titles = {p["title"] for p in content_panels(dashboard)}
    assert {"CTR", "CVR", "CTR by source", "CVR by source"} <= titles


def test_legends_name_the_series() -> None:
    for panel, target in panel_queries(load_dashboard()):
        if panel["type"] != "timeseries":
            continue
        assert panel["options"]["legend"]["showLegend"] is True, panel["title"]
        legend = target["legendFormat"]
        assert legend, f"{panel['title']}: a legend without a format shows raw label sets"
        placeholders = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))
        for labels in by_labels(target["expr"]):
            if "histogram_quantile" in target["expr"]:
                labels -= {"le"}  # consumed by histogram_quantile
            assert placeholders == labels, (
                f"{panel['title']}: legend {legend!r} must show exactly the labels kept by "
                f"by ({', '.join(sorted(labels))})"
            )
        if metric_names(target["expr"]) & TRAFFIC_METRICS:
            assert {"account", "source_name"} <= placeholders, panel["title"]


def test_rows_go_from_general_to_specific() -> None:
    dashboard = load_dashboard()
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert [r.split()[0] for r in rows] == ["Health", "Totals", "Per", "Per", "Exporter", "API"]
    assert rows[2].startswith("Per source") and rows[3].startswith("Per account")
    assert dashboard["panels"][0]["type"] == "row", "the health row comes first"
    health = []
    for panel in dashboard["panels"][1:]:
        if panel["type"] == "row":
            break
        health.append(panel["title"])
    assert {"Accounts up", "Inactive accounts", "Invalid keys", "API errors by reason"} <= set(
        health
    )
    assert "Data age" in health


def test_panels_do_not_overlap() -> None:
    dashboard = load_dashboard()
    ids = [p["id"] for p in iter_panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: dict[tuple[int, int], str] = {}
    for panel in iter_panels(dashboard):
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, panel["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


# --- metrics exist ------------------------------------------------------------------------------


_AGGREGATION = re.compile(r"\b(sum|avg|min|max|count)\s*(?:by\s*\(([^)]*)\))?\s*\(")


def test_no_panel_adds_up_revenue_of_different_currencies() -> None:
    """Revenue is in each shop's currency: every aggregation keeps the account or the currency."""
    revenue = [
        (panel["title"], target["expr"])
        for panel, target in panel_queries(load_dashboard())
        if "retargeting_revenue" in target["expr"]
    ]
    assert any("by (currency)" in expr for _, expr in revenue), "no per-currency total"
    for title, expr in revenue:
        for _, grouping in _AGGREGATION.findall(expr):
            labels = {label.strip() for label in grouping.split(",")}
            assert labels & {"account", "currency"}, f"{title}: {expr}"


def test_panels_and_variables_use_only_exported_metrics() -> None:
    dashboard = load_dashboard()
    used: dict[str, set[str]] = {}
    for panel, target in panel_queries(dashboard):
        for name in metric_names(target["expr"]):
            used.setdefault(name, set()).add(panel["title"])
    for variable in variables(dashboard).values():
        if variable["type"] == "query":
            selector, _ = variable_query(variable)
            for name in metric_names(selector or ""):
                used.setdefault(name, set()).add(f"variable {variable['name']}")
    unknown = {name: sorted(where) for name, where in used.items() if name not in EXPORTED}
    assert not unknown, f"metrics the exporter does not export: {unknown}"
    # The dashboard shows every traffic figure and every health signal.
    assert TRAFFIC_METRICS | {"retargeting_up", "retargeting_account_active"} <= set(used)


def test_alerts_use_only_exported_metrics() -> None:
    unknown = {}
    for rule in alert_rules():
        names = metric_names(rule["expr"]) - EXPORTED
        if names:
            unknown[rule["alert"]] = sorted(names)
    assert not unknown, f"metrics the exporter does not export: {unknown}"


# --- Grafana's schema -----------------------------------------------------------------------------


def _tsc() -> tuple[str, Path]:
    node = require_tool("node")
    tsc = NODE_DIR / "node_modules" / "typescript" / "bin" / "tsc"
    if not tsc.is_file():
        missing(f"{tsc.relative_to(REPO)} is not installed (npm ci in tests/node)")
    return node, tsc


def _typecheck(
    node: str, tsc: Path, dashboard: Path, generated: Path, project: Path
) -> subprocess.CompletedProcess[str]:
    """Write `dashboard` as the TypeScript literal `generated`, then type-check `project`."""
    subprocess.run(
        [node, "generate.mjs", str(dashboard), str(generated)],
        cwd=NODE_DIR,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return subprocess.run(
        [node, str(tsc), "--noEmit", "-p", str(project)],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_dashboard_typechecks_against_grafana_schema() -> None:
    node, tsc = _tsc()
    result = _typecheck(
        node, tsc, DASHBOARD, NODE_DIR / "generated" / "dashboard.ts", NODE_DIR / "tsconfig.json"
    )
    # Point at the JSON's own line numbers (the generated file has a 3-line header).
    errors = re.sub(
        r"generated/dashboard\.ts\((\d+),(\d+)\)",
        lambda m: f"grafana/retargeting-exporter.json:{int(m[1]) - 3}:{m[2]}",
        result.stdout + result.stderr,
    )
    assert result.returncode == 0, f"the dashboard does not match @grafana/schema:\n{errors}"


BROKEN = (
    # (where, wrong value, what tsc says)
    (("panels", 1, "fieldConfig", "defaults", "color", "mode"), "palette-clasic", "palette-clasic"),
    (("panels", 1, "gridPos", "hieght"), 4, "'\"hieght\"' does not exist"),
    (("templating", "list", 2, "type"), "qurey", "'\"qurey\"' is not assignable"),
    (("schemaVersion",), "39", "Type 'string' is not assignable to type 'number'"),
)


def test_typecheck_rejects_a_broken_dashboard(tmp_path: Path) -> None:
    """The schema check is not vacuous: typos in keys, enum values and types fail it."""
    node, tsc = _tsc()
    dashboard = load_dashboard()
    for path, value, _ in BROKEN:
        parent = dashboard
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = value
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(dashboard, indent=2), encoding="utf-8")
    # Compiled beside the real one, so '@grafana/schema' resolves from tests/node/node_modules.
    workdir = NODE_DIR / "generated" / f"broken-{tmp_path.name}"
    workdir.mkdir(parents=True, exist_ok=True)
    project = workdir / "tsconfig.json"
    up = "../.."  # path inside the repository: workdir is two folders below tests/node
    project.write_text(
        json.dumps(
            {"extends": f"{up}/tsconfig.json", "files": [f"{up}/dashboard.ts", "dashboard.ts"]}
        ),
        encoding="utf-8",
    )
    try:
        result = _typecheck(node, tsc, broken, workdir / "dashboard.ts", project)
    finally:
        for file in workdir.iterdir():
            file.unlink()
        workdir.rmdir()
    assert result.returncode != 0
    for path, _, message in BROKEN:
        assert message in result.stdout, f"{path}: {message!r} not in\n{result.stdout}"
