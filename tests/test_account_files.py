"""Account files: loaded per account, the last good version kept, changes seen by content.

Everything here is real files in a temporary folder: account files, key files, and the layout
a Kubernetes Secret volume has (a timestamped folder, the ``..data`` symlink to it, each file a
symlink through ``..data``, updated by renaming a new ``..data`` over the old one).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter import accountfiles, cli
from exporter.accountfiles import ConfigSource
from exporter.config import Config, parse_config
from exporter.yamlcheck import ConfigError

ENV = {"KEY_MAIN": "key-main", "KEY_Y": "key-y"}


def write(path: Path, data: Any) -> None:
    """Replace the file at once (as editors and config management do)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    tmp.replace(path)


def main_file(folder: Path, accounts: list[dict[str, Any]] | None = None, **top: Any) -> Path:
    data: dict[str, Any] = {
        "api": {"url": "http://127.0.0.1:9"},
        "windows": ["24h"],
        "account_files": ["accounts.d/*.yaml"],
        **top,
    }
    if accounts is not None:
        data["accounts"] = accounts
    path = folder / "config.yaml"
    write(path, data)
    return path


def names(config: Config) -> list[str]:
    return [a.name for a in config.accounts]


def keys(config: Config) -> dict[str, str]:
    return {a.name: a.rest_key.reveal() for a in config.accounts}


def state(source: ConfigSource) -> dict[str, list[str]]:
    """Each file's problems, as a user reads them in --config.check or the log."""
    return {f.file: [p.text for p in f.problems] for f in source.files}


@pytest.fixture
def shops(tmp_path: Path) -> Path:
    """A main file with one account of its own, and an account file with two shops."""
    main_file(tmp_path, [{"name": "main-a", "rest_key_env": "KEY_MAIN"}])
    write(tmp_path / "accounts.d" / "keys" / "x.key", "key-x-1\n")
    write(
        tmp_path / "accounts.d" / "shops.yaml",
        [
            {"name": "shop-x", "rest_key_file": "keys/x.key", "currency": "EUR"},
            {"name": "shop-y", "rest_key_env": "KEY_Y", "labels": {"team": "emea"}},
        ],
    )
    return tmp_path


# -- loading ------------------------------------------------------------------------------------


def test_account_files_join_the_main_accounts_with_keys_relative_to_their_folder(
    shops: Path,
) -> None:
    source = ConfigSource(shops / "config.yaml", env=ENV)
    config = source.load()
    assert names(config) == ["main-a", "shop-x", "shop-y"]
    assert keys(config) == {"main-a": "key-main", "shop-x": "key-x-1", "shop-y": "key-y"}
    x = config.accounts[1]
    assert x.key_source == f"file {shops / 'accounts.d' / 'keys' / 'x.key'}"
    assert x.currency == "EUR"
    assert [w.name for w in x.windows] == ["24h"]  # the main file's defaults apply
    assert state(source) == {"accounts.d/shops.yaml": []}


def test_the_main_file_may_leave_every_account_to_account_files(tmp_path: Path) -> None:
    main_file(tmp_path)
    config = ConfigSource(tmp_path / "config.yaml", env=ENV).load()
    assert config.accounts == ()  # no file yet: nothing to poll, as file_sd with no targets
    with pytest.raises(ConfigError) as caught:
        parse_config({"windows": ["24h"]}, env=ENV)
    assert caught.value.problems == [
        "accounts: must be a non-empty list of accounts (or give account_files)"
    ]


@pytest.mark.parametrize(
    ("currency", "problem"),
    [
        ("eur", "got 'eur'"),
        ("EURO", "got 'EURO'"),
        (978, "got int"),
    ],
)
def test_currency_is_an_iso_4217_code(currency: object, problem: str) -> None:
    data = {"accounts": [{"name": "shop-g", "rest_key": "k", "currency": currency}]}
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    assert caught.value.problems == [
        "accounts[0] (shop-g).currency: must be an ISO 4217 code of three capital letters "
        f"(RON, EUR, HUF), {problem}"
    ]


