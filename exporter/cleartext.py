"""A rest key sent over plain ``http://`` to another machine: warn, naming the account.

Loopback (the fake API, a local TLS-terminating proxy) is not worth a word. Elsewhere the key
travels in the request's query string, readable by anyone on the path, so the operator hears it
once at start and again only when a reload sends a key in clear that was not sent so before.
"""

from __future__ import annotations

import ipaddress
import logging
import urllib.parse

from exporter.config import Config, RestKey

log = logging.getLogger("exporter")


def _remote_http_host(url: str) -> str | None:
    """The host of a plain-``http://`` URL that leaves the machine; None otherwise."""
    parts = urllib.parse.urlsplit(url)
    host = (parts.hostname or "").rstrip(".")
    if parts.scheme != "http" or not host:
        return None
    if host == "localhost" or host.endswith(".localhost"):  # RFC 6761: always loopback
        return None
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:  # a name: it may resolve anywhere
        pass
    return host


def _in_clear(config: Config) -> dict[str, tuple[str, RestKey]]:
    """Account name -> (host, key) of every key ``config`` sends in clear."""
    host = _remote_http_host(config.api.url)
    if host is None:
        return {}
    return {a.name: (host, a.rest_key) for a in config.accounts}


def keys_in_clear(config: Config, before: Config | None = None) -> dict[str, str]:
    """Account name -> API host of every key ``config`` sends in clear that ``before`` (the
    running configuration, on a reload) did not send so."""
    known = _in_clear(before) if before is not None else {}
    return {
        name: host
        for name, (host, key) in _in_clear(config).items()
        if known.get(name) != (host, key)
    }


def warn_keys_in_clear(config: Config, before: Config | None = None) -> None:
    """Log :func:`keys_in_clear`, one warning per account; never the key."""
    for name, host in keys_in_clear(config, before).items():
        log.warning(
            "rest key sent in clear: api.url is http://, anyone on the network path can read "
            "the key; use https://",
            extra={"account": name, "api_host": host},
        )
