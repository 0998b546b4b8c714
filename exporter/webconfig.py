"""The ``--web.config.file``: TLS, basic auth and response headers for the exporter's own endpoints.

The file has the Prometheus exporter-toolkit format (the subset that matters here), so one file
can serve this exporter and Go exporters alike. Parsing reports every problem with its path in
one ``ConfigError``. While the daemon runs, a ``WebGuard`` re-reads the file, and the certificate,
key and CA files it names, whenever one of them changes (checked every second): certificates
rotate and users change without a restart, as with the toolkit. A change that does not validate
is rejected with a logged reason and the configuration in force stays.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import re
import secrets
import ssl
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import bcrypt
from aiohttp import hdrs, web

from exporter.yamlcheck import ConfigError, Problems, kind, mapping, read_yaml_file

log = logging.getLogger(__name__)

# client_auth_type → what the server asks of clients, for the types Python's ssl module can
# serve with the toolkit's meaning. It verifies every certificate it asks for, so the two that
# ask without verifying are refused (their meaning and a replacement in _REFUSED_CLIENT_AUTH).
CLIENT_AUTH_TYPES: Mapping[str, ssl.VerifyMode] = MappingProxyType(
    {
        "NoClientCert": ssl.CERT_NONE,
        "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
        "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
    }
)
_REFUSED_CLIENT_AUTH: Mapping[str, str] = MappingProxyType(
    {
        "RequestClientCert": "ask for a certificate, never check it; use NoClientCert, or "
        "VerifyClientCertIfGiven with client_ca_file",
        "RequireAnyClientCert": "demand a certificate, never check it; use "
        "RequireAndVerifyClientCert with client_ca_file",
        # The toolkit's older spelling of RequireAnyClientCert.
        "RequireClientCert": "demand a certificate, never check it; use "
        "RequireAndVerifyClientCert with client_ca_file",
    }
)
TLS_VERSIONS: Mapping[str, ssl.TLSVersion] = MappingProxyType(
    {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
)
# The headers the toolkit lets a web config set, with the allowed values where they are an
# enumeration (None: any value). Kept identical so one file works for every exporter.
ALLOWED_HEADERS: Mapping[str, tuple[str, ...] | None] = MappingProxyType(
    {
        "Strict-Transport-Security": None,
        "X-Content-Type-Options": ("nosniff",),
        "X-Frame-Options": ("deny", "sameorigin"),
        "X-XSS-Protection": None,
        "Content-Security-Policy": None,
    }
)

_TOP_KEYS = {"tls_server_config", "http_server_config", "basic_auth_users"}
_TLS_KEYS = {
    "cert_file", "key_file", "client_ca_file", "client_auth_type", "min_version", "max_version",
    "prefer_server_cipher_suites",
}  # fmt: skip
_HTTP_KEYS = {"headers", "http2"}
# Toolkit options this exporter does not implement: an error, never silently ignored, since
# most of them tighten security.
_NOT_SUPPORTED = {
    "rate_limit": "",
    "auth_excluded_paths": " (/-/healthy and /-/ready never ask for credentials; "
    "every other path does)",
    "tls_server_config.cert": " (give cert_file)",
    "tls_server_config.key": " (give key_file)",
    "tls_server_config.client_ca": " (give client_ca_file)",
    "tls_server_config.cipher_suites": " (the TLS library's defaults are used)",
    "tls_server_config.curve_preferences": " (the TLS library's defaults are used)",
    "tls_server_config.client_allowed_sans": "",
}
_BCRYPT_HASH = re.compile(r"^\$2[aby]?\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}$")
AUTHENTICATE = 'Basic realm="retargeting-exporter", charset="UTF-8"'


@dataclass(frozen=True)
class TlsServerConfig:
    """``tls_server_config``: the server's certificate and what it asks of clients."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None
    client_auth_type: str = "NoClientCert"
    min_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    max_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3

    @property
    def verify_mode(self) -> ssl.VerifyMode:
        return CLIENT_AUTH_TYPES[self.client_auth_type]

    def files(self) -> tuple[Path, ...]:
        return (self.cert_file, self.key_file) + (
            (self.client_ca_file,) if self.client_ca_file else ()
        )


Signature = tuple[bytes | None, ...]