def test_a_name_used_twice_names_both_places(shops: Path) -> None:
    write(
        shops / "accounts.d" / "x-more.yaml",
        [{"name": "main-a", "rest_key": "k1"}, {"name": "shop-y", "rest_key": "k2"}],
    )
    source = ConfigSource(shops / "config.yaml", env=ENV)
    config = source.load()
    assert names(config) == ["main-a", "shop-x", "shop-y"]
    assert keys(config)["shop-y"] == "key-y"  # the first file in glob order keeps it
    assert state(source)["accounts.d/x-more.yaml"] == [
        f"accounts.d/x-more.yaml[0] (main-a).name: 'main-a' is already used by "
        f"accounts[0] (main-a) in {shops / 'config.yaml'}",
        "accounts.d/x-more.yaml[1] (shop-y).name: 'shop-y' is already used by "
        "accounts.d/shops.yaml[1] (shop-y)",
    ]
    # The account keeps its file: a new file sorting first does not take the name over.
    write(shops / "accounts.d" / "a-first.yaml", [{"name": "shop-x", "rest_key": "k3"}])
    assert keys(source.load())["shop-x"] == "key-x-1"
    assert state(source)["accounts.d/a-first.yaml"] == [
        "accounts.d/a-first.yaml[0] (shop-x).name: 'shop-x' is already used by "
        "accounts.d/shops.yaml[0] (shop-x)"
    ]


# -- isolation ----------------------------------------------------------------------------------


def test_a_bad_account_keeps_its_last_good_version_and_a_new_bad_one_stays_out(
    shops: Path,
) -> None:
    source = ConfigSource(shops / "config.yaml", env=ENV)
    source.load()
    (shops / "accounts.d" / "keys" / "x.key").unlink()
    write(
        shops / "accounts.d" / "shops.yaml",
        [
            {"name": "shop-x", "rest_key_file": "keys/x.key", "currency": "EUR"},
            {"name": "shop-y", "rest_key_env": "KEY_Y", "labels": {"team": "apac"}},
            {"name": "shop-z", "rest_key_env": "EXPORTED_AFTER_START"},
            {"name": "shop-w", "rest_key": "k", "interval": "1s"},
        ],
    )
    config = source.load()
    assert names(config) == ["main-a", "shop-x", "shop-y"]
    assert keys(config)["shop-x"] == "key-x-1"  # the last good version, its key included
    assert config.accounts[2].labels == {"team": "apac"}  # a good change applies
    missing = shops / "accounts.d" / "keys" / "x.key"
    assert state(source) == {
        "accounts.d/shops.yaml": [
            f"accounts.d/shops.yaml[0] (shop-x).rest_key_file: cannot read {missing}: "
            "No such file or directory",
            "accounts.d/shops.yaml[2] (shop-z).rest_key_env: environment variable "
            "EXPORTED_AFTER_START is not set",
            "accounts.d/shops.yaml[3] (shop-w).interval: must be at least 30s, got 1s",
        ]
    }
    write(missing, "key-x-2")  # fixed: the new key applies
    assert keys(source.load())["shop-x"] == "key-x-2"
    assert len(state(source)["accounts.d/shops.yaml"]) == 2


def test_an_unreadable_file_keeps_every_account_it_gave_and_a_removed_one_takes_them(
    shops: Path,
) -> None:
    source = ConfigSource(shops / "config.yaml", env=ENV)
    source.load()
    for broken, problem in [
        ("- name: shop-x\n  rest_key: [\n", "line 3, column 1: expected the node content"),
        ("name: shop-x\n", "must be a YAML list of accounts (as under accounts:)"),
    ]:
        write(shops / "accounts.d" / "shops.yaml", broken)
        assert names(source.load()) == ["main-a", "shop-x", "shop-y"]
        [text] = state(source)["accounts.d/shops.yaml"]
        assert text.startswith("accounts.d/shops.yaml: ") and problem in text
    (shops / "accounts.d" / "shops.yaml").unlink()
    assert names(source.load()) == ["main-a"]
    assert state(source) == {}


def test_a_literal_key_in_an_account_file_others_can_read_is_warned_about(shops: Path) -> None:
    shop_file = shops / "accounts.d" / "literal.yaml"
    write(shop_file, [{"name": "shop-l", "rest_key": "key-l"}])
    shop_file.chmod(0o644)
    config = ConfigSource(shops / "config.yaml", env=ENV).load()
    assert config.warnings == (
        f"{shop_file} is readable by other users (mode 644) and holds a literal rest_key for "
        f"account(s) shop-l: use rest_key_env or rest_key_file, or chmod 600 {shop_file}",
    )
    shop_file.chmod(0o600)
    assert ConfigSource(shops / "config.yaml", env=ENV).load().warnings == ()


