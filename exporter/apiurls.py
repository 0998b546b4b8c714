"""The API's URLs: checking the API URL and user agent, and a proxy URL that hides its password."""

from __future__ import annotations

import base64
import urllib.parse
from dataclasses import dataclass


def _split_url(url: str) -> urllib.parse.SplitResult:
    """``url`` in parts; a ``ValueError`` whose text quotes nothing of the URL if it has none.

    urllib's own messages may quote parts of the URL (a password, when a ``/`` in it cut the
    authority short), so only its fixed texts are passed on.
    """
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError as exc:
        fixed = str(exc) == "Port out of range 0-65535"
        raise ValueError(str(exc) if fixed else "its host and port cannot be read") from None
    return parts


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be the API URL (None: it can)."""
    try:
        parts = _split_url(url)
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be http:// or https:// with a host"
    if parts.username is not None or parts.password is not None:
        return "must not carry a user name or password"
    if not url.isascii() or any(c.isspace() for c in url):
        return "must be ASCII without spaces (percent-encode the rest)"
    return None


def user_agent_problem(user_agent: str) -> str | None:
    """Why ``user_agent`` cannot be sent as a header (None: it can)."""
    if not user_agent.isprintable():
        return "must be printable text on one line"
    return None


# Characters yarl (aiohttp's URL type) leaves unencoded in a user name or password: encoding
# with this set gives the one spelling that aiohttp sends and prints.
_USERINFO_SAFE = "!$&'()*+,;="
_PROXY_FORM = "http://[user:password@]host[:port]"


@dataclass(frozen=True, repr=False)
class ProxyUrl:
    """An HTTP proxy for the API requests (``api.proxy_url``). Its ``str``/``repr`` never show
    the user name or password: ``http://proxy.example:3128 (with credentials)``.
    """

    host: str
    port: int = 80  # as aiohttp, and every HTTP client, assumes without one
    username: str = ""  # percent-decoded; "" without credentials
    password: str = ""  # percent-decoded

    @classmethod
    def parse(cls, text: str) -> ProxyUrl:
        """Check and split ``http://[user:password@]host[:port]``; ``ValueError`` if it is not
        one, with a message that quotes nothing of ``text`` (it may hold the password)."""
        if not text.isascii() or any(c.isspace() for c in text):
            raise ValueError("must be ASCII without spaces (percent-encode the rest)")
        try:
            parts = _split_url(text)
        except ValueError as exc:
            unread = "@" in text and not str(exc).startswith("Port out of range")
            hint = "; percent-encode / ? # @ : in the user name and password" if unread else ""
            raise ValueError(f"is not a valid URL ({exc}{hint})") from None
        # TLS to the proxy itself would protect only the proxy's credentials (the API traffic
        # is TLS end to end inside CONNECT), and no proxy the tests run speaks it: refused.
        if parts.scheme == "https":
            raise ValueError(
                "must be an http:// URL: https:// proxies (TLS to the proxy itself) are not "
                "supported; requests to an https:// api.url travel encrypted through the "
                "proxy's CONNECT tunnel all the same"
            )
        if parts.scheme != "http":
            raise ValueError("must be an http:// URL such as http://proxy.example:3128")
        if not parts.hostname:
            raise ValueError(f"must name the proxy's host: {_PROXY_FORM}")
        if parts.path not in ("", "/") or "?" in text or "#" in text:
            raise ValueError(f"must not have a path, query or fragment: {_PROXY_FORM}")
        if parts.port == 0:
            raise ValueError("is not a valid URL (port 0; use a port from 1 to 65535)")
        username = urllib.parse.unquote(parts.username or "")
        password = urllib.parse.unquote(parts.password or "")
        if ":" in username:
            raise ValueError("the user name must not contain ':' (Basic authentication cannot)")
        try:
            f"{username}:{password}".encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError(
                "the user name and password must be Latin-1 text once percent-decoded "
                "(the proxy receives them by Basic authentication)"
            ) from None
        return cls(parts.hostname, parts.port or 80, username, password)

    @property
    def _address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def reveal(self) -> str:
        """The URL with its credentials, for aiohttp only; never print or log it."""
        userinfo = ""
        if self.username or self.password:
            userinfo = urllib.parse.quote(self.username, safe=_USERINFO_SAFE)
            if self.password:
                userinfo += ":" + urllib.parse.quote(self.password, safe=_USERINFO_SAFE)
            userinfo += "@"
        return f"http://{userinfo}{self._address}"

    def __str__(self) -> str:
        credentials = " (with credentials)" if self.username or self.password else ""
        return f"http://{self._address}{credentials}"

    __repr__ = __str__


def proxy_secrets(proxy: ProxyUrl) -> list[str]:
    """The proxy password in every spelling a line could hold: as is, percent-encoded (as
    aiohttp writes it, and fully), ``user:password``, and that in base64 (the header)."""
    if not proxy.password:
        return []
    pair = f"{proxy.username}:{proxy.password}"
    spellings = [
        proxy.password,
        urllib.parse.quote(proxy.password, safe=_USERINFO_SAFE),
        urllib.parse.quote(proxy.password, safe=""),
        pair,
        base64.b64encode(pair.encode("latin-1")).decode("ascii"),
    ]
    return list(dict.fromkeys(spellings))
