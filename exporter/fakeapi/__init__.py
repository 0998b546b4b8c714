"""A faithful local stand-in for the Retargeting "Traffic Source" partners API.

It answers like the vendor documents (see ``retargeting-api.md``): the same query parameters,
the same success and error bodies, the 30-day rule. The figures are a deterministic function of
``(seed, source, date_from, date_to)`` (:func:`traffic_rows`), so a test or the backfill can compute
the answer to any window without asking. On top of that it can misbehave on demand
(:class:`Fault`), per key or for every request, to prove the exporter survives what the vendor
did not document.

Used by ``--demo``, by the test suite and by the benchmarks. The package's rooms: ``accounts``
(who the vendor serves), ``figures`` (what it reports), ``vendor`` (its documented rules),
``faults`` (misbehaviour on demand), ``server`` (:class:`FakeApi` on aiohttp's server) and
``command`` (``python -m exporter.fakeapi --port 8080`` serves the demo accounts until
interrupted). Everything a user of the fake needs is importable from here.
"""

from exporter.fakeapi.accounts import (
    DEMO_REVOKED_KEY,
    DOCUMENTED_SOURCES,
    AccountState,
    FakeAccount,
    demo_accounts,
    generated_accounts,
)
from exporter.fakeapi.command import main
from exporter.fakeapi.faults import Fault
from exporter.fakeapi.figures import success_body, traffic_rows
from exporter.fakeapi.server import FakeApi, RecordedRequest
from exporter.fakeapi.vendor import DOCUMENTED_EXAMPLE_ROWS, ENDPOINT_PATH, MAX_WINDOW_SECONDS

__all__ = [
    "DEMO_REVOKED_KEY",
    "DOCUMENTED_EXAMPLE_ROWS",
    "DOCUMENTED_SOURCES",
    "ENDPOINT_PATH",
    "MAX_WINDOW_SECONDS",
    "AccountState",
    "FakeAccount",
    "FakeApi",
    "Fault",
    "RecordedRequest",
    "demo_accounts",
    "generated_accounts",
    "main",
    "success_body",
    "traffic_rows",
]
