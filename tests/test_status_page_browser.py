"""The exporter's status page (/) in a real browser: Debian's headless Chromium, driven by
selenium through Debian's chromedriver (no browser download).

Proves that the page renders, lists every demo account with its state, marks the failing ones
visibly (their computed colours differ from the healthy ones'), and shows no rest key.
`SCREENSHOT=1 bash scripts/test -k status_page` also writes docs/status-page.png for the README.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_e2e_prometheus import FAILING_ACCOUNTS, HEALTHY_ACCOUNTS, demo_exporter
from tooling import REPO, missing, require_tool

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

SCREENSHOT = REPO / "docs" / "status-page.png"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1100,700",
)

# For every row of the accounts table: its cells' text and the colours a person sees.
ROWS_SCRIPT = """
const rows = [];
for (const row of document.querySelectorAll('table tbody tr')) {
  const cells = [...row.cells];
  const state = cells[1];
  const marker = state.querySelector('*') || state;
  const css = (el) => getComputedStyle(el);
  rows.push({
    cells: cells.map((c) => c.innerText.trim()),
    rowBackground: css(row).backgroundColor,
    markerBackground: css(marker).backgroundColor,
    markerColor: css(marker).color,
    visible: row.getBoundingClientRect().height > 0,
  });
}
return rows;
"""


def rgb(colour: str) -> tuple[int, int, int]:
    r, g, b = (int(v) for v in re.findall(r"\d+", colour)[:3])
    return r, g, b


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    chromium = require_tool("chromium", "/usr/bin/chromium")
    chromedriver = require_tool("chromedriver", "/usr/bin/chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing("selenium is not installed (test extra)")
    # Never let Selenium Manager look for (or download) a browser or driver.
    monkeypatch.setenv("SE_OFFLINE", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    service = Service(executable_path=chromedriver, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        driver.set_page_load_timeout(30)
        yield driver
    finally:
        driver.quit()


def test_status_page_lists_every_account_and_marks_the_failing_ones(
    browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with demo_exporter(tmp_path) as (base_url, _):
        browser.get(f"{base_url}/")
        WebDriverWait(browser, 15).until(
            lambda d: len(d.find_elements(By.CSS_SELECTOR, "table tbody tr")) >= 5
        )
        assert "Retargeting exporter" in browser.title
        assert browser.find_element(By.TAG_NAME, "table").is_displayed()
        rows = {row["cells"][0]: row for row in browser.execute_script(ROWS_SCRIPT)}
        source = browser.page_source
        text = browser.find_element(By.TAG_NAME, "body").text

        if os.environ.get("SCREENSHOT") == "1":
            # The whole page, at a fixed viewport size (window sizes vary with headless mode).
            height = browser.execute_script(
                "return Math.ceil(document.body.getBoundingClientRect().bottom) + 32"
            )
            browser.execute_cdp_cmd(
                "Emulation.setDeviceMetricsOverride",
                {"width": 1100, "height": int(height), "deviceScaleFactor": 1, "mobile": False},
            )
            assert browser.save_screenshot(str(SCREENSHOT))

    assert set(rows) == HEALTHY_ACCOUNTS | FAILING_ACCOUNTS, rows.keys()
    assert all(row["visible"] for row in rows.values())
    for name in HEALTHY_ACCOUNTS:
        assert rows[name]["cells"][1].lower() == "up", rows[name]
    for name in FAILING_ACCOUNTS:
        assert rows[name]["cells"][1].lower() == "down", rows[name]
    # The reason is shown, sanitised.
    assert "account_inactive" in " ".join(rows["demo-inactive"]["cells"])
    assert "invalid_key" in " ".join(rows["demo-revoked"]["cells"])

    # Visibly marked: a failing row looks different from every healthy row, in red.
    def look(row: dict[str, Any]) -> tuple[str, str, str]:
        return row["rowBackground"], row["markerBackground"], row["markerColor"]

    healthy_looks = {look(rows[name]) for name in HEALTHY_ACCOUNTS}
    for name in FAILING_ACCOUNTS:
        assert look(rows[name]) not in healthy_looks, f"{name} looks like a healthy account"
        red, green, blue = rgb(rows[name]["markerBackground"])
        assert red > 150 and red > green + 60 and red > blue + 60, (name, look(rows[name]))
    for name in HEALTHY_ACCOUNTS:
        red, green, _ = rgb(rows[name]["markerBackground"])
        assert green > red, (name, look(rows[name]))

    # No rest key anywhere on the page (the demo keys all start with demo-key-).
    assert "demo-key-" not in source
    assert "demo-key-" not in text