@dataclass(frozen=True)
class WebConfig:
    """A validated web configuration; ``ssl_context`` holds the loaded certificate (TLS only)."""

    source: str
    tls: TlsServerConfig | None = None
    users: Mapping[str, bytes] = field(default_factory=dict)  # user name → bcrypt hash
    headers: Mapping[str, str] = field(default_factory=dict)
    ssl_context: ssl.SSLContext | None = field(default=None, compare=False, repr=False)
    # Digests of ``files()`` as they were before being read: a change during loading is seen.
    signature: Signature = field(default=(), compare=False, repr=False)

    def files(self) -> tuple[Path, ...]:
        """Every file whose change means a reload: the web config and the TLS files it names."""
        return (Path(self.source), *(self.tls.files() if self.tls else ()))

    def describe(self) -> str:
        """One line for ``--config.check`` and the logs; no hashes."""
        if self.tls is None:
            tls = "off (plain HTTP)"
        else:
            version = next(k for k, v in TLS_VERSIONS.items() if v == self.tls.min_version)
            tls = f"on (min_version {version}, client_auth_type {self.tls.client_auth_type})"
        users = f"{len(self.users)} user(s)" if self.users else "off"
        headers = ", ".join(self.headers) or "none"
        return f"TLS {tls}; basic auth {users}; headers {headers}"


def _file(raw: dict[str, Any], key: str, base: Path, problems: Problems) -> Path | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        problems.add(f"tls_server_config.{key}", f"must be a file name, got {kind(value)}")
        return None
    path = Path(value)
    return path if path.is_absolute() else base / path


def _version(raw: dict[str, Any], key: str, default: ssl.TLSVersion, problems: Problems) -> Any:
    value = raw.get(key)
    if value is None:
        return default
    if value in TLS_VERSIONS:
        return TLS_VERSIONS[value]
    reason = "is no longer safe" if value in ("TLS10", "TLS11") else "is not a TLS version"
    problems.add(f"tls_server_config.{key}", f"{value!r} {reason}: use TLS12 or TLS13")
    return default


def _parse_tls(value: Any, base: Path, problems: Problems) -> TlsServerConfig | None:
    raw = mapping(value, "tls_server_config", problems, _TLS_KEYS, not_supported=_NOT_SUPPORTED)
    if not raw:
        return None
    before = len(problems.items)
    cert = _file(raw, "cert_file", base, problems)
    key = _file(raw, "key_file", base, problems)
    ca = _file(raw, "client_ca_file", base, problems)
    for name, path in (("cert_file", cert), ("key_file", key)):
        if path is None and name not in raw:
            problems.add(f"tls_server_config.{name}", "is required to serve TLS")
    auth = raw.get("client_auth_type", "NoClientCert")
    where = "tls_server_config.client_auth_type"
    if auth in _REFUSED_CLIENT_AUTH:
        meaning, _, instead = _REFUSED_CLIENT_AUTH[auth].partition("; ")
        problems.add(
            where,
            f"{auth} ({meaning}) cannot be served: Python's ssl module verifies every client "
            f"certificate it asks for; {instead}",
        )
    elif auth not in CLIENT_AUTH_TYPES:
        problems.add(where, f"{auth!r} is not one of {', '.join(CLIENT_AUTH_TYPES)}")
    elif CLIENT_AUTH_TYPES[auth] != ssl.CERT_NONE and ca is None:
        problems.add("tls_server_config.client_ca_file", f"is required with {auth}")
    elif CLIENT_AUTH_TYPES[auth] == ssl.CERT_NONE and ca is not None:
        problems.add(
            "tls_server_config.client_ca_file",
            f"is set but client_auth_type {auth} never checks client certificates: "
            "use VerifyClientCertIfGiven or RequireAndVerifyClientCert",
        )
    low = _version(raw, "min_version", ssl.TLSVersion.TLSv1_2, problems)
    high = _version(raw, "max_version", ssl.TLSVersion.TLSv1_3, problems)
    if low > high:
        problems.add("tls_server_config.max_version", "must not be below min_version")
    prefer = raw.get("prefer_server_cipher_suites", True)
    if not isinstance(prefer, bool):
        problems.add("tls_server_config.prefer_server_cipher_suites", "must be true or false")
    if len(problems.items) != before or cert is None or key is None:
        return None
    return TlsServerConfig(cert, key, ca, auth, low, high)


