"""The daemon runs the garbage collector in small steps (exporter/gcpace.py, docs/benchmarks.md).

Each test runs in a child process: freezing and disabling the collector are process-wide.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

from tooling import REPO


def in_child(code: str) -> Any:
    """Run ``code`` in a fresh interpreter; it prints one JSON value, returned here."""
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return json.loads(out)


def test_pacer_owns_the_collector_while_it_runs_and_gives_it_back() -> None:
    result = in_child(
        """
        import asyncio, gc, json
        from exporter.gcpace import GcPacer

        async def main():
            pacer = GcPacer(period=0.02, middle_every=4)
            pacer.freeze()
            task = asyncio.create_task(pacer.run())
            await asyncio.sleep(0.5)
            during = (gc.isenabled(), gc.get_freeze_count())
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return during, gc.isenabled(), pacer.collections

        (enabled, frozen), after, collections = asyncio.run(main())
        print(json.dumps([enabled, frozen, after, collections]))
        """
    )
    enabled, frozen, after, (young, middle, _) = result
    assert not enabled and after  # off while the pacer runs, on again once it stops
    assert frozen > 10_000  # the modules, classes and functions loaded at start-up
    assert young >= 10 and middle >= 2 and young >= 2 * middle


def test_a_young_step_frees_cyclic_garbage() -> None:
    freed = in_child(
        """
        import gc, json, weakref
        from exporter.gcpace import GcPacer

        gc.disable()
        class Node: pass
        a, b = Node(), Node()
        a.other, b.other = b, a
        alive = weakref.ref(a)
        del a, b
        before = alive() is not None
        generation = GcPacer(middle_every=1000).step()
        print(json.dumps([before, alive() is None, generation]))
        """
    )
    assert freed == [True, True, 0]


def test_full_collection_only_once_the_oldest_generation_grew_by_a_quarter() -> None:
    steps = in_child(
        """
        import gc, json
        from exporter.gcpace import GcPacer

        gc.disable()
        gc.collect()
        gc.freeze()
        pacer = GcPacer(middle_every=1)
        steps = [pacer.step()]          # nothing in the oldest generation yet: middle only
        kept = [[] for _ in range(5000)]
        steps.append(pacer.step())      # the lists survive a middle collection: now the oldest
        steps.append(pacer.step())      # it grew from nothing to 5,000: full
        steps.append(pacer.step())      # unchanged since: middle
        kept += [[] for _ in range(1000)]
        steps += [pacer.step(), pacer.step()]  # 6,000 of 5,000: under a quarter more: middle
        kept += [[] for _ in range(1000)]
        steps += [pacer.step(), pacer.step()]  # 7,000 of 5,000: full
        print(json.dumps(steps + pacer.collections))
        """
    )
    assert steps[:8] == [1, 1, 2, 1, 1, 1, 1, 2]
    assert steps[8:] == [0, 6, 2]
