"""The exporter's own metrics: one ``SelfMetrics`` per process, on a registry of its own.

These are the exporter-wide families (a handful of series, not one per account): build and shard
info, the accounts polled, reloads, internal errors, the API requests' durations, the polls
overdue, the optional event-loop lag, and the standard ``process_*`` metrics. They are
prometheus-client's own types on a ``CollectorRegistry`` of this process (never the global
``REGISTRY``), rendered by ``generate_latest`` after the per-account exposition of
``exporter.metrics``.

To add an exporter-wide family: declare it in ``SelfMetrics.__init__`` (its name, HELP, labels),
as an attribute the code that feeds it can reach (the poller holds the ``SelfMetrics``), and add
its name to README's metrics table. ``names()`` picks it up for ``metrics.METRIC_NAMES``.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.errors import ApiErrorReason

# The outcome label of a request: success, or why it failed (a bounded set, all exposed at 0).
SUCCESS = "success"
OUTCOMES = (SUCCESS, *(r.value for r in ApiErrorReason))
DEFAULT_TIMEOUT = 15.0
_LADDER = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0)


def request_buckets(timeout: float) -> tuple[float, ...]:
    """Histogram buckets from 50 ms up to the request timeout (and the timeout itself)."""
    return (*(b for b in _LADDER if b < timeout), timeout)


class SelfMetrics:
    """The exporter-wide metrics of one process; ``registry`` holds them in exposition order.

    ``loop_lag`` (``--debug.loop-lag``) is read at scrape time; without it, the family is not
    exposed at all.
    """

    def __init__(
        self,
        *,
        shard_index: int = 0,
        shard_count: int = 1,
        loop_lag: Callable[[], float] | None = None,
        request_timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        # The text format has no created timestamps: prometheus-client would write each
        # counter's and histogram's as an extra "<name>_created" gauge series.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.shard_index, self.shard_count = shard_index, shard_count
        # -- every exporter-wide family, in the order exposed ----------------------------------
        Gauge(
            "retargeting_exporter_build_info",
            "Always 1; the exporter's version and Python version.",
            ["version", "python_version"],
            registry=registry,
        ).labels(__version__, platform.python_version()).set(1)
        Gauge(
            "retargeting_exporter_shard_info",
            "Always 1; which shard of the accounts this replica polls.",
            ["shard_index", "shard_count"],
            registry=registry,
        ).labels(str(shard_index), str(shard_count)).set(1)
        self.accounts = Gauge(  # fed by the poller: at start and on every reload
            "retargeting_exporter_accounts", "Accounts this replica polls.", registry=registry
        )
        self.reload_successful = Gauge(  # fed by the daemon's reload
            "retargeting_exporter_config_last_reload_successful",
            "1 if the last configuration (re)load succeeded.",
            registry=registry,
        )
        self.reload_success_timestamp = Gauge(  # fed by the daemon's reload
            "retargeting_exporter_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration (re)load.",
            registry=registry,
        )
        self.internal_errors = Counter(  # fed by the poller: a poll that raised a bug
            "retargeting_exporter_internal_errors",
            "Unexpected errors inside the exporter while polling an account (bugs); see the logs.",
            registry=registry,
        )
        self._listener_families(registry)
        # Fed by the daemon: (file as its glob gave it, last load good) of each account file.
        self.account_files: Callable[[], Iterable[tuple[str, bool]]] = tuple
        registry.register(_AccountFiles(lambda: self.account_files()))
        self._request_families(registry, request_timeout)
        if loop_lag is not None:
            Gauge(
                LOOP_LAG,
                "Longest delay of the event loop (a 10ms timer firing late) within the "
                "--debug.loop-lag window.",
                registry=registry,
            ).set_function(loop_lag)
        # -------------------------------------------------------------------------------------
        ProcessCollector(registry=registry)
        self.reload_successful.set(1)

    def _listener_families(self, registry: CollectorRegistry) -> None:
        self.http_connections_rejected = Counter(  # fed by the listener
            HTTP_REJECTED,
            "Client connections closed at once, unread, because a connection limit was reached: "
            "per_client_limit (--web.max-connections-per-client) or max_connections "
            "(--web.max-connections).",
            ["reason"],
            registry=registry,
        )
        for reason in HTTP_REJECT_REASONS:
            self.http_connections_rejected.labels(reason)
        self.http_header_timeouts = Counter(  # fed by the listener
            "retargeting_exporter_http_header_timeouts",
            "Client connections closed because their request line and headers had not all "
            "arrived within --web.read-header-timeout.",
            registry=registry,
        )

    def _request_families(self, registry: CollectorRegistry, request_timeout: float) -> None:
        # Fed by the poller: every API request of the daemon, retries included. Its buckets
        # stay those of the timeout at start-up (a histogram's buckets cannot change).
        self.request_duration = Histogram(
            REQUEST_DURATION,
            "Duration of the exporter's API requests, retries included, by outcome: success "
            "or the reason of the failure.",
            ["outcome"],
            buckets=request_buckets(request_timeout),
            registry=registry,
        )
        for outcome in OUTCOMES:
            self.request_duration.labels(outcome)
        # Read at scrape time from the poller's schedule (Poller sets the function).
        self.polls_overdue = Gauge(
            "retargeting_exporter_polls_overdue",
            "Accounts whose poll is due but has not started (all polling capacity is busy).",
            registry=registry,
        )

    def render(self) -> bytes:
        """The exporter-wide part of the exposition (text format 0.0.4)."""
        return generate_latest(self.registry)

    def names(self) -> frozenset[str]:
        """The name of every ``retargeting_`` family declared above (``_total`` on counters)."""
        return frozenset(
            family.name + ("_total" if family.type == "counter" else "")
            for family in self.registry.collect()
            if family.name.startswith("retargeting_")
        )


LOOP_LAG = "retargeting_exporter_event_loop_lag_seconds"
HTTP_REJECTED = "retargeting_exporter_http_connections_rejected"
# Why the listener closed a connection at once: the label values of the rejected counter.
HTTP_REJECT_REASONS = ("per_client_limit", "max_connections")


ACCOUNT_FILE_OK = "retargeting_exporter_account_file_last_load_successful"


class _AccountFiles(Collector):
    """One series per matched account file, built fresh on every scrape (files come and go)."""

    def __init__(self, files: Callable[[], Iterable[tuple[str, bool]]]) -> None:
        self._files = files

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            ACCOUNT_FILE_OK,
            "1 if the account file was read and every account in it applied at the last load, "
            "else 0.",
            labels=["file"],
        )
        for file, ok in self._files():
            family.add_metric([file], int(ok))
        yield family


REQUEST_DURATION = "retargeting_api_request_duration_seconds"
