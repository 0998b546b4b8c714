"""What the daemon and ``backfill`` share on the command line: common flags, usage errors,
exit codes, and which accounts a run covers (shard, ``--account``)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import replace

from exporter import logs
from exporter.config import Config
from exporter.sharding import parse_shard_index, shard_of

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A bad flag value: reported in one line, exit code 2."""


def exit_usage(prog: str, message: object) -> int:
    """Print ``prog: message`` on standard error (no traceback) and return exit code 2."""
    print(f"{prog}: {message}", file=sys.stderr)
    return EXIT_USAGE


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    """The flags every command shares: config file, logging, sharding."""
    env = os.environ
    add = parser.add_argument
    add(
        "--config.file",
        dest="config_file",
        default="config.yaml",
        metavar="PATH",
        help="configuration file (default: %(default)s)",
    )
    add(
        "--log.level",
        dest="log_level",
        default="info",
        choices=list(logs.LEVELS),
        help="minimum level of log messages (default: %(default)s)",
    )
    add(
        "--log.format",
        dest="log_format",
        default="logfmt",
        choices=["logfmt", "json"],
        help="log line format (default: %(default)s)",
    )
    add(
        "--shard.count",
        dest="shard_count",
        default=env.get("RETARGETING_EXPORTER_SHARD_COUNT", "1"),
        metavar="N",
        help="split the accounts over N replicas (env RETARGETING_EXPORTER_SHARD_COUNT)",
    )
    add(
        "--shard.index",
        dest="shard_index",
        default=env.get("RETARGETING_EXPORTER_SHARD_INDEX", "0"),
        metavar="I",
        help="this replica's shard, 0..N-1, or a pod name ending in -I "
        "(env RETARGETING_EXPORTER_SHARD_INDEX)",
    )


def parse_shard_flags(args: argparse.Namespace) -> tuple[int, int]:
    """``(count, index)`` from ``--shard.count``/``--shard.index``; ``UsageError`` if invalid."""
    try:
        count = int(args.shard_count)
        index = parse_shard_index(str(args.shard_index))
    except ValueError as exc:
        raise UsageError(f"--shard.count/--shard.index: {exc}") from None
    if count < 1 or not 0 <= index < count:
        raise UsageError(
            f"--shard.index must be from 0 to --shard.count - 1 (got index {index}, count {count})"
        )
    return count, index


def select_shard(config: Config, count: int, index: int) -> Config:
    """Keep only the accounts this replica polls."""
    if count == 1:
        return config
    accounts = tuple(a for a in config.accounts if shard_of(a.name, count) == index)
    return replace(config, accounts=accounts)


def select_accounts(config: Config, names: Sequence[str], count: int, index: int) -> Config:
    """The accounts of this shard, narrowed to ``names`` if given; ``UsageError`` if unknown."""
    if names:
        known = {a.name for a in config.accounts}
        unknown = [name for name in names if name not in known]
        if unknown:
            raise UsageError(f"--account: not in {config.source}: {', '.join(unknown)}")
        config = replace(config, accounts=tuple(a for a in config.accounts if a.name in names))
    return select_shard(config, count, index)
