"""Sharding: every account is polled by exactly one replica, the split is even and stable, and
growing the replica count moves as few accounts as the scheme promises (docs/deployment.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest

from exporter.config import parse_config
from exporter.flags import select_shard
from exporter.sharding import parse_shard_index, shard_of


def account_names(count: int) -> list[str]:
    """Names shaped like an agency's real ones: shared prefixes, numbers, a few odd characters."""
    shapes = ("shop-{}", "client_{:05d}", "agency/eu/{}", "Magazin {}", "ß-store.{}")
    return [shapes[i % len(shapes)].format(i) for i in range(count)]


@pytest.mark.parametrize("shards", [2, 3, 4, 7])
def test_every_account_on_exactly_one_shard_evenly(shards: int) -> None:
    names = account_names(10_000)
    assignment = {name: shard_of(name, shards) for name in names}
    assert set(assignment.values()) == set(range(shards))
    sizes = Counter(assignment.values())
    ideal = len(names) / shards
    for shard, size in sorted(sizes.items()):
        assert abs(size - ideal) <= 0.10 * ideal, f"shard {shard}: {size} accounts, ideal {ideal}"


def test_replicas_partition_the_configured_accounts() -> None:
    """What the replicas really poll (flags.select_shard): disjoint, and together every account."""
    names = account_names(2_000)
    config = parse_config(
        {"accounts": [{"name": n, "rest_key_env": "KEY"} for n in names]}, env={"KEY": "k"}
    )
    shards = 4
    polled = [
        {a.name for a in select_shard(config, shards, index).accounts} for index in range(shards)
    ]
    assert sum(len(p) for p in polled) == len(names)
    assert set().union(*polled) == set(names)


def test_one_shard_polls_everything() -> None:
    assert {shard_of(name, 1) for name in account_names(1_000)} == {0}


def test_stable_across_processes() -> None:
    """No per-process hash seed: a restarted replica must keep its accounts."""
    names = account_names(200)
    here = [shard_of(n, 5) for n in names]
    code = (
        "import json, sys; from exporter.sharding import shard_of; "
        "print(json.dumps([shard_of(n, 5) for n in json.load(sys.stdin)]))"
    )
    for seed in ("1", "2"):
        result = subprocess.run(
            [sys.executable, "-c", code],
            input=json.dumps(names),
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
            check=True,
            timeout=60,
        )
        assert json.loads(result.stdout) == here


def test_known_assignments_are_frozen() -> None:
    """Changing the hash would move accounts between replicas on upgrade: make it a visible diff."""
    assert [shard_of("shop-a", c) for c in (1, 2, 3, 4, 8)] == [0, 0, 0, 0, 6]
    assert [shard_of("магазин", c) for c in (1, 2, 3, 4, 8)] == [0, 1, 2, 2, 6]


@pytest.mark.parametrize("shards", [1, 2, 4, 9])
def test_adding_a_shard_moves_only_its_share(shards: int) -> None:
    """N -> N+1 moves about 1/(N+1) of the accounts, all to the new shard (modulo: N/(N+1))."""
    names = account_names(10_000)
    moved = [n for n in names if shard_of(n, shards) != shard_of(n, shards + 1)]
    expected = len(names) / (shards + 1)
    assert abs(len(moved) - expected) <= 0.10 * expected
    assert {shard_of(n, shards + 1) for n in moved} == {shards}


@pytest.mark.parametrize(
    ("text", "index"),
    [
        ("0", 0),
        ("3", 3),
        ("retargeting-exporter-3", 3),
        ("prod-retargeting-exporter-12", 12),
        ("shard-7-retargeting-exporter-0", 0),
    ],
)
def test_shard_index_from_number_or_pod_name(text: str, index: int) -> None:
    assert parse_shard_index(text) == index


@pytest.mark.parametrize("text", ["", "exporter", "exporter-", "-1x"])
def test_bad_shard_index_is_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="pod name ending in -N"):
        parse_shard_index(text)


def test_bad_count_is_rejected() -> None:
    with pytest.raises(ValueError):
        shard_of("shop-a", 0)
