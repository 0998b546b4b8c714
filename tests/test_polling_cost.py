"""What polling costs and whether it keeps up, as the exporter's own metrics show it.

The request-duration histogram against the fake API's own log of what it answered, and the
overdue-polls gauge when the exporter is made too slow (one request at a time, a slow vendor on
the injected clock) and once it keeps up again.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any

from conftest import Clients
from fakeclock import FakeClock, RecordingClient
from prometheus_client.parser import text_string_to_metric_families
from test_poller import make_config, started_fake

from exporter.errors import ApiErrorReason
from exporter.fakeapi import Fault
from exporter.poller import Poller
from exporter.selfmetrics import OUTCOMES, SelfMetrics, request_buckets
from exporter.store import SnapshotStore

HISTOGRAM = "retargeting_api_request_duration_seconds"
OVERDUE = "retargeting_exporter_polls_overdue"


def outcome_counts(own: SelfMetrics) -> dict[str, float]:
    """``<histogram>_count`` per outcome, from the rendered exposition."""
    families = {f.name: f for f in text_string_to_metric_families(own.render().decode())}
    return {
        s.labels["outcome"]: s.value
        for s in families[HISTOGRAM].samples
        if s.name == f"{HISTOGRAM}_count"
    }


def test_every_outcome_is_exposed_from_the_start_with_buckets_up_to_the_timeout() -> None:
    own = SelfMetrics(request_timeout=20.0)
    assert outcome_counts(own) == {outcome: 0 for outcome in OUTCOMES}
    assert set(OUTCOMES) == {"success", *(r.value for r in ApiErrorReason)}
    assert request_buckets(20.0) == (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0)
    assert request_buckets(15.0)[-2:] == (10.0, 15.0)
    text = own.render().decode()
    assert f'{HISTOGRAM}_bucket{{le="20.0",outcome="timeout"}} 0.0' in text


async def test_the_histogram_counts_every_request_the_fake_answered(clients: Clients) -> None:
    """Retries included: each request the fake answered is one observation, under the outcome
    the exporter made of the answer."""
    names = ["good", "flaky", "revoked"]
    fake = await started_fake(["good", "flaky"])  # no account for key-revoked: invalid key
    clock = FakeClock()
    own = SelfMetrics()
    try:
        config = make_config(fake.url, names, api={"url": fake.url, "retries": {"attempts": 3}})
        fake.set_fault(Fault.HTML_5XX, key="key-flaky", count=3)  # 502s, then answers
        client = RecordingClient(clients.for_api(config.api), clock)
        poller = Poller(config, client, SnapshotStore(), clock=clock, self_metrics=own)  # type: ignore[arg-type]
        poller.start()
        await clock.advance(15 * 60)
        await poller.stop()
    finally:
        await fake.close()
    kinds = {"success": "success", "invalid_key": "invalid_key", Fault.HTML_5XX: "http_error"}
    answered = Counter(kinds[r.kind] for r in fake.requests)
    assert answered["http_error"] == 3 and answered["invalid_key"] > 0
    counts = outcome_counts(own)
    assert {k: v for k, v in counts.items() if v} == answered
    assert sum(counts.values()) == len(fake.requests) == len(client.sent)


async def test_overdue_polls_rise_when_the_exporter_is_too_slow_and_return_to_zero(
    clients: Clients,
) -> None:
    """Six accounts every 30 s, one request at a time, the vendor answering in 20 s: a round
    takes two minutes, so polls wait past their slot. Once the vendor is fast, none do."""
    names = [f"shop-{i}" for i in range(6)]
    fake = await started_fake(names)
    clock = FakeClock()
    own = SelfMetrics()
    answer = {"seconds": 20.0}

    class SlowVendor(RecordingClient):
        async def fetch(self, *args: Any) -> Any:
            await self.clock.sleep(answer["seconds"])  # the vendor's answer time, on the clock
            return await super().fetch(*args)

    def overdue() -> float | None:
        return own.registry.get_sample_value(OVERDUE)

    try:
        config = make_config(fake.url, names, interval=30.0, windows=["24h"])
        config = replace(config, api=replace(config.api, max_concurrency=1))
        client = SlowVendor(clients.for_api(config.api), clock)
        poller = Poller(config, client, SnapshotStore(), clock=clock, self_metrics=own)  # type: ignore[arg-type]
        assert overdue() == 0
        poller.start()
        seen = []
        for _ in range(20):
            await clock.advance(15)
            seen.append(overdue())
        slow = [
            own.registry.get_sample_value(f"{HISTOGRAM}_{s}", {"outcome": "success"})
            for s in ("count", "sum")
        ]
        answer["seconds"] = 0.0
        await clock.advance(120)
        recovered = [overdue()]
        for _ in range(8):
            await clock.advance(15)
            recovered.append(overdue())
        await poller.stop()
    finally:
        await fake.close()
    assert min(seen[4:]) >= 2  # steadily behind, not only during the first round
    assert max(seen) <= len(names)
    assert recovered == [0] * 9
    count, total = slow
    assert count and total == 20.0 * count  # each request timed on the injected clock
    assert f"{OVERDUE} 0.0" in own.render().decode()
