"""How a request to the API failed: ``ApiErrorReason`` (the bounded label) and ``ApiError``.

Shared by the client that raises them and by the rooms that count and show them (fetch,
snapshot, store, metrics, backfill); it imports no HTTP client.
"""

from __future__ import annotations

from enum import StrEnum


class ApiErrorReason(StrEnum):
    """Why a request failed: the bounded ``reason`` label of the error counter."""

    INVALID_KEY = "invalid_key"
    ACCOUNT_INACTIVE = "account_inactive"
    INTERVAL_TOO_LONG = "interval_too_long"
    VALIDATION_FAILED = "validation_failed"
    API_ERROR = "api_error"
    RATE_LIMITED = "rate_limited"
    HTTP_ERROR = "http_error"
    TIMEOUT = "timeout"
    CONNECTION_ERROR = "connection_error"
    INVALID_RESPONSE = "invalid_response"

    @property
    def transient(self) -> bool:
        """Worth retrying within the same poll (the next attempt may well succeed)."""
        return self in _TRANSIENT


_TRANSIENT = frozenset(
    {
        ApiErrorReason.API_ERROR,
        ApiErrorReason.RATE_LIMITED,
        ApiErrorReason.HTTP_ERROR,
        ApiErrorReason.TIMEOUT,
        ApiErrorReason.CONNECTION_ERROR,
        ApiErrorReason.INVALID_RESPONSE,
    }
)


class ApiError(Exception):
    """A failed request. ``message`` is safe to log and show: it never holds the key or URL."""

    def __init__(
        self,
        reason: ApiErrorReason,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.status = status
        self.retry_after = retry_after

    @property
    def transient(self) -> bool:
        # A 4xx without a vendor body (other than 429) will not change by retrying.
        if self.reason is ApiErrorReason.HTTP_ERROR and self.status is not None:
            return self.status >= 500
        return self.reason.transient
