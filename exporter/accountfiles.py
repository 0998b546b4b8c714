"""Where the accounts come from: the main file and its account files, each account on its own.

The main configuration file is all or nothing (a bad one is refused whole). The files that its
``account_files`` patterns match are not: like Prometheus's ``file_sd``, a file that cannot be
read keeps the accounts it gave last time, and within a readable file every account is checked
on its own, a bad one keeping its last good version (or staying out if it is new). Each problem
is logged once, when it appears. :class:`ConfigSource` also says whether anything it read has
changed since (:meth:`ConfigSource.changed`): by content, so a Kubernetes volume's ``..data``
symlink swap, an in-place rewrite and a new or removed file are all seen.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

from exporter.config import (
    AccountConfig,
    Config,
    account_path,
    parse_account,
    parse_config,
    readable_secret_warnings,
)
from exporter.yamlcheck import ConfigError, Problems, kind, read_yaml_file, unreadable

log = logging.getLogger(__name__)


class Problem(NamedTuple):
    """A problem of an account file: the account it concerns ("" for the file) and the text."""

    account: str
    text: str


@dataclass(frozen=True)
class FileLoad:
    """One account file as last loaded: the accounts it gives and the problems it has."""

    file: str  # as the glob gave it (relative patterns: relative to the config's folder)
    accounts: tuple[AccountConfig, ...] = ()  # in force: good ones and kept last good ones
    problems: tuple[Problem, ...] = ()

    @property
    def ok(self) -> bool:
        """Read, and every account in it applied."""
        return not self.problems


@dataclass
class _Entry:
    """One account of an account file on its way to the merged set."""

    place: str  # file[2] (name)
    name: str | None  # None: no readable name
    account: AccountConfig | None  # None: bad
    problems: list[str] = field(default_factory=list)
    owns_name: bool = True  # False: another entry has the name


def _name(item: Any) -> str | None:
    name = item.get("name") if isinstance(item, dict) else None
    return name if isinstance(name, str) and name.strip() else None


def expand(patterns: Iterable[str], base: Path) -> list[str]:
    """The files the patterns match, sorted, each once; relative ones as given by the glob."""
    found: dict[str, None] = {}
    for pattern in patterns:
        for match in sorted(glob.glob(pattern, root_dir=base)):
            if (base / match).is_file():  # a matched folder is no account file
                found.setdefault(match, None)
    return list(found)


def _key_file(item: Any, base: Path) -> str | None:
    """The rest_key_file an entry names, resolved (also when the entry is bad otherwise)."""
    value = item.get("rest_key_file") if isinstance(item, dict) else None
    if not isinstance(value, str) or not value or "\0" in value:
        return None
    return str(base / value)


# A file changed this recently may change again within the same timestamp tick, unseen by its
# metadata: its digest is not reused (git's "racily clean" rule).
_RACY_NS = 2_000_000_000


class _Digests:
    """Each file's content digest, read again only when its metadata changed.

    Any write changes a file's ctime (which no one can set back) and a Kubernetes volume swap
    changes the inode: with thousands of key files, a check costs a ``stat`` per file, and the
    content is hashed only when that moved.
    """

    def __init__(self) -> None:
        self._known: dict[str, tuple[tuple[int, ...], bytes]] = {}

    def __call__(self, path: Path) -> bytes:
        try:
            st = path.stat()
            meta = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            known = self._known.get(str(path))
            if known is not None and known[0] == meta:
                return known[1]
            digest = hashlib.sha256(path.read_bytes()).digest()
        except OSError:  # missing or unreadable: a state of its own, compared like content
            self._known.pop(str(path), None)
            return b"-"
        if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > _RACY_NS:
            self._known[str(path)] = (meta, digest)
        return digest

    def forget_all_but(self, paths: set[str]) -> None:
        self._known = {p: v for p, v in self._known.items() if p in paths}


class ConfigSource:
    """The configuration file and its account files, loaded with per-account isolation.

    ``load`` raises ``ConfigError`` only for the main file; every account file problem is
    logged once and shown by ``files`` (and the metric built from it).

    Not thread-safe: ``load`` and ``changed`` keep caches (digests, parsed files, last good
    accounts), so one thread calls them, one call at a time (the daemon's ``ConfigThread``).
    ``files`` may be read from any thread.
    """

    def __init__(self, path: str | Path, env: Mapping[str, str] | None = None) -> None:
        self.path = Path(path)
        self._env = env
        self._base = self.path.parent
        self._patterns: tuple[str, ...] = ()
        self._key_files: frozenset[str] = frozenset()
        self._files: dict[str, FileLoad] = {}
        self._file_keys: dict[str, set[str]] = {}  # the rest_key_files each file names
        self._warnings: dict[str, tuple[str, ...]] = {}  # literal keys readable by others
        self._loaded: bytes | None = None
        self._digest = _Digests()
        self._parsed: dict[str, tuple[bytes, Any]] = {}  # file -> (its bytes' digest, its YAML)

    @property
    def files(self) -> list[FileLoad]:
        """Every matched account file as last loaded, in glob order.

        Safe from any thread: a load replaces the mapping whole, never changes it in place.
        """
        return list(self._files.values())

    def changed(self) -> bool:
        """Has any file read by the last load (or a file the patterns match now) changed?"""
        return self._loaded is not None and self._fingerprint() != self._loaded

    def load(self) -> Config:
        """The merged configuration; ``ConfigError`` if the main file is bad (nothing changes)."""
        before = self._fingerprint()
        self._loaded = before
        env = os.environ if self._env is None else self._env
        _, data = read_yaml_file(self.path)
        raw_accounts = data.get("accounts") if isinstance(data, dict) else None
        main_keys = {
            k for item in (raw_accounts if isinstance(raw_accounts, list) else [])
            if (k := _key_file(item, self._base)) is not None
        }  # fmt: skip
        self._key_files = self._key_files | main_keys  # a key file the main file waits for
        main = parse_config(data, source=str(self.path), env=env, base_dir=self._base)
        self._patterns = main.account_files
        entries = {f: self._read(f, main, env) for f in expand(main.account_files, self._base)}
        accounts = self._merge(main, entries)
        watched = main_keys | {k for file in self._files for k in self._file_keys.get(file, ())}
        if watched != self._key_files:  # the new key files' contents, as now: later changes count
            self._key_files = frozenset(watched)
            self._loaded = self._fingerprint()
        warnings = (*main.warnings, *(w for f in self._files for w in self._warnings.get(f, ())))
        return replace(main, accounts=(*main.accounts, *accounts), warnings=warnings)

    # -- one account file ----------------------------------------------------------------------

    def _read(self, file: str, main: Config, env: Mapping[str, str]) -> list[_Entry] | str:
        """The entries of one file, or why it cannot be read at all."""
        path = self._base / file
        try:
            data = self._yaml(file, path)
        except ConfigError as exc:
            return f"{file}: {'; '.join(exc.problems)}"
        if data is None:
            data = []  # an empty file: no accounts, as for file_sd
        if not isinstance(data, list):
            return f"{file}: must be a YAML list of accounts (as under accounts:), got {kind(data)}"
        if bad := list(unreadable(data)):
            return f"{file}: {'; '.join(bad)}"
        folder = path.parent
        self._file_keys[file] = {k for item in data if (k := _key_file(item, folder))}
        self._warnings[file] = tuple(readable_secret_warnings(data, None, str(path)))
        in_force = {a.name: a for a in self._files[file].accounts} if file in self._files else {}
        entries = []
        for i, item in enumerate(data):
            place = account_path(file, i, item)
            problems = Problems()
            account = parse_account(item, place, main.defaults, env, folder, problems)
            if account is not None and in_force.get(account.name) == account:
                # Unchanged: the copy in force is kept and the new one freed at once, so a reload
                # of thousands of accounts leaves little for the garbage collector's full passes.
                account = in_force[account.name]
            entries.append(_Entry(place, _name(item), account, problems.items))
        return entries

    def _yaml(self, file: str, path: Path) -> Any:
        """The file's YAML, parsed again only when its content changed (parsing is most of a
        load, and a change usually touches one file of many)."""
        try:
            digest = hashlib.sha256(path.read_bytes()).digest()
        except OSError:
            digest = b""
        cached = self._parsed.get(file)
        if cached is not None and cached[0] == digest:
            return cached[1]
        raw, data = read_yaml_file(path)
        self._parsed[file] = (hashlib.sha256(raw).digest(), data)
        return data

    # -- merging -------------------------------------------------------------------------------

    def _merge(self, main: Config, read: Mapping[str, list[_Entry] | str]) -> list[AccountConfig]:
        """One set of accounts from every file: each name once, bad ones as they were."""
        previous = self._files
        owner_before = {a.name: f for f, load in previous.items() for a in load.accounts}
        # The main file is all or nothing: each of its accounts is at its index there.
        taken = {
            a.name: f"accounts[{i}] ({a.name}) in {main.source}"
            for i, a in enumerate(main.accounts)
        }
        files: dict[str, tuple[list[_Entry], str]] = {}
        for file, got in read.items():
            if isinstance(got, str):  # unreadable: every account it gave last time stays
                kept = previous.get(file, FileLoad(file)).accounts
                files[file] = ([_Entry(f"{file} (last good)", a.name, a) for a in kept], got)
            else:
                files[file] = (got, "")
        claims: dict[str, list[tuple[str, _Entry]]] = {}
        for file, (entries, _) in files.items():
            for entry in entries:
                if entry.name is not None:
                    claims.setdefault(entry.name, []).append((file, entry))
        for name, claimants in claims.items():
            # The account's file so far keeps it; else the first file in glob order.
            winner = next((e for f, e in claimants if f == owner_before.get(name)), claimants[0][1])
            where = taken.get(name, winner.place)
            for _, entry in claimants:
                if entry is not winner or name in taken:
                    entry.problems.append(
                        f"{entry.place}.name: {name!r} is already used by {where}"
                    )
                    entry.account, entry.owns_name = None, False
        loads: dict[str, FileLoad] = {}
        for file, (entries, unread) in files.items():
            old = {a.name: a for a in previous.get(file, FileLoad(file)).accounts}
            problems = [Problem("", unread)] if unread else []
            accounts = []
            for entry in entries:
                problems.extend(Problem(entry.name or "", p) for p in entry.problems)
                if entry.account is not None:
                    accounts.append(entry.account)
                elif entry.owns_name and entry.name in old:
                    accounts.append(old[entry.name])  # its last good version
            loads[file] = FileLoad(file, tuple(accounts), tuple(problems))
        self._report(loads)
        self._files = loads
        self._file_keys = {f: k for f, k in self._file_keys.items() if f in loads}
        self._warnings = {f: w for f, w in self._warnings.items() if f in loads}
        self._parsed = {f: v for f, v in self._parsed.items() if f in loads}
        return [a for load in loads.values() for a in load.accounts]

    def _report(self, loads: Mapping[str, FileLoad]) -> None:
        """Each problem once, when it appears; a file that is good again once."""
        for file, load in loads.items():
            before = self._files.get(file)
            seen = set(before.problems) if before is not None else set()
            for problem in load.problems:
                if problem not in seen:
                    log.warning(
                        "account file problem; its other accounts apply",
                        extra={"file": file, "account": problem.account, "problem": problem.text},
                    )
            if load.ok and before is not None and not before.ok:
                log.info("account file valid again", extra={"file": file})

    # -- change detection ----------------------------------------------------------------------

    def _fingerprint(self) -> bytes:
        files = [self.path, *(self._base / f for f in expand(self._patterns, self._base))]
        files.extend(Path(key_file) for key_file in sorted(self._key_files))
        digest = hashlib.sha256()
        for path in files:
            digest.update(str(path).encode() + b"\0" + self._digest(path))
        self._digest.forget_all_but({str(path) for path in files})
        return digest.digest()


def describe(files: Iterable[FileLoad]) -> Iterator[str]:
    """``--config.check`` lines: each account file, its accounts, its problems."""
    for load in files:
        names = ", ".join(a.name for a in load.accounts) or "no accounts"
        state = "valid" if load.ok else f"{len(load.problems)} problem(s)"
        yield f"  {load.file}: {state}; {names}"
        yield from (f"    - {p.text}" for p in load.problems)
