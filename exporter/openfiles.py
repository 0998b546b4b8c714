"""The process's open-files limit: raised to the hard limit at start, as Go programs do.

Every client connection and every connection to the API holds a file descriptor. systemd
services and containerd 2 containers start with a soft limit of 1024; a flood of connections
then leaves none for polling. Go's runtime raises the soft limit to the hard one at start;
CPython does not, so the daemon does it here, and warns when even the hard limit leaves too
little room.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

try:
    import resource
except ImportError:  # not on Windows: no limit to raise there
    resource = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

# Descriptors the process needs besides client and API connections: standard streams, the
# listening sockets, the event loop's own, worker threads, files read on reload.
RESERVED = 64
# Fewer client connections than this is too few: Prometheus replicas, a browser, probes, curls.
MIN_CLIENT_CONNECTIONS = 128


@dataclass(frozen=True)
class OpenFilesLimit:
    """The soft and hard ``RLIMIT_NOFILE`` (None: unlimited or unknown)."""

    soft: int | None
    hard: int | None

    def room_for_clients(self, api_connections: int) -> int | None:
        """Client connections that fit beside the API's and the reserve (None: no bound)."""
        if self.soft is None:
            return None
        return max(0, self.soft - RESERVED - api_connections)


def _value(limit: int) -> int | None:
    return None if resource is None or limit == resource.RLIM_INFINITY else limit


def raise_open_files_limit() -> OpenFilesLimit:
    """Raise the soft open-files limit to the hard one; return the limits now in force."""
    if resource is None:
        return OpenFilesLimit(None, None)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    before = soft
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:  # e.g. an unlimited hard limit the kernel refuses
            log.debug("cannot raise the open-files limit", extra={"error": str(exc)})
    limit = OpenFilesLimit(_value(soft), _value(hard))
    log.debug(
        "open-files limit",
        extra={"soft_at_start": _value(before), "soft": limit.soft, "hard": limit.hard},
    )
    return limit


def check_room(limit: OpenFilesLimit, api_connections: int, client_connections: int) -> None:
    """Warn when the limit leaves fewer descriptors than polling and the clients need."""
    room = limit.room_for_clients(api_connections)
    if room is None:
        return
    wanted = max(client_connections, MIN_CLIENT_CONNECTIONS)
    if room < wanted:
        log.warning(
            "the open-files limit is too low: raise it (systemd LimitNOFILE=, "
            "docker --ulimit nofile=, ulimit -n) or lower api.max_concurrency",
            extra={
                "open_files_limit": limit.soft,
                "api_connections": api_connections,
                "client_connections": wanted,
                "reserved": RESERVED,
            },
        )