def _parse_http(value: Any, problems: Problems) -> dict[str, str]:
    raw = mapping(value, "http_server_config", problems, _HTTP_KEYS, not_supported=_NOT_SUPPORTED)
    http2 = raw.get("http2", False)
    if not isinstance(http2, bool):
        problems.add("http_server_config.http2", "must be true or false")
    elif http2:
        problems.add(
            "http_server_config.http2",
            "true cannot be served: the exporter's server (aiohttp) speaks HTTP/1.1 only; "
            "set it to false or leave it out (scrapers fall back to HTTP/1.1)",
        )
    headers = raw.get("headers")
    if headers is None:
        return {}
    if not isinstance(headers, dict):
        problems.add("http_server_config.headers", f"must be a mapping, got {kind(headers)}")
        return {}
    out: dict[str, str] = {}
    for name, text in headers.items():
        where = f"http_server_config.headers.{name}"
        if name not in ALLOWED_HEADERS:
            problems.add(where, f"cannot be configured; allowed: {', '.join(ALLOWED_HEADERS)}")
        elif not isinstance(text, str) or not text or any(c in text for c in "\r\n"):
            problems.add(where, "must be a non-empty one-line string")
        elif (allowed := ALLOWED_HEADERS[name]) is not None and text not in allowed:
            problems.add(where, f"must be one of {', '.join(allowed)}, got {text!r}")
        else:
            out[name] = text
    return out


def _parse_users(value: Any, problems: Problems) -> dict[str, bytes]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.add("basic_auth_users", f"must map user names to bcrypt hashes, got {kind(value)}")
        return {}
    users: dict[str, bytes] = {}
    for name, hashed in value.items():
        where = f"basic_auth_users.{name}"
        if not isinstance(name, str) or not name or ":" in name:
            problems.add(where, "user names must be non-empty strings without ':' (quote them)")
        elif not isinstance(hashed, str) or not _BCRYPT_HASH.match(hashed):
            # Never echo the value: it might be a plain password by mistake.
            problems.add(
                where,
                "must be a bcrypt hash ($2b$/$2y$..., 60 characters), e.g. from "
                "`htpasswd -nBC 10 USER` or python -c 'import bcrypt; "
                'print(bcrypt.hashpw(b"PASSWORD", bcrypt.gensalt()).decode())\'',
            )
        else:
            users[name] = hashed.encode("ascii")
    return users


def parse_web_config(data: Any, *, source: str, base_dir: Path) -> WebConfig:
    """Validate loaded YAML; TLS files are not read (``load_web_config`` does that)."""
    problems = Problems()
    top = mapping(
        data, "", problems, _TOP_KEYS, top_level="(top level)", not_supported=_NOT_SUPPORTED
    )
    tls = _parse_tls(top.get("tls_server_config"), base_dir, problems)
    headers = _parse_http(top.get("http_server_config"), problems)
    users = _parse_users(top.get("basic_auth_users"), problems)
    if problems.items:
        raise ConfigError(source, problems.items)
    return WebConfig(
        source=source, tls=tls, users=MappingProxyType(users), headers=MappingProxyType(headers)
    )


class _EncryptedKeyError(Exception):
    pass


def _refuse_passphrase() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal and block the daemon.
    raise _EncryptedKeyError


def _read(path: Path, where: str, problems: Problems) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        problems.add(where, f"cannot read {path}: {exc.strerror or exc}")
        return None


def build_ssl_context(tls: TlsServerConfig, source: str) -> ssl.SSLContext:
    """A server context with the certificate, key and client CAs loaded; ``ConfigError`` if not."""
    problems = Problems()
    cert_text = _read(tls.cert_file, "tls_server_config.cert_file", problems)
    key_text = _read(tls.key_file, "tls_server_config.key_file", problems)
    ca_text = None
    if tls.client_ca_file is not None:
        ca_text = _read(tls.client_ca_file, "tls_server_config.client_ca_file", problems)
    if cert_text is not None and "-----BEGIN CERTIFICATE-----" not in cert_text:
        problems.add("tls_server_config.cert_file", f"{tls.cert_file} holds no PEM certificate")
    if key_text is not None:
        if "ENCRYPTED" in key_text:
            problems.add(
                "tls_server_config.key_file",
                f"{tls.key_file} is protected by a passphrase; give an unencrypted key "
                "and protect the file instead (mode 600)",
            )
        elif "PRIVATE KEY-----" not in key_text:
            problems.add("tls_server_config.key_file", f"{tls.key_file} holds no PEM private key")
    if ca_text is not None and "-----BEGIN CERTIFICATE-----" not in ca_text:
        problems.add(
            "tls_server_config.client_ca_file", f"{tls.client_ca_file} holds no PEM certificate"
        )
    if problems.items:
        raise ConfigError(source, problems.items)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    apply_policy(context, tls)
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file, password=_refuse_passphrase)
    except (ssl.SSLError, _EncryptedKeyError, OSError) as exc:
        detail = "the key is protected by a passphrase"
        if isinstance(exc, ssl.SSLError):
            detail = (
                "the key does not belong to the certificate"
                if exc.reason == "KEY_VALUES_MISMATCH"
                else f"not a usable PEM certificate and key ({exc.reason or exc})"
            )
        elif isinstance(exc, OSError):
            detail = str(exc.strerror or exc)
        where = "tls_server_config.key_file"
        problems.add(where, f"cannot use {tls.key_file} with {tls.cert_file}: {detail}")
    if ca_text is not None:
        try:
            context.load_verify_locations(cadata=ca_text)
        except ssl.SSLError as exc:
            problems.add(
                "tls_server_config.client_ca_file",
                f"{tls.client_ca_file}: not usable PEM certificates ({exc.reason or exc})",
            )
    if problems.items:
        raise ConfigError(source, problems.items)
    return context


