"""The fake vendor's client accounts: their states, and the sets the demo and benchmarks serve."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

DOCUMENTED_SOURCES: tuple[str, ...] = ("Newsletter", "Triggered Emails", "Rec. Engine", "Pop-ups")

#: The key the demo uses for its "revoked key" account; deliberately not served by the fake.
DEMO_REVOKED_KEY = "demo-key-revoked"


class AccountState(StrEnum):
    """The vendor's account states; the first three are served, the last two refused."""

    PAID = "paid"
    PAYMENT_ERROR = "payment_error"
    SUSPENDED = "suspended"
    INACTIVE = "inactive"
    CLOSED = "closed"

    @property
    def served(self) -> bool:
        """Whether the vendor answers with data for an account in this state."""
        return self in (AccountState.PAID, AccountState.PAYMENT_ERROR, AccountState.SUSPENDED)


@dataclass(frozen=True)
class FakeAccount:
    """One client account of the fake vendor."""

    rest_key: str
    state: AccountState = AccountState.PAID
    seed: int = 0
    sources: tuple[str, ...] = DOCUMENTED_SOURCES


def demo_accounts() -> list[FakeAccount]:
    """The accounts the ``--demo`` exporter config refers to by key.

    ``DEMO_REVOKED_KEY`` is deliberately absent, so it gets "Incorrect rest key!".
    """
    return [
        FakeAccount("demo-key-fashion", AccountState.PAID, seed=1),
        FakeAccount("demo-key-electronics", AccountState.PAID, seed=2),
        FakeAccount(
            "demo-key-garden",
            AccountState.PAYMENT_ERROR,
            seed=3,
            sources=(*DOCUMENTED_SOURCES, "SMS"),
        ),
        FakeAccount("demo-key-inactive", AccountState.INACTIVE, seed=4),
    ]


def generated_accounts(count: int) -> list[FakeAccount]:
    """``count`` paid accounts with keys ``key-00000``, ``key-00001``, ... and seed = index."""
    return [
        FakeAccount(f"key-{index:05d}", AccountState.PAID, seed=index) for index in range(count)
    ]