def test_a_bad_main_file_is_refused_whole_and_changes_nothing(shops: Path) -> None:
    source = ConfigSource(shops / "config.yaml", env=ENV)
    source.load()
    main_file(shops, [{"name": "main-a", "rest_key_env": "NOT_SET"}])
    with pytest.raises(ConfigError, match=r"accounts\[0\] \(main-a\)\.rest_key_env"):
        source.load()
    assert state(source) == {"accounts.d/shops.yaml": []}


def test_each_problem_is_logged_once_naming_file_account_and_problem(
    shops: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = ConfigSource(shops / "config.yaml", env=ENV)
    bad = [{"name": "shop-x", "rest_key_file": "keys/none.key"}]
    write(shops / "accounts.d" / "shops.yaml", bad)
    with caplog.at_level(logging.INFO, logger="exporter.accountfiles"):
        source.load()
        source.load()
        source.load()
        write(shops / "accounts.d" / "shops.yaml", [{"name": "shop-x", "rest_key": "k"}])
        source.load()
        source.load()
    records = [r for r in caplog.records if r.name == "exporter.accountfiles"]
    assert [r.getMessage() for r in records] == [
        "account file problem; its other accounts apply",
        "account file valid again",
    ]
    problem = records[0].__dict__
    assert (problem["file"], problem["account"]) == ("accounts.d/shops.yaml", "shop-x")
    assert "keys/none.key" in problem["problem"]


def test_config_check_lists_each_file_and_its_accounts_and_fails_on_a_problem(
    shops: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    args = ["--config.check", f"--config.file={shops / 'config.yaml'}"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "account files: 1 matching accounts.d/*.yaml" in out
    assert "  accounts.d/shops.yaml: valid; shop-x, shop-y" in out
    write(shops / "accounts.d" / "bad.yaml", [{"name": "shop-q"}])
    assert cli.main(args) == 2
    out = capsys.readouterr().out
    assert "  accounts.d/bad.yaml: 1 problem(s); no accounts" in out
    assert "    - accounts.d/bad.yaml[0] (shop-q): needs exactly one of" in out
    assert "account files with problems: accounts.d/bad.yaml" in out


# -- change detection ---------------------------------------------------------------------------


def test_changes_are_seen_by_content(shops: Path) -> None:
    source = ConfigSource(shops / "config.yaml", env=ENV)
    source.load()
    assert not source.changed()
    shop_file = shops / "accounts.d" / "shops.yaml"

    # Rewritten in place, same size, same mtime: only the content tells.
    stat = shop_file.stat()
    text = shop_file.read_text()
    shop_file.write_text(text.replace("emea", "apac"))
    os.utime(shop_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert source.changed()
    source.load()
    assert not source.changed()

    write(shops / "accounts.d" / "keys" / "x.key", "key-x-2")  # a rest_key_file
    assert source.changed()
    source.load()
    write(shops / "accounts.d" / "new.yaml", [])  # a file the glob now matches
    assert source.changed()
    source.load()
    (shops / "accounts.d" / "new.yaml").unlink()  # one it no longer matches
    assert source.changed()
    source.load()
    write(shops / "accounts.d" / "notes.txt", "not an account file")
    write(shops / "accounts.d" / "shops.yaml.tmp", "an editor's temporary file")
    assert not source.changed()
    main_file(shops, [{"name": "main-a", "rest_key_env": "KEY_MAIN"}], polling={"jitter": "1s"})
    assert source.changed()


def test_old_files_are_checked_by_metadata_and_their_content_decides(
    shops: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files last written long ago (here: any file, the racy window set to nothing) keep their
    digest while their metadata stays; a touch is no change, an in-place rewrite that keeps
    the size and puts the mtime back is one (the ctime moved)."""
    monkeypatch.setattr(accountfiles, "_RACY_NS", -1)
    source = ConfigSource(shops / "config.yaml", env=ENV)
    source.load()
    key = shops / "accounts.d" / "keys" / "x.key"
    os.utime(key, ns=(1, 10**18))  # touched: new metadata, same content
    assert not source.changed()
    stat = key.stat()
    key.write_text("key-x-9\n")  # same size
    os.utime(key, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert source.changed()
    assert keys(source.load())["shop-x"] == "key-x-9"


def test_a_key_file_a_bad_account_waits_for_is_watched(shops: Path) -> None:
    source = ConfigSource(shops / "config.yaml", env=ENV)
    write(
        shops / "accounts.d" / "shops.yaml",
        [{"name": "shop-v", "rest_key_file": "keys/v.key"}],
    )
    assert names(source.load()) == ["main-a"]
    assert not source.changed()
    write(shops / "accounts.d" / "keys" / "v.key", "key-v")  # the vault agent delivers it
    assert source.changed()
    assert keys(source.load())["shop-v"] == "key-v"


class SecretVolume:
    """A folder laid out and updated as the kubelet does for a Secret or ConfigMap volume."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.version = 0
        folder.mkdir(parents=True)

    def publish(self, files: dict[str, str]) -> None:
        """A new timestamped folder, ``..data`` swapped to it by a rename, the old one removed."""
        self.version += 1
        old = os.readlink(self.folder / "..data") if (self.folder / "..data").exists() else None
        stamp = f"..2026_12_06_20_00_{self.version:02d}.{self.version:09d}"
        (self.folder / stamp).mkdir()
        for name, text in files.items():
            (self.folder / stamp / name).write_text(text)
        tmp = self.folder / "..data_tmp"
        tmp.symlink_to(stamp)
        tmp.replace(self.folder / "..data")  # rename(2): the swap is atomic
        for name in files:
            link = self.folder / name
            if not link.is_symlink():
                link.symlink_to(Path("..data") / name)
        for link in self.folder.iterdir():
            if link.is_symlink() and not link.name.startswith("..") and link.name not in files:
                link.unlink()
        if old is not None:
            for path in (self.folder / old).iterdir():
                path.unlink()
            (self.folder / old).rmdir()


def test_a_kubernetes_secret_volume_update_is_seen(tmp_path: Path) -> None:
    main_file(tmp_path, account_files=["secret/*.yaml"])
    volume = SecretVolume(tmp_path / "secret")
    shop = {"name": "shop-k", "rest_key_file": "shop-k.key", "currency": "HUF"}
    volume.publish({"shops.yaml": yaml.safe_dump([shop]), "shop-k.key": "key-k-1"})
    assert (tmp_path / "secret" / "shops.yaml").is_symlink()
    source = ConfigSource(tmp_path / "config.yaml", env=ENV)
    assert keys(source.load()) == {"shop-k": "key-k-1"}
    assert [f.file for f in source.files] == ["secret/shops.yaml"]  # never ..data/…
    assert not source.changed()

    volume.publish({"shops.yaml": yaml.safe_dump([shop]), "shop-k.key": "key-k-2"})
    assert source.changed()
    assert keys(source.load()) == {"shop-k": "key-k-2"}

    added = {"name": "shop-l", "rest_key_file": "shop-l.key"}
    volume.publish(
        {
            "shops.yaml": yaml.safe_dump([shop]),
            "more.yaml": yaml.safe_dump([added]),
            "shop-k.key": "key-k-2",
            "shop-l.key": "key-l",
        }
    )
    assert source.changed()
    assert keys(source.load()) == {"shop-l": "key-l", "shop-k": "key-k-2"}
    volume.publish({"more.yaml": yaml.safe_dump([added]), "shop-l.key": "key-l"})
    assert source.changed()
    assert keys(source.load()) == {"shop-l": "key-l"}
    assert not source.changed()


@pytest.mark.parametrize(
    ("flag", "seconds"), [(None, 10.0), ("0s", 0.0), ("250ms", 0.25), ("1m", 60.0)]
)
def test_the_auto_reload_interval_flag(flag: str | None, seconds: float) -> None:
    argv = [] if flag is None else [f"--config.auto-reload-interval={flag}"]
    assert cli.parse_options(argv).auto_reload_interval == seconds


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("10", "'10' is not a duration"),
        ("50ms", "must be 0 (off) or at least 100ms"),
    ],
)
def test_a_bad_auto_reload_interval_is_a_usage_error(
    flag: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main([f"--config.auto-reload-interval={flag}"]) == 2
    assert message in capsys.readouterr().err
