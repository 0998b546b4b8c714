"""What watching account files costs: a first load, a check when nothing changed, and a check
plus reload after one file changed, for folders of account files with one key file per account.

    python -m bench.accountfiles [--shape FILESxACCOUNTS ...]

Each check runs on the event loop of the daemon every --config.auto-reload-interval, so its
time is time the loop spends away from polls and scrapes. Files are written, then left alone
for a little over 2 s, as real ones are: a file changed in the last 2 s is always hashed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from exporter.accountfiles import ConfigSource

_SETTLE_SECONDS = 2.5  # past the window in which a file's digest is never reused


def _folder(root: Path, files: int, per_file: int) -> Path:
    (root / "accounts.d" / "keys").mkdir(parents=True)
    config = {"windows": ["24h"], "account_files": ["accounts.d/*.yaml"]}
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    for f in range(files):
        accounts = []
        for a in range(per_file):
            name = f"shop-{f}-{a}"
            (root / "accounts.d" / "keys" / f"{name}.key").write_text("k" * 32)
            accounts.append({"name": name, "rest_key_file": f"keys/{name}.key", "currency": "EUR"})
        (root / "accounts.d" / f"shops-{f:05d}.yaml").write_text(yaml.safe_dump(accounts))
    return root / "config.yaml"


def measure(files: int, per_file: int, checks: int = 20) -> dict[str, float]:
    """Milliseconds: first load, median check with nothing changed, check + reload of one."""
    with tempfile.TemporaryDirectory() as tmp:
        config = _folder(Path(tmp), files, per_file)
        time.sleep(_SETTLE_SECONDS)
        source = ConfigSource(config)
        started = time.perf_counter()
        loaded = source.load()
        first = time.perf_counter() - started
        assert len(loaded.accounts) == files * per_file
        idle = []
        for _ in range(checks):
            started = time.perf_counter()
            assert not source.changed()
            idle.append(time.perf_counter() - started)
        changed = Path(tmp) / "accounts.d" / "shops-00000.yaml"
        changed.write_text(changed.read_text().replace("EUR", "RON"))
        started = time.perf_counter()
        assert source.changed()
        source.load()
        again = time.perf_counter() - started
    return {
        "first_load_ms": first * 1000,
        "idle_check_ms": statistics.median(idle) * 1000,
        "check_and_reload_ms": again * 1000,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.accountfiles", description=__doc__)
    parser.add_argument(
        "--shape",
        action="append",
        metavar="FILESxACCOUNTS",
        help="account files x accounts per file (default: 100x10, 1000x1, 1000x10)",
    )
    args = parser.parse_args(argv)
    shapes = args.shape or ["100x10", "1000x1", "1000x10"]
    print(
        "| files x accounts | first load | check, nothing changed | check + reload, one changed |"
    )
    print("| --- | --- | --- | --- |")
    for shape in shapes:
        files, per_file = (int(n) for n in shape.split("x"))
        got = measure(files, per_file)
        print(
            f"| {files} x {per_file} | {got['first_load_ms']:.0f} ms | "
            f"{got['idle_check_ms']:.1f} ms | {got['check_and_reload_ms']:.0f} ms |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
