"""Which replica polls which account: a stable, even split that moves few accounts on resize.

We use jump consistent hashing (Lamping & Veach, 2014) over a SHA-256 of the account name. Like
``hash(name) % count`` it is stable across processes and even, but when the shard count grows
from N to N+1 only about 1/(N+1) of the accounts move (all to the new shard), where a plain
modulo would move about N/(N+1) of them.
"""

from __future__ import annotations

import hashlib
import re


def _key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big")


def shard_of(name: str, count: int) -> int:
    """The shard (0 .. count-1) that polls account ``name``."""
    if count < 1:
        raise ValueError("shard count must be at least 1")
    key = _key(name)
    bucket, jump = -1, 0
    while jump < count:
        bucket = jump
        key = (key * 2862933555777941757 + 1) & 0xFFFFFFFFFFFFFFFF
        jump = int((bucket + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return bucket


def parse_shard_index(text: str) -> int:
    """An index given as ``3`` or as a StatefulSet pod name such as ``exporter-3``."""
    match = re.fullmatch(r"(?:.*-)?(\d+)", text.strip())
    if match is None:
        raise ValueError(f"{text!r} is neither a shard index nor a pod name ending in -N")
    return int(match.group(1))
