"""Shared fixtures."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

# Make `tests.tooling` importable as `tooling` from every test module.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from exporter.client import TrafficSourceClient
from exporter.config import ApiConfig


class Clients:
    """API clients made by a test, all closed when it ends (the ``clients`` fixture)."""

    def __init__(self) -> None:
        self.made: list[TrafficSourceClient] = []

    def new(self, url: str, *, timeout: float = 2.0, user_agent: str = "t") -> TrafficSourceClient:
        client = TrafficSourceClient(url, timeout=timeout, user_agent=user_agent)
        self.made.append(client)
        return client

    def for_api(self, api: ApiConfig) -> TrafficSourceClient:
        """The client the daemon would make for this ``api:`` section."""
        client = TrafficSourceClient.for_api(api)
        self.made.append(client)
        return client

    async def close(self) -> None:
        for client in self.made:
            await client.close()


@pytest.fixture
async def clients() -> AsyncIterator[Clients]:
    made = Clients()
    yield made
    await made.close()