def apply_policy(context: ssl.SSLContext, tls: TlsServerConfig) -> None:
    """Set what a context asks of clients: protocol versions and client certificates."""
    context.minimum_version = tls.min_version
    context.maximum_version = tls.max_version
    context.verify_mode = tls.verify_mode


def load_web_config(path: str | Path) -> WebConfig:
    """Read and validate the web config and load the TLS files it names."""
    path = Path(path)
    source = str(path)
    raw, data = read_yaml_file(path)
    config = parse_web_config(data, source=source, base_dir=path.parent)
    signature = (hashlib.sha256(raw).digest(), *file_signature(config.files()[1:]))
    context = build_ssl_context(config.tls, source) if config.tls is not None else None
    return replace(config, ssl_context=context, signature=signature)


# ------------------------------------------------------------------------------------------------
# The running guard


def _digest(path: Path) -> bytes | None:
    try:
        return hashlib.sha256(path.read_bytes()).digest()
    except OSError:
        return None


def file_signature(paths: Collection[Path]) -> Signature:
    """The files' current contents, digested. Contents, not mtimes: an in-place rewrite of a
    bcrypt hash keeps the size and may keep the mtime; a Secret update swaps symlinks."""
    return tuple(_digest(path) for path in paths)


class _CheckCache:
    """Results of recent bcrypt checks; keys are salted digests, never the credentials."""

    def __init__(self, size: int = 128) -> None:
        self._size = size
        self._salt = secrets.token_bytes(16)
        self._results: OrderedDict[bytes, bool] = OrderedDict()

    def key(self, user: str, hashed: bytes, password: str) -> bytes:
        digest = hashlib.sha256(self._salt)
        for part in (user.encode(), hashed, password.encode()):
            digest.update(len(part).to_bytes(4, "big") + part)
        return digest.digest()

    def get(self, key: bytes) -> bool | None:
        result = self._results.get(key)
        if result is not None:
            self._results.move_to_end(key)
        return result

    def put(self, key: bytes, result: bool) -> None:
        self._results[key] = result
        self._results.move_to_end(key)
        while len(self._results) > self._size:
            self._results.popitem(last=False)

    def clear(self) -> None:
        self._results.clear()


def _credentials(header: str) -> tuple[str, str] | None:
    """User and password from an ``Authorization: Basic`` header (None: not such a header)."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip().encode("ascii"), validate=True).decode("utf-8")
    except ValueError:  # binascii.Error and UnicodeError are ValueErrors
        return None
    user, colon, password = decoded.partition(":")
    return (user, password) if colon else None


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class WebGuard:
    """Applies the web config in force to connections (TLS) and requests (auth, headers).

    ``ssl_context`` is the listening context for the whole life of the server (aiohttp keeps the
    one it was given). Its SNI callback hands every new connection the most recently loaded
    certificate and client CAs; its own settings (versions, client certificate demand) are
    updated in place on reload, and apply to connections accepted afterwards.
    """

    def __init__(self, config: WebConfig, *, check_interval: float = 1.0) -> None:
        self._config = config
        self._signature = config.signature
        self._rejected: object = None  # signature of the last rejected change (log it once)
        self.check_interval = check_interval
        self._checks = _CheckCache()
        self._bcrypt_lock = asyncio.Lock()  # one bcrypt at a time: bounded CPU under attack
        self.bcrypt_checks = 0  # for tests: how often bcrypt ran
        self._listener: ssl.SSLContext | None = None
        if config.tls is not None and config.ssl_context is not None:
            listener = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            apply_policy(listener, config.tls)
            # Served only if the SNI callback were not called; it always is on OpenSSL ≥ 1.1.1.
            listener.load_cert_chain(config.tls.cert_file, config.tls.key_file, _refuse_passphrase)
            listener.sni_callback = self._select_context
            self._listener = listener

    @property
    def config(self) -> WebConfig:
        return self._config

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        """The context to listen with; None: plain HTTP."""
        return self._listener

    def _select_context(self, connection: ssl.SSLObject, _name: str | None, _: Any) -> None:
        context = self._config.ssl_context
        if context is not None:
            connection.context = context

    # -- reloading -----------------------------------------------------------------------------

    def refresh(self, *, force: bool = False) -> bool:
        """Re-read the files if any changed (``force``: always); True if a new config applies."""
        signature = file_signature(self._config.files())
        if not force and (signature == self._signature or signature == self._rejected):
            return False
        source = self._config.source
        try:
            new = load_web_config(source)
            if (new.tls is None) != (self._config.tls is None):
                state = "on" if new.tls else "off"
                raise ConfigError(
                    source, [f"tls_server_config: turning TLS {state} needs a restart"]
                )
            if self._config.users and not new.users:
                # Never by accident (a half-written file, a lost section): only by a restart.
                raise ConfigError(
                    source, ["basic_auth_users: turning authentication off needs a restart"]
                )
        except ConfigError as exc:
            if signature != self._rejected or force:
                log.error(
                    "web configuration change rejected, keeping the one in force",
                    extra={"error": str(exc)},
                )
            self._rejected = signature
            return False
        if self._listener is not None and new.tls is not None:
            apply_policy(self._listener, new.tls)
        self._config = new
        self._signature = new.signature
        self._rejected = None
        self._checks.clear()
        log.info("web configuration reloaded", extra={"web_config": new.describe()})
        return True

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.check_interval)
            self.refresh()

    async def watching(self, _app: web.Application) -> AsyncIterator[None]:
        """``cleanup_ctx``: watch the files while the application runs."""
        task = asyncio.create_task(self._watch(), name="web config watcher")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    # -- requests ------------------------------------------------------------------------------

    async def authorized(self, header: str | None) -> bool:
        """Whether an ``Authorization`` header satisfies ``basic_auth_users`` (none: anyone)."""
        users = self._config.users
        if not users:
            return True
        if not header:
            return False
        credentials = _credentials(header)
        if credentials is None:
            return False
        user, password = credentials
        hashed = users.get(user)
        known = hashed is not None
        # An unknown user costs one bcrypt check too, so timing does not reveal user names.
        checked = hashed if hashed is not None else next(iter(users.values()))
        key = self._checks.key(user, checked, password)
        result = self._checks.get(key)
        if result is None:
            async with self._bcrypt_lock:
                self.bcrypt_checks += 1
                ok = await asyncio.to_thread(bcrypt.checkpw, password.encode(), checked)
            result = ok and known
            self._checks.put(key, result)
        return result and known

    def install(self, app: web.Application, open_paths: Collection[str]) -> None:
        """Require credentials on every route but ``open_paths``; add the configured headers."""

        @web.middleware
        async def require_credentials(request: web.Request, handler: Handler) -> web.StreamResponse:
            # Decide on the route aiohttp resolved, not on the raw path, so no spelling of a
            # URL reaches a protected handler through an open path. Unknown paths ask too.
            resource = request.match_info.route.resource
            if resource is not None and resource.canonical in open_paths:
                return await handler(request)
            if not await self.authorized(request.headers.get(hdrs.AUTHORIZATION)):
                raise web.HTTPUnauthorized(
                    headers={hdrs.WWW_AUTHENTICATE: AUTHENTICATE}, text="401 Unauthorized\n"
                )
            return await handler(request)

        async def add_headers(_request: web.Request, response: web.StreamResponse) -> None:
            for name, value in self._config.headers.items():
                response.headers[name] = value

        app.middlewares.append(require_credentials)
        app.on_response_prepare.append(add_headers)
        app.cleanup_ctx.append(self.watching)
